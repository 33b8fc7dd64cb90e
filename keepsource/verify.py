"""The end state, checked from the outside: one PASS/FAIL line per check.

Clients run ``curl`` through a network namespace (the local lab) or over SSH
(a real lab); the LB's state is read over SSH. Every probe is bounded in time.
"""

from __future__ import annotations

import atexit
import hashlib
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from keepsource import facts
from keepsource.connection import INSECURE_WARNING, lb_connection, read_host_key_file, ssh_options
from keepsource.host import LbHost, lb_host
from keepsource.render import gateway, metrics
from keepsource.render.keepalived import RealServer, VirtualService
from keepsource.render.scripts import LB_NAME, PACKAGES, STATE_DIR, STEP_NAMES, step_urn
from keepsource.settings import Settings
from keepsource.settings.model import LbNode
from keepsource.settings.services import Exposed, check_payload
from keepsource.transport import SshOptions, exit_argv, parse_destination, ssh_argv
from keepsource.udp_probe import udp_send_command

Runner = Callable[[str], tuple[int, str]]
KEEPALIVED_CONF_PATH = "/etc/keepalived/keepalived.conf"


#: Control characters (C0, DEL, C1): ESC starts a terminal escape sequence.
_PRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Check:
    """One fact of the end state; ``repair``: the LB steps whose re-run
    repairs it when it fails."""

    name: str
    ok: bool
    detail: str
    repair: tuple[str, ...] = ()
    lb: str = LB_NAME
    """Which LB host those steps belong to (a pair names its hosts)."""

    def line(self) -> str:
        """One line for the operator's terminal: what the hosts sent (the
        detail) never carries a control character or escape sequence there."""
        detail = _PRINTABLE.sub("?", " ".join(self.detail.splitlines()))
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {detail}"


def _ssh_argv(target: str, identity: str | None, known_hosts: str | None = None) -> list[str]:
    """ssh to a client host (``user@host[:port]``): its key must already be
    known (never trusted on first use)."""
    d = parse_destination(target)
    return ssh_argv(
        SshOptions(d.user, d.host, d.port, identity=identity, known_hosts=known_hosts or None)
    )


def _run(argv: list[str], timeout: float) -> tuple[int, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 124, f"no answer within {timeout} s"
    return done.returncode, (done.stdout + done.stderr).strip()


@dataclass(frozen=True)
class LbRunner:
    """Runs a shell command on one LB over ssh: (status, output)."""

    ssh: SshOptions
    wrap: Callable[[str], str]
    """The connection's command form (``sudo -n`` for a non-root user)."""
    timeout: float
    run: Callable[[list[str], float], tuple[int, str]] = _run
    """Runs an argv with a timeout (tests give a recorder)."""

    @property
    def argv(self) -> tuple[str, ...]:
        """ssh and its options, ending ``-- user@host``."""
        return tuple(ssh_argv(self.ssh))

    def __call__(self, command: str) -> tuple[int, str]:
        return self.run([*self.argv, self.wrap(command)], self.timeout)

    def close(self) -> None:
        """End a shared connection, if this runner has one."""
        argv = exit_argv(self.ssh)
        if argv is not None:
            self.run(argv, 10)


def lb_runner(
    settings: Settings,
    root: Path,
    identity: str | None = None,
    timeout: float = 30,
    node: LbNode | None = None,
    control_dir: Path | None = None,
    run: Callable[[list[str], float], tuple[int, str]] = _run,
) -> LbRunner:
    """Run commands on the LB exactly as the program reaches it (keepsource's
    connection model: jump host, pinned host keys, ``sudo -n`` for a non-root
    user). The pinned keys go to a known_hosts file of this run only.
    ``control_dir``: share one connection among the commands (the caller ends
    it with :meth:`LbRunner.close`)."""
    settings = read_host_key_file(settings, root)
    target = settings.lb_nodes[0] if node is None else _read_node(settings, node)
    conn = lb_connection(settings, target)
    if conn.insecure:
        print(f"warning: {INSECURE_WARNING}", file=sys.stderr, flush=True)
    known: Path | None = None
    if not conn.insecure:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the runner)
            "w", prefix="keepsource-known-hosts-", delete=False
        )
        with handle:
            handle.write(conn.known_hosts())
        known = Path(handle.name)
        atexit.register(known.unlink, missing_ok=True)
    # With a long TMPDIR, control_dir gives no shared connection (one per command).
    return LbRunner(ssh_options(conn, known, identity, control_dir), conn.command, timeout, run)


def runner_for(
    via: str,
    target: str,
    identity: str | None = None,
    known_hosts: str | None = None,
    timeout: float = 30,
    run_argv: Callable[[list[str], float], tuple[int, str]] = _run,
) -> Runner:
    """A function that runs a shell command there and returns (status, output)."""
    if via == "netns":
        prefix = ["ip", "netns", "exec", target, "sh", "-c"]
    else:
        prefix = [*_ssh_argv(target, identity, known_hosts)]

    def run(command: str) -> tuple[int, str]:
        return run_argv([*prefix, command], timeout)

    return run


def curl_command(url: str) -> str:
    return f"curl -s -m 2 -o - -w '\\nHTTP %{{http_code}}\\n' {shlex.quote(url)}"


def udp_command(
    address: str,
    port: int,
    payload_hex: str | None,
    timeout: float = 2,
    source: str | None = None,
) -> str:
    """Send one datagram (the service's check payload) and wait ``timeout`` s
    for a reply: exit 0 on a reply, 124 when none came, 1 when the host
    refused (an ICMP port unreachable). Without ``source``: bash's /dev/udp and
    coreutils, so it runs on any Debian client. With ``source`` (the LB's
    check address, which the NetworkPolicy admits): perl's socket bound to it
    (:func:`keepsource.udp_probe.udp_send_command`; 3 when that socket could
    not be made)."""
    hexs = payload_hex or ""
    if source is not None:
        return udp_send_command(source, address, port, hexs, timeout=timeout)
    data = "".join(f"\\x{hexs[i : i + 2]}" for i in range(0, len(hexs), 2))
    script = f"exec 3<>/dev/udp/{address}/{port} && printf '{data}' >&3 && head -c 1 <&3 >/dev/null"
    return f"timeout {timeout:g} bash -c {shlex.quote(script)}"


def client_checks(settings: Settings, allowed: Runner, denied: Runner) -> list[Check]:
    """Each client against each workload service's ports on the VIP: a client
    that the service's ``allowedClients`` admit is served (TCP: an HTTP 2xx or
    3xx; UDP: a reply to the service's check payload), any other times out.
    Fixed real-server services (the apiserver) are not client-checked."""
    assert settings.verify is not None
    clients = (
        (settings.verify.allowed_client, allowed),
        (settings.verify.denied_client, denied),
    )
    vip = settings.network.vip
    checks = []
    for ex in settings.exposed:
        if ex.workload is None:
            continue
        for port in ex.ports:
            for client, run in clients:
                admitted = any(client.address in net for net in ex.allowed_clients)
                if port.protocol == "UDP":
                    checks.append(_udp_check(ex, port.port, client.name, run, admitted, str(vip)))
                else:
                    checks.append(
                        _tcp_check(f"http://{vip}:{port.port}/", client.name, run, admitted)
                    )
    return checks


def _tcp_check(url: str, client: str, run: Runner, admitted: bool) -> Check:
    rc, out = run(curl_command(url))
    if admitted:
        # The workload answered: any 2xx or 3xx, whatever the image serves.
        status = out.strip().splitlines()[-1] if out.strip() else ""
        page = rc == 0 and re.fullmatch(r"HTTP [23]\d\d", status) is not None
        return Check(f"{client} is served from {url}", page, f"curl exit {rc}, {status}")
    # curl exit 28: timed out (the policy drops); 7 would mean refused, 0 served.
    return Check(f"{client} times out on {url}", rc == 28, f"curl exit {rc}")


def _udp_check(ex: Exposed, port: int, client: str, run: Runner, admitted: bool, vip: str) -> Check:
    payload = check_payload(ex.check)
    where = f"udp {vip}:{port} ({ex.name})"
    if payload is None:
        # Without a payload the service's answer is unknown: no check passes by default.
        return Check(
            f"{client} on {where}", False, "no check payload (check.dnsQuery or udpPayload)"
        )
    rc, _ = run(udp_command(vip, port, payload))
    if admitted:
        return Check(f"{client} gets an answer from {where}", rc == 0, f"exit {rc}")
    return Check(f"{client} gets no answer from {where}", rc == 124, f"exit {rc}")


#: ssh's own exit code when the connection failed (not the remote command's).
SSH_FAILED = 255


def _transport_failed(rc: int, out: str) -> bool:
    """The command never ran to an answer: ssh failed, or no answer in time."""
    return rc == SSH_FAILED or (rc == 124 and out.startswith("no answer within"))


def _read_node(settings: Settings, node: LbNode) -> LbNode:
    """The same host in settings whose host key files were read."""
    return next(n for n in settings.lb_nodes if n.name == node.name)


def lb_checks(
    settings: Settings, lb: Runner, settle_s: float = 15, node: LbNode | None = None
) -> list[Check]:
    """The LB host's state (by default the only host's; a pair's are named)."""
    node = node or settings.lb_nodes[0]
    lost: list[str] = []

    def watched(command: str) -> tuple[int, str]:
        rc, out = lb(command)
        if _transport_failed(rc, out):
            lost.append(command)
        return rc, out

    checks = _lb_checks(lb_host(settings, node), watched, settle_s)
    if lost:
        # A check whose command got no answer was not made: none of them may
        # pass on an empty answer. Only the failures stand, and the loss.
        checks = [
            Check(
                "the LB answered every check over SSH",
                False,
                f"{len(lost)} commands got no answer (the first: {lost[0][:80]!r}); "
                "the checks that passed are not shown: run verify again",
            ),
            *(c for c in checks if not c.ok),
        ]
    if not settings.is_pair:
        return checks
    return [replace(c, name=f"{node.name}: {c.name}", lb=node.name) for c in checks]


def _lb_checks(host: LbHost, lb: Runner, settle_s: float) -> list[Check]:
    settings = host.settings
    rc, out = lb("echo keepsource-reachable")
    if rc != 0:
        # An LB that cannot be reached is a failure, never a pass by default.
        return [Check("LB reachable over SSH", False, out.splitlines()[-1] if out else f"rc {rc}")]
    checks: list[Check] = []

    def state(command: str) -> str:
        return lb(command)[1].strip()

    want = {f"{p}=install ok installed" for p in PACKAGES.split()}
    got_pkgs = state(
        "dpkg-query -W -f='${Package}=${Status};' " + PACKAGES + " 2>/dev/null || true"
    )
    have = {entry for entry in got_pkgs.split(";") if entry}
    checks.append(Check("keepalived and ipvsadm installed", have == want, got_pkgs, ("packages",)))
    got = (facts.unit_active("keepalived").read(lb), facts.unit_enabled("keepalived").read(lb))
    checks.append(
        Check(
            "keepalived active and enabled",
            got == ("active", "enabled"),
            "/".join(got),
            ("cutover",),
        )
    )
    conf_sha = hashlib.sha256(host.keepalived_conf.encode()).hexdigest()
    live = state(
        f"sha256sum < {KEEPALIVED_CONF_PATH} 2>/dev/null | cut -d ' ' -f 1; "
        f"cat {STATE_DIR}/keepalived.loaded 2>/dev/null || echo none"
    ).split()
    checks.append(
        Check(
            "keepalived runs the stack's keepalived.conf (on disk and as loaded)",
            live == [conf_sha, conf_sha],
            f"want {conf_sha[:12]}, disk/loaded " + "/".join(x[:12] for x in live),
            ("keepalived-config", "cutover"),
        )
    )
    installed = lb("systemctl cat haproxy.service >/dev/null 2>&1 || test -L "
                   "/etc/systemd/system/haproxy.service")[0] == 0  # fmt: skip
    got = (facts.unit_active("haproxy").read(lb), facts.unit_enabled("haproxy").read(lb))
    off = got[0] != "active" and (got[1] == "masked" or not installed)
    detail = "/".join(got) if installed else "not installed"
    checks.append(Check("haproxy stopped, disabled and masked", off, detail, ("cutover",)))
    fwd = state("sysctl -n net.ipv4.ip_forward")
    checks.append(Check("ip_forward is 1", fwd == "1", fwd, ("gateway",)))
    inner = settings.network.internal_subnet
    rule = f"-A {gateway.CHAIN} -s {inner} ! -d {inner} -j MASQUERADE"
    nat = state("iptables-save -t nat")
    jump = f"-A POSTROUTING -j {gateway.CHAIN}" in nat.splitlines()
    checks.append(Check(f"MASQUERADE of {inner} present", rule in nat and jump, rule, ("gateway",)))
    loaded, _ = lb(f"{gateway.LOADER_PATH} --check")
    unit = facts.unit_enabled(gateway.UNIT).read(lb)
    checks.append(
        Check(
            "keepsource's rules and sysctl live as persisted, loaded at boot",
            loaded == 0 and unit == "enabled",
            f"net-load --check rc {loaded}, {gateway.UNIT} {unit}",
            ("gateway",),
        )
    )
    mangle = state("iptables-save -t mangle").splitlines()
    switch = [
        line
        for line in gateway.render_switch_rules(host.pools).splitlines()
        if line.startswith("-A ")
    ]
    missing = [line for line in switch if line not in mangle]
    checks.append(
        Check(
            "the VIP's services are switched to IPVS",
            not missing,
            f"missing: {missing}" if missing else f"{len(switch)} MARK rules",
            ("cutover",),
        )
    )
    return checks + _serving_checks(host, lb, settle_s)


def _serving_checks(host: LbHost, lb: Runner, settle_s: float) -> list[Check]:
    """The exporter (with metrics) and every pool: exactly its healthy real servers."""
    settings, node = host.settings, host.node
    checks: list[Check] = []

    def state(command: str) -> str:
        return lb(command)[1].strip()

    if settings.metrics is not None:
        serving = metrics.listen(settings, node)
        active = facts.unit_active(metrics.UNIT).read(lb)
        port = settings.metrics.port
        listening = state(f"ss -Hltn 'sport = :{port}' | awk '{{print $4}}'").split()
        checks.append(
            Check(
                f"the node exporter serves on {serving} only",
                active == "active" and listening == [serving],
                f"{active}, listening on {' '.join(listening) or 'nothing'}",
                ("metrics",),
            )
        )
    for vs in host.pools:
        healthy, table = _pool(vs, lb, settle_s)
        what = (
            f"{vs.vip}:{vs.port}"
            if _legacy_name(settings, vs)
            else f"{vs.vip}:{vs.port}/{vs.protocol.lower()} ({vs.service})"
        )
        checks.append(
            Check(
                f"IPVS {what} holds exactly the healthy {_members(settings, vs)}",
                table == healthy and bool(healthy),
                f"ipvs={sorted(table)} healthy={sorted(healthy)}",
                ("cutover",),
            )
        )
        relay = _relay_check(settings, vs, lb, healthy, node)
        checks += [relay] if relay is not None else []
    return checks


def _relay_check(
    settings: Settings, vs: VirtualService, lb: Runner, healthy: set[str], node: LbNode
) -> Check | None:
    """With a checkAddress, a connection the LB makes from anywhere else (a
    relay: it leaves from the host's internal address) must not reach a pod
    that its checks reach: the NetworkPolicy admits the check address only.
    TCP pools of keepsource's own workloads, one healthy real server each."""
    if vs.protocol != "TCP" or not _exposed(settings, vs).managed or not healthy:
        return None
    if node.check_source == node.internal_address:
        return None
    target = sorted(healthy)[0]
    source = node.internal_address
    rc, out = lb(f"curl -s -o /dev/null -m 2 --interface {source} http://{target}/; echo rc=$?")
    got = out.strip().rsplit("rc=", 1)[-1] if rc == 0 else f"could not check (exit {rc})"
    return Check(
        f"a relay on the LB (from {node.internal_address}) does not reach {target} "
        f"(the policy admits the checks' {node.check_source} only)",
        got in ("7", "28"),
        f"curl exit {got} (28: dropped, 7: refused)",
    )


def _exposed(settings: Settings, vs: VirtualService) -> Exposed:
    """The exposed service a pool belongs to (every pool is one's port; names
    are unique): the one place a pool finds its service."""
    return next(e for e in settings.exposed if e.name == vs.service)


def _legacy_name(settings: Settings, vs: VirtualService) -> bool:
    return _exposed(settings, vs).legacy


def _members(settings: Settings, vs: VirtualService) -> str:
    return "workers" if _exposed(settings, vs).workload is not None else "real servers"


def repair_line(stack: str, checks: list[Check]) -> str | None:
    """The `pulumi up` that re-runs just the steps the failed checks name: a
    replaced remote Command runs its create again (pulumi-command has no read,
    so an unchanged stack would run nothing)."""
    wanted = {(c.lb, step) for c in checks if not c.ok for step in c.repair}
    if not wanted:
        return None
    hosts = sorted({lb for lb, _ in wanted})
    order = [(lb, name) for lb in hosts for name in STEP_NAMES if (lb, name) in wanted]
    targets = " ".join(f"--replace {shlex.quote(step_urn(stack, n, lb))}" for lb, n in order)
    return f"pulumi up -s {shlex.quote(stack)} {targets}"


def vip_holder(settings: Settings, runners: Mapping[str, Runner]) -> Check:
    """A pair: exactly one host holds both floating addresses (the VIP and the
    nodes' gateway), and says which."""
    want = {str(settings.network.vip), str(settings.network.lb_internal_address)}
    held: dict[str, set[str]] = {}
    unknown: dict[str, int] = {}
    for name, run in runners.items():
        rc, out = run(facts.IPV4_ADDRESSES.command)
        if rc != 0:
            unknown[name] = rc  # not "holds none": it could not be asked
        held[name] = want & facts.ips(facts.IPV4_ADDRESSES.parse(out)) if rc == 0 else set()
    holders = [name for name, got in held.items() if got == want]
    partial = [name for name, got in held.items() if got and got != want]
    ok = len(holders) == 1 and not partial and not unknown
    detail = ", ".join(
        f"{n}: could not check (exit {unknown[n]})"
        if n in unknown
        else f"{n}: {sorted(got) or 'none'}"
        for n, got in held.items()
    )
    what = f"{holders[0]} holds the VIP and the gateway" if ok else "VIP holder unclear"
    return Check(f"one LB host holds the VIP and the gateway ({what})", ok, detail)


def probe_command(vs: VirtualService, rs: RealServer) -> str:
    """One real server as the pool's check sees it, from the LB: prints
    ``up FWMARK ADDR:PORT`` or ``down ...``. TCP: a connection from the check
    source (curl: any answer, even a protocol error, means connected; 7 is
    refused, 28 timed out); UDP: the check's payload and a reply (the settings
    require a payload for every UDP port, and the sender refuses none)."""
    tag = f"{vs.fwmark} {rs.address}:{rs.port}"
    if vs.protocol == "UDP":
        ok = "[ $rc -eq 0 ]"
        send = udp_command(rs.address, rs.port, vs.udp_payload, source=vs.check_source)
    else:
        ok = "[ $rc -ne 7 ] && [ $rc -ne 28 ]"
        send = (
            f"curl -s -o /dev/null -m 2 --interface {vs.check_source} "
            f"http://{rs.address}:{rs.port}/"
        )
    return f"{send}; rc=$?; if {ok}; then echo 'up {tag}'; else echo 'down {tag}'; fi"


def _pool(vs: VirtualService, lb: Runner, settle_s: float) -> tuple[set[str], set[str]]:
    """(real servers that answer the pool's check from the LB, IPVS real
    servers), polled until they agree or ``settle_s`` passed: keepalived needs
    a few checks to settle."""
    probes = "; ".join(probe_command(vs, rs) for rs in vs.real_servers)
    healthy: set[str] = set()
    table: set[str] = set()
    deadline = time.monotonic() + settle_s
    for _ in range(max(1, int(settle_s / 0.5))):
        out = lb(f"{probes}; {facts.IPVS_TABLE.command}")[1]
        healthy = {
            f[2] for f in (line.split() for line in out.splitlines())
            if len(f) == 3 and f[0] == "up" and f[1] == str(vs.fwmark)
        }  # fmt: skip
        table = facts.parse_ipvs(out, vs.vip, vs.port, vs.fwmark)
        if (table == healthy and healthy) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return healthy, table


def _path(value: str | None, root: Path) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else root / path)


def run_verify(settings: Settings, stack: str, root: Path) -> int:
    """Relative file names in the stack's verify section are relative to ``root``."""
    v = settings.verify
    if v is None:
        print(f"error: stack {stack} has no keepsource:verify section", flush=True)
        return 2
    identity = _path(v.ssh_identity, root)
    known = _path(v.known_hosts_file, root)
    # The LB first: its pool check waits (bounded) for keepalived to settle.
    with tempfile.TemporaryDirectory(prefix="keepsource-ssh-") as control:
        runners = {
            n.name: lb_runner(settings, root, identity, node=n, control_dir=Path(control))
            for n in settings.lb_nodes
        }
        try:
            checks = [
                c for n in settings.lb_nodes for c in lb_checks(settings, runners[n.name], node=n)
            ]
            if settings.is_pair:
                checks.append(vip_holder(settings, runners))
        finally:
            for runner in runners.values():
                runner.close()
    checks += client_checks(
        settings,
        runner_for(v.via, v.allowed_client.target, identity, known),
        runner_for(v.via, v.denied_client.target, identity, known),
    )
    for check in checks:
        print(check.line(), flush=True)
    failed = sum(not c.ok for c in checks)
    print(f"verify {stack}: {len(checks) - failed} passed, {failed} failed")
    repair = repair_line(stack, checks)
    if repair is not None:
        print(f"drift on the LB: re-run just the steps that repair it:\n  {repair}")
    return 0 if failed == 0 else 1
