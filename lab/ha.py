"""``lab/lab demo --ha``: the pair's failover scenario, as a table like ``demo``.

up --ha (fault state on lb1), the fault, `pulumi up` with the real engine
(its event log: both hosts' steps at once), verify; then the VIP holder
is killed (its qemu, a power cut) while host01 asks VIP:nodePort every 0.1 s
and downloads /lab-big at a limited rate; then the killed guest boots again.
Every row is measured; a row whose part of keepsource is not there yet (the
pair's commands, VRRP) fails, it is never skipped or faked. Exit 0 only when
every row ran and held.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from keepsource import facts
from keepsource.host import lb_host
from keepsource.render import gateway
from keepsource.stackfile import PROJECT_ROOT
from keepsource.udp_probe import udp_send_command
from keepsource.verify import runner_for
from lab import forge, guest, hosts, layout, paths, run
from lab.layout import PAIR

#: The probe's pace and the time one request may take during the failover.
INTERVAL = 0.1
REQUEST_TIMEOUT = 0.5
#: The long transfer: 64 MiB at 6 MiB/s lasts about 11 s.
BIG_RATE = "6M"
RESUME_WITHIN = 1.0
SETTLE_AFTER_START = 5.0  # seconds the restarted guest gets to (not) take a VIP back

Row = tuple[str, bool, str]


answers = run.answers


def gets_page(ns: str, url: str) -> tuple[bool, str]:
    """The nginx page itself (a 503 from the seed's HAProxy is no page)."""
    rc, out = run.curl(ns, url)
    status = out.strip().splitlines()[-1] if out.strip() else ""
    return rc == 0 and "Welcome to nginx" in out, f"curl exit {rc} {status}"


def resume_after(probe: dict[str, Any], killed_at: float) -> float | None:
    """Seconds from the kill to the first answered request after it; None when
    no request was answered after the kill. ``killed_at``: time.monotonic()
    (CLOCK_MONOTONIC, the probe's clock too). Without a gap longer than two
    intervals around the kill this is that bound, 2 x INTERVAL."""
    start = float(probe["start"])
    if start + float(probe["last_ok"]) < killed_at:
        return None
    for begin, end in probe.get("gaps", []):
        if start + begin <= killed_at <= start + end:
            return float(start + end - killed_at)
    return 2 * INTERVAL


def lb2_rows(the_lab: run.Lab) -> list[Row]:
    """The other guests of the fault state: only their own addresses, no HAProxy."""
    rows = []
    for g in the_lab.guests[1:]:
        got = run.addresses(g)
        own = {layout.EXT_IF: list(g.external), layout.INT_IF: list(g.internal)}
        haproxy = facts.unit_active("haproxy")
        state = haproxy.parse(guest.ssh(haproxy.command, lb=g).stdout)
        ok = got == own and state != "active"
        rows.append(
            (f"fault: {g.name} has only its own addresses, no HAProxy", ok, f"{got}, {state}")
        )
    return rows


#: How long the rogue advertises (many advert intervals of the pair's).
ROGUE_S = 4.0


def rogue_advert(the_lab: run.Lab, client: Any) -> tuple[bool, str]:
    """A client claims the VIP's VRRP router id: Debian's keepalived in the
    client's namespace, MASTER at priority 254, adverts unicast to every LB's
    own address for ROGUE_S seconds. The pair (``check_unicast_src``) must
    keep the VIP where it was; the rogue must have advertised (its log says
    it entered MASTER state)."""
    s = the_lab.settings
    before = run.vip_holders(the_lab)
    d = paths.RUN / "rogue"
    d.mkdir(parents=True, exist_ok=True)
    peers = "\n".join(f"        {g.own_external}" for g in the_lab.guests)
    prefix = s.network.external_subnet.prefixlen
    conf = d / "keepalived.conf"
    conf.write_text(
        # As the pair's own adverts: VRRP 3 (sub-second intervals), the
        # same address with the same prefix; only the source is wrong.
        "global_defs {\n    router_id rogue\n    vrrp_version 3\n}\n"
        "vrrp_instance ROGUE {\n    state MASTER\n    interface eth0\n"
        f"    virtual_router_id {s.lb.vrrp.virtual_router_id}\n    priority 254\n"
        f"    advert_int {s.lb.vrrp.advert_interval:g}\n"
        f"    unicast_src_ip {client.address}\n    unicast_peer {{\n{peers}\n    }}\n"
        f"    virtual_ipaddress {{\n        {s.network.vip}/{prefix} dev eth0\n    }}\n}}\n"
    )
    pids = ["-p", str(d / "main.pid"), "-r", str(d / "vrrp.pid"), "-c", str(d / "check.pid")]
    argv = ["ip", "netns", "exec", client.netns, "keepalived", "-n", "-l", "-P", "-f", str(conf)]
    argv += pids
    with open(d / "log", "w") as log_file:
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            time.sleep(ROGUE_S)
            during = run.vip_holders(the_lab)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            # keepalived removes its VIP when it stops; never leave it behind.
            subprocess.run(
                [
                    "ip",
                    "-n",
                    client.netns,
                    "addr",
                    "del",
                    f"{s.network.vip}/{prefix}",
                    "dev",
                    "eth0",
                ],
                capture_output=True,
                check=False,
                timeout=10,
            )
    advertised = "Entering MASTER STATE" in (d / "log").read_text(errors="replace")
    after = run.vip_holders(the_lab)
    ok = advertised and len(before) == 1 and during == before and after == before
    return ok, (
        f"rogue advertised: {advertised}; VIP on {before} before, {during} during, {after} after"
    )


#: How long the forged adverts of a node run (the issue's 10 s).
FORGE_S = 10.0


def _floating(the_lab: run.Lab, skip: str | None = None) -> dict[str, tuple[bool, bool]]:
    """Each guest but ``skip``: (holds the VIP, holds the gateway address)."""
    vip, gw = str(the_lab.settings.network.vip), str(the_lab.settings.network.lb_internal_address)
    held = {}
    for g in the_lab.guests:
        if g.name == skip:
            continue
        a = run.addresses(g)
        held[g.name] = (
            any(x.split("/")[0] == vip for x in a[layout.EXT_IF]),
            any(x.split("/")[0] == gw for x in a[layout.INT_IF]),
        )
    return held


def input_drops(g: layout.Guest) -> dict[str, int]:
    """Packets the guest's KEEPSOURCE-INPUT chain dropped: VRRP and IPVS sync
    (`iptables -n` prints protocols as numbers on the guest: 112, 17)."""
    out = guest.ssh(f"iptables -L {gateway.INPUT_CHAIN} -v -n -x", lb=g, timeout=30).stdout
    found = {"vrrp": 0, "sync": 0}
    for line in out.splitlines():
        f = line.split()
        if len(f) < 4 or f[2] != "DROP" or not f[0].isdigit():
            continue
        if f[3] in ("vrrp", "112"):
            found["vrrp"] += int(f[0])
        elif f[3] in ("udp", "17") and f"dpt:{gateway.SYNC_PORT}" in line:
            found["sync"] += int(f[0])
    return found


def _forge(ns: str, *args: str, timeout: float) -> tuple[int, str]:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "lab.forge", *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    return done.returncode, (done.stdout + done.stderr).strip()


def forged_adverts(the_lab: run.Lab, node: Any, client: Any, page: str) -> tuple[bool, str]:
    """A node claims the nodes' gateway (its VRRP id: the pair's sync group
    would take the VIP along) at priority 254, adverts every 0.1 s to each
    LB's own internal address for FORGE_S seconds, while ``client`` asks
    ``page`` every 0.1 s. Nothing may move and no request fail; each LB's
    chain must have dropped what reached it."""
    s = the_lab.settings
    before, drops = _floating(the_lab), {g.name: input_drops(g) for g in the_lab.guests}
    probe = run.Probe(client.netns, page, interval=INTERVAL, limit=60, timeout=REQUEST_TIMEOUT)
    try:
        rc, said = _forge(
            node.netns, "vrrp", "--src", node.address,
            "--dst", ",".join(g.own_internal for g in the_lab.guests),
            "--vrid", str(s.lb.vrrp.virtual_router_id + 1), "--priority", "254",
            "--interval", "0.1", "--seconds", str(FORGE_S),
            "--address", str(s.network.lb_internal_address),
            timeout=FORGE_S + 30,
        )  # fmt: skip
        time.sleep(1.0)  # a takeover would show within a few advert intervals
    finally:
        seen = probe.stop()
    after = _floating(the_lab)
    dropped = sum(input_drops(g)["vrrp"] - drops[g.name]["vrrp"] for g in the_lab.guests)
    sent = int(said) if rc == 0 and said.isdigit() else 0
    ok = rc == 0 and sent > 0 and dropped >= sent and after == before and seen["failures"] == 0
    holder = [n for n, (v, gw) in after.items() if v and gw]
    return ok, (
        f"{node.name} sent {sent} adverts in {FORGE_S:g} s, the LBs dropped {dropped}; "
        f"VIP and gateway on {holder} before and after: {after == before}; "
        f"{seen['failures']} of {seen['requests']} requests from {client.name} failed"
    )


def _conns(g: layout.Guest) -> set[str]:
    """The clients (ip:port) of the guest's IPVS connections."""
    fact = facts.IPVS_CONNECTIONS
    return {c.source for c in fact.parse(guest.ssh(fact.command, lb=g, timeout=30).stdout)}


def forged_sync(the_lab: run.Lab, node: Any) -> tuple[bool, str]:
    """A node sends the backup IPVS sync messages (a connection of a made-up
    client): the backup's connection table must not change. The control: the
    same message from the master's own internal address is taken, so the
    message itself is one the kernel accepts."""
    s = the_lab.settings
    holders = run.vip_holders(the_lab)
    if len(holders) != 1:
        return False, f"VIP on {holders}: no one master"
    master = next(g for g in the_lab.guests if g.name == holders[0])
    backup = next(g for g in the_lab.guests if g.name != master.name)
    fwmark = next(vs.fwmark for vs in lb_host(s).pools if vs.port == s.node_port)
    vip, port = str(s.network.vip), s.node_port
    real = f"{the_lab.workers[-1].address}:{port}"
    forged_client, control_client = "192.168.0.98:40001", "192.168.0.99:40002"
    drops = input_drops(backup)["sync"]
    rc, forged = _forge(
        node.netns, "sync", "--src", node.address, "--syncid", str(s.lb.vrrp.virtual_router_id),
        "--client", forged_client, "--virtual", f"{vip}:{port}", "--real", real,
        "--fwmark", str(fwmark), "--count", "5", timeout=30,
    )  # fmt: skip
    time.sleep(1.0)
    table = _conns(backup)
    dropped = input_drops(backup)["sync"] - drops
    c_host, c_port = control_client.split(":")
    v_host, r_host = vip, real.split(":")[0]
    message = forge.sync_message(
        s.lb.vrrp.virtual_router_id, (c_host, int(c_port)), (v_host, port),
        (r_host, port), fwmark,
    ).hex()  # fmt: skip
    send = udp_send_command(
        master.own_internal, forge.SYNC_GROUP, forge.SYNC_PORT, message,
        count=5, expect_reply=False, timeout=20,
    )  # fmt: skip
    sent = guest.ssh(send, lb=master, timeout=30)
    time.sleep(1.0)
    control = _conns(backup)
    ok = (
        rc == 0
        and forged_client not in table
        and dropped >= 5
        and sent.returncode == 0
        and control_client in control
    )
    return ok, (
        f"{node.name}'s 5 messages (client {forged_client}): dropped {dropped} by "
        f"{backup.name}, in its table: {forged_client in table}; the same from "
        f"{master.name}'s own address (client {control_client}): in the table: "
        f"{control_client in control}"
        + ("" if sent.returncode == 0 else f" (the sender's exit {sent.returncode})")
        + ("" if rc == 0 else f" (forge: {forged[-200:]})")
    )


def demo() -> int:
    """``lab/lab demo --ha``: boot the pair, run :func:`scenario`, take it down."""
    from engine.build import build

    run.require_root()
    build()  # the real engine: built once per machine, cached
    the_lab = run.make_lab(PAIR)
    table = run.Table()

    def do_up() -> tuple[bool, str]:
        from lab import full

        times = full.up(the_lab)
        boot = {k: v for k, v in times.items() if k.startswith("boot_to_ssh_")}
        return True, ", ".join(
            f"{k.removeprefix('boot_to_ssh_')} {v:.1f} s" for k, v in boot.items()
        )

    try:
        if table.phase("up --ha: lb1 and lb2 answer SSH", do_up):
            scenario(the_lab, table)
    finally:
        run.down()
    return table.report("demo --ha", 1 + scenario_rows(the_lab))


def scenario(the_lab: run.Lab, table: run.Table) -> str | None:
    """The pair's rows after ``up --ha`` (the fault state on lb1, booted by
    the caller: the demo, or the lab tests' shared boot): fault, apply,
    verify, failover, restart, verify. Returns the guest it killed (None when
    it got no VIP holder to kill)."""
    return _Failover(the_lab, table).play()


class _Failover:
    """The rows of :func:`scenario`, one method each, in the order they run."""

    def __init__(self, the_lab: run.Lab, table: run.Table) -> None:
        s = the_lab.settings
        self.the_lab, self.table = the_lab, table
        self.vip = str(s.network.vip)
        self.page = f"http://{self.vip}:{s.node_port}/"
        self.api = f"http://{self.vip}:{s.apiserver.port}/"
        self.outside = f"http://{the_lab.repo.address}/Packages"
        self.host01, self.host02 = the_lab.clients[0], the_lab.clients[1]
        self.worker = the_lab.workers[0].netns
        self.applied: dict[str, Any] = {}
        self.failover: dict[str, Any] = {}

    def play(self) -> str | None:
        the_lab, phase, rows = self.the_lab, self.table.phase, self.table.rows
        host01, page = self.host01, self.page
        rows.extend(run.fault(the_lab))
        rows.extend(lb2_rows(the_lab))
        phase(
            "apply: `pulumi up` (the real engine): every command succeeded (both LBs)", self.apply
        )
        phase("apply: the engine ran both LBs' steps at once (its event log)", self.steps_overlap)
        phase("verify after apply (both LBs)", self.verify)
        phase("a rogue VRRP advert from host01 (priority 254) moves no VIP", self.rogue)
        phase(
            f"forged VRRP adverts from worker01 for {FORGE_S:g} s (the gateway's id, priority "
            "254): nothing moves, no request from host01 fails",
            lambda: forged_adverts(the_lab, the_lab.workers[0], host01, page),
        )
        phase(
            "forged IPVS sync from worker01: the backup's connection table unchanged",
            lambda: forged_sync(the_lab, the_lab.workers[0]),
        )
        phase("before: host01 gets the page", lambda: gets_page(host01.netns, page))
        self.side("before")
        phase("failover: requests every 0.1 s resume within 1 s", self.kill_the_holder)
        phase("failover: the open transfer completes intact", self.transfer)
        phase(f"failover: the pod saw {host01.address} only", self.pod_saw)
        phase("failover: host02 still times out", self.host02_times_out)
        phase("failover: VIP and gateway on the other LB", self.vips_moved)
        if the_lab.settings.metrics is not None:
            phase(
                "failover: the exporters, scraped throughout, show the VIP holder change",
                lambda: metrics_saw(the_lab, self.failover),
            )
        self.side("after")
        phase("start the killed LB: nothing breaks, no VIP moves back", self.restart)
        phase("verify after failover (both LBs)", self.verify)
        victim: str | None = self.failover.get("victim")
        return victim

    def apply(self) -> tuple[bool, str]:
        the_lab = self.the_lab
        up = run.apply(the_lab)
        self.applied["up"] = up
        changed = [n for n, st in up.steps.items() if st.report.endswith(": changed")]
        detail = f"pulumi up exit {'0' if up.ok else 'non-zero'} in {up.seconds:.1f} s"
        if not up.ok:
            detail += ": " + " | ".join(up.output.strip().splitlines()[-6:])[-600:]
        return up.ok and len(up.steps) == len(_step_names(the_lab)) * len(the_lab.guests), (
            f"{detail}; {len(up.steps)} steps, {len(changed)} changed"
        )

    def steps_overlap(self) -> tuple[bool, str]:
        up = self.applied.get("up")
        if up is None:
            return False, "no pulumi up ran"
        return run.overlap(up, [g.name for g in self.the_lab.guests], _step_names(self.the_lab))

    def verify(self) -> tuple[bool, str]:
        if run.verify() == 0:
            return True, ""
        # What each host's keepalived said (its VRRP transitions), and what
        # reached it (the VRRP rules' counters per source, the external link's
        # neighbours and counters), for the log: a split brain seen twice (a
        # host's external instance heard no advert) is not yet understood.
        for g in self.the_lab.guests:
            said = guest.ssh(
                "journalctl -u keepalived -o cat --no-pager | grep -iE "
                "'state|master|backup|unicast|vrrp' | tail -n 25; "
                f"iptables -w -vnxL {gateway.INPUT_CHAIN} 2>&1 | grep -iE 'vrrp|112'; "
                f"ip -4 neigh show dev {layout.EXT_IF}; ip -s link show {layout.EXT_IF}",
                lb=g,
                timeout=30,
            ).stdout
            print(f"--- keepalived on {g.name}:\n{said}", flush=True)
        return False, "see each host's keepalived log above"

    def rogue(self) -> tuple[bool, str]:
        return rogue_advert(self.the_lab, self.host01)

    def side(self, when: str) -> None:
        the_lab, worker, phase = self.the_lab, self.worker, self.table.phase
        outside, api = self.outside, self.api
        phase(
            f"{when}: worker01 -> {the_lab.repo.address} (outside)",
            lambda: answers(worker, outside),
        )
        phase(
            f"{when}: worker01 -> VIP:{the_lab.settings.apiserver.port}",
            lambda: answers(worker, api),
        )

    def kill_the_holder(self) -> tuple[bool, str]:
        the_lab, failover = self.the_lab, self.failover
        holders = run.vip_holders(the_lab)
        if not holders:
            return False, "no guest holds the VIP"
        victim = holders[0]
        failover["victim"] = victim
        failover["log_lines"] = len(run.pod_peers(the_lab))
        probe = run.Probe(
            self.host01.netns, self.page, interval=INTERVAL, limit=120, timeout=REQUEST_TIMEOUT
        )
        watch = VrrpWatch(the_lab) if the_lab.settings.metrics is not None else None
        with ThreadPoolExecutor(2) as pool:
            watching = pool.submit(watch.run) if watch else None
            time.sleep(1.0)
            big = pool.submit(run.download, self.host01.netns, self.page + hosts.BIG_NAME, BIG_RATE)
            time.sleep(2.0)  # the transfer is under way
            killed_at = time.monotonic()
            failover["killed_at"] = killed_at
            run.kill_lb(victim)
            try:
                failover["download"] = big.result(timeout=150)
            finally:
                time.sleep(1.0)
                seen = probe.stop()
                if watch and watching:
                    watch.stop.set()
                    watching.result(timeout=30)
        failover["probe"] = seen
        failover["watch"] = watch
        resumed = resume_after(seen, killed_at)
        ok = resumed is not None and resumed <= RESUME_WITHIN
        shown = "never" if resumed is None else f"{resumed:.2f} s"
        return ok, (
            f"killed {victim}; resumed after {shown}; longest gap {seen['longest_gap_s']} s; "
            f"{seen['failures']} of {seen['requests']} failed"
        )

    def transfer(self) -> tuple[bool, str]:
        d: run.Download | None = self.failover.get("download")
        if d is None:
            return False, "no transfer ran"
        want = hosts.big_sha256()
        ok = d.rc == 0 and d.size == hosts.BIG_SIZE and d.sha256 == want
        return ok, f"curl exit {d.rc}, {d.size} bytes in {d.seconds:.1f} s, sha256 match {ok}"

    def pod_saw(self) -> tuple[bool, str]:
        served = run.pod_peers(self.the_lab)[self.failover.get("log_lines", 0) :]
        peers = sorted({peer for peer, _, _ in served})
        return bool(served) and peers == [self.host01.address], (
            f"{len(served)} requests from {peers}"
        )

    def host02_times_out(self) -> tuple[bool, str]:
        # Only meaningful while the VIP serves: host01 gets the page at the same time.
        served, detail = gets_page(self.host01.netns, self.page)
        rc, _ = run.curl(self.host02.netns, self.page)
        return rc == 28 and served, f"host02: curl exit {rc}; host01: {detail}"

    def vips_moved(self) -> tuple[bool, str]:
        held = _floating(self.the_lab, skip=self.failover.get("victim"))
        on = [name for name, (has_vip, has_gateway) in held.items() if has_vip and has_gateway]
        gw = self.the_lab.settings.network.lb_internal_address
        return len(on) == 1, f"VIP {self.vip} and gateway {gw} on {on or 'no guest'}"

    def restart(self) -> tuple[bool, str]:
        the_lab = self.the_lab
        victim = self.failover.get("victim")
        if victim is None:
            return False, "no guest was killed"
        before = run.vip_holders(the_lab)
        probe = run.Probe(
            self.host01.netns, self.page, interval=INTERVAL, limit=400, timeout=REQUEST_TIMEOUT
        )
        try:
            seconds = run.start_lb(victim)
            time.sleep(SETTLE_AFTER_START)
        finally:
            seen = probe.stop()
        after = run.vip_holders(the_lab)
        ok = after == before and victim not in after and seen["failures"] == 0
        return ok, (
            f"{victim} back after {seconds:.1f} s; VIP on {before} before, {after} after; "
            f"{seen['failures']} of {seen['requests']} requests failed"
        )


# up, then the scenario's: 3 fault rows, lb2, apply, overlap, verify, rogue,
# forged adverts, forged sync, page, 2 before, 5 failover, 2 after, restart, verify
def scenario_rows(the_lab: run.Lab) -> int:
    """Rows of :func:`scenario`: 22, and the exporters' row with keepsource:metrics."""
    return 22 + (the_lab.settings.metrics is not None)


def _step_names(the_lab: run.Lab) -> tuple[str, ...]:
    """The steps the program declares for each host of ``the_lab``'s stack."""
    return tuple(st.name for st in lb_host(the_lab.settings).steps)


def metrics_saw(the_lab: run.Lab, failover: dict[str, Any]) -> tuple[bool, str]:
    """Before the kill the victim's exporter said master and the survivor's
    backup; after it, how soon the survivor's said master."""
    watch: VrrpWatch | None = failover.get("watch")
    victim = failover.get("victim")
    if watch is None or victim is None:
        return False, "no failover ran"
    killed_at = failover["killed_at"]
    (survivor,) = [g.name for g in the_lab.guests if g.name != victim]
    before = {g: watch.last(g, until=killed_at) for g in (victim, survivor)}
    took = watch.first(survivor, "master", after=killed_at)
    ok = before == {victim: "master", survivor: "backup"} and took is not None
    shown = "never" if took is None else f"{took - killed_at:.2f} s after the kill"
    return ok, (
        f"{len(watch.samples)} scrapes from {METRICS_SCRAPER}; before the kill {before}; "
        f"{survivor} master {shown}"
    )


#: The lab's Prometheus stand-in (the stack's metrics.scrapers).
METRICS_SCRAPER = "ks-master"
_STATE = re.compile(r'^keepsource_vrrp_state\{group="KEEPSOURCE",state="(\w+)"\} 1$', re.M)


class VrrpWatch:
    """Each LB host's node exporter scraped from :data:`METRICS_SCRAPER` every
    0.2 s until ``stop`` is set (at most 10 minutes): (time, host, the VRRP
    state its textfile says, or None when the scrape failed)."""

    def __init__(self, the_lab: run.Lab) -> None:
        m = the_lab.settings.metrics
        assert m is not None
        self.urls = {g.name: f"http://{g.own_internal}:{m.port}/metrics" for g in the_lab.guests}
        self.samples: list[tuple[float, str, str | None]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        scrape = runner_for("netns", METRICS_SCRAPER, timeout=5)
        for _ in range(3000):
            if self.stop.is_set():
                break
            for name, url in self.urls.items():
                rc, text = scrape(f"curl -s -m 1 {url}")
                m = _STATE.search(text) if rc == 0 else None
                self.samples.append((time.monotonic(), name, m.group(1) if m else None))
            time.sleep(0.2)

    def last(self, host: str, until: float) -> str | None:
        seen = [s for t, h, s in self.samples if h == host and t <= until]
        return seen[-1] if seen else None

    def first(self, host: str, state: str, after: float) -> float | None:
        return next((t for t, h, s in self.samples if h == host and t > after and s == state), None)
