"""The local lab's pair, for real: two LB guests (lb1, lb2) under QEMU on the
same bridges, booted once for this module (in parallel).

First what the lab itself must do, before any keepsource command runs on the
pair: both guests answer SSH with their own identity; lb1 holds the VIP and
the gateway and serves the seed's fault through HAProxy; lb2 has only its own
addresses and no HAProxy; /lab-big downloads intact; the root namespace never
gets a lab address or route. Then, on the same boot, the scenario of
``lab/lab demo --ha`` (`pulumi up` with the real engine, its steps on both
hosts at once, verify, failover under load, restart), and last
``lab/lab kill-lb`` / ``start-lb`` as a user types them. Needs root and qemu
(run-tests installs them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.lab_ha]

_MISSING = [t for t in ("qemu-system-x86_64", "debootstrap", "ip") if shutil.which(t) is None]
if os.geteuid() != 0 or _MISSING:
    pytest.skip(
        f"lab tests need root and {_MISSING or 'the lab tools'} (run `sudo ./run-tests`)",
        allow_module_level=True,
    )

from keepsource.render.keepalived import HEADER  # noqa: E402
from keepsource.stackfile import PROJECT_ROOT  # noqa: E402
from lab import full, guest, ha, hosts, layout, net, paths, run  # noqa: E402

BOOTS: dict[str, str] = {}  # each guest's boot id when the module booted it


@pytest.fixture(scope="module")
def pair() -> Iterator[run.Lab]:
    from engine.build import build

    build()  # cached: the real engine the scenario's apply runs
    run.down()
    the_lab = run.make_lab(layout.PAIR)
    times = full.up(the_lab)
    print(f"up --ha: {times}")
    BOOTS.update({g.name: guest.boot_id(g) for g in the_lab.guests})
    try:
        yield the_lab
    finally:
        run.down()


def _lab_routes() -> list[str]:
    """Routes and addresses of the root namespace inside the lab's subnets."""
    out = subprocess.run(
        ["ip", "-j", "-4", "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    dsts = [r.get("dst", "") for r in json.loads(out or "[]")]
    return [d for d in dsts if d.startswith(("192.168.0.", "172.16.0."))]


def test_both_guests_answer_ssh_with_their_own_identity(pair: run.Lab) -> None:
    for g in pair.guests:
        done = guest.ssh("cat /proc/sys/kernel/hostname; cat /proc/cmdline", lb=g, timeout=30)
        name, cmdline = done.stdout.splitlines()[:2]
        assert name == g.name and cmdline == layout.kernel_cmdline(g), done.stdout
        links = guest.ssh("ip -o link show", lb=g).stdout
        for ifname, mac in g.macs.items():  # the image's names, the guest's own MACs
            assert any(f" {ifname}:" in ln and mac in ln for ln in links.splitlines()), ifname
    assert run.State.load().layout == layout.PAIR


def test_the_root_namespace_stays_out_of_the_lab(pair: run.Lab) -> None:
    n = pair.settings.network
    assert net.conflicts([n.external_subnet, n.internal_subnet]) == []
    assert _lab_routes() == []


def test_lb1_serves_the_fault_through_haproxy(pair: run.Lab) -> None:
    lb1 = pair.guest("lb1")
    got = run.addresses(lb1)
    assert got == {layout.EXT_IF: list(lb1.external), layout.INT_IF: list(lb1.internal)}
    assert str(pair.settings.network.vip) in " ".join(got[layout.EXT_IF])
    rows = run.fault(pair)
    assert all(ok for _, ok, _ in rows), rows
    assert rows[0][0] == "fault: haproxy serves the VIP on lb1"
    assert guest.ssh("command -v keepalived || echo absent", lb=lb1).stdout.strip() == "absent"


def test_lb2_has_only_its_own_addresses_and_no_haproxy(pair: run.Lab) -> None:
    lb2 = pair.guest("lb2")
    assert run.addresses(lb2) == {
        layout.EXT_IF: list(lb2.external),
        layout.INT_IF: list(lb2.internal),
    }
    state = guest.ssh("systemctl is-active haproxy; systemctl is-enabled haproxy", lb=lb2)
    assert state.stdout.split() == ["inactive", "enabled"], state.stdout
    assert run.vip_holders(pair) == ["lb1"]
    # lb2 is on the same bridge: the lab's repository (ks-repo) serves it, and
    # saw it come from its own address
    repo = f"http://{pair.repo.address}/Packages"
    got = guest.ssh(f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' {repo}", lb=lb2)
    assert got.stdout.strip() == "200", got.stdout + got.stderr
    log = (paths.RUN / f"{pair.repo.netns}-80.log").read_text()
    assert (lb2.own_external, "GET /Packages HTTP/1.1", 200) in hosts.access_peers(log)


def test_lab_big_downloads_intact_and_the_pod_sees_the_proxy(pair: run.Lab) -> None:
    """Through lb1's HAProxy, with a policy that admits lb1's checks: the body
    arrives whole at the limited rate, and the pod saw the proxy, not host01
    (the seed's fault)."""
    lb1 = pair.guest("lb1")
    f = run._filter(pair, "seed")
    admit = hosts.PodFilter(f.node_port, f.pod_port, (*f.admitted, *pair.check_sources))
    page = f"http://{pair.settings.network.vip}:{pair.settings.node_port}/"
    with _stand_ins_by_hand(pair):
        hosts.set_workers(pair.workers, {pair.workers[0].name: "pod"}, admit)
        deadline = time.monotonic() + 20  # HAProxy's checks: rise 2, inter 2 s
        while time.monotonic() < deadline:
            rc, out = run.curl("ks-host01", page)
            if rc == 0 and "Welcome to nginx" in out:
                break
            time.sleep(0.5)
        assert rc == 0 and "Welcome to nginx" in out, out
        seen = len(run.pod_peers(pair))
        got = run.download("ks-host01", page + hosts.BIG_NAME, rate="24M")
        print(f"/lab-big: {got.size} bytes in {got.seconds:.1f} s")
        assert got.rc == 0 and got.size == hosts.BIG_SIZE and got.sha256 == hosts.big_sha256()
        assert got.seconds > 2.0  # the rate limit holds the transfer open
        peers = run.pod_peers(pair)[seen:]
        assert [r for _, r, _ in peers] == [f"GET /{hosts.BIG_NAME} HTTP/1.1"]
        assert peers[0][0] in {lb1.own_internal, str(pair.settings.network.lb_internal_address)}


@contextlib.contextmanager
def _stand_ins_by_hand(pair: run.Lab) -> Iterator[None]:
    """The workers' stand-ins set by hand for the block, then back on what
    the lab says: the API's view (its follower paused meanwhile) or the run's
    recorded pod and phase."""
    if run.State.load().phase == "api":
        from lab import full

        with full.follower_paused(pair):
            yield
    else:
        try:
            yield
        finally:
            run.set_pod(pair, run.State.load())


def test_the_program_declares_commands_for_both_guests(pair: run.Lab) -> None:
    """The pair's stack declares each guest's own commands, on its own SSH port
    (apply and verify of the pair run end to end in `lab/lab demo --ha`)."""
    steps = run.plan_steps(pair)
    assert run.unserved(steps, pair.guests) == []
    per_host = 5 if pair.settings.metrics is not None else 4  # the metrics step with metrics
    assert len(steps) == per_host * len(pair.guests)


def test_the_demo_scenario_on_this_boot(pair: run.Lab) -> None:
    """Every row of ``lab/lab demo --ha`` after its `up` (this module's boot):
    apply to both LBs, verify, the VIP holder killed under load (requests
    resume within 1 s, the transfer completes, the pod sees host01 only,
    host02 times out, the nodes' gateway and VIP:6443 hold), restarted
    without taking a VIP back, verify again."""
    table = run.Table()
    victim = ha.scenario(pair, table)
    code = table.report("demo --ha scenario", ha.scenario_rows(pair))
    failed = [(name, detail) for name, ok, detail in table.rows if not ok]
    assert failed == [] and len(table.rows) == ha.scenario_rows(pair), table.rows
    assert code == 0
    # The killed guest booted again on its own disk; the other never rebooted.
    assert victim is not None
    other = next(g for g in pair.guests if g.name != victim)
    assert guest.boot_id(pair.guest(victim)) not in ("", BOOTS[victim])
    assert guest.boot_id(other) == BOOTS[other.name]
    conf = guest.ssh("head -n 1 /etc/keepalived/keepalived.conf", lb=pair.guest(victim))
    assert conf.stdout.strip() == HEADER


def _lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PROJECT_ROOT / "lab" / "lab"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_kill_lb_and_ssh_lb_as_typed(pair: run.Lab) -> None:
    """`lab/lab kill-lb NAME` powers the backup off hard (its qemu and its SSH
    forward gone) while the holder keeps serving, and `lab/lab ssh --lb NAME`
    reaches the holder. (`start-lb` runs in the scenario above, through the
    same `run.start_lb` the CLI calls; a boot costs ~25 s of CI.)"""
    holders = run.vip_holders(pair)
    assert len(holders) == 1, holders
    backup = next(g for g in pair.guests if g.name != holders[0])
    killed = _lab("kill-lb", backup.name)
    assert killed.returncode == 0, killed.stdout + killed.stderr
    assert guest.qemu_pid(backup) is None and guest.port_free(backup.ssh_port)
    page = f"http://{pair.settings.network.vip}:{pair.settings.node_port}/"
    rc, out = run.curl("ks-host01", page)
    assert rc == 0 and "Welcome to nginx" in out, out
    on_holder = _lab("ssh", "--lb", holders[0], "cat", "/proc/sys/kernel/hostname")
    assert on_holder.returncode == 0 and on_holder.stdout.strip() == holders[0], on_holder
    again = _lab("kill-lb", backup.name)
    assert again.returncode == 1  # it was not running
    assert _lab_routes() == []
