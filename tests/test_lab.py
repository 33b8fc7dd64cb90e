"""The local lab, for real: a Debian guest under QEMU, namespaces, SSH.

Needs root, qemu-system-x86 and debootstrap (run-tests installs them). The
tests share one lab and run in file order: the fault, an apply cut mid-way,
a full apply, idempotence, a refused config, moving the pod, a reboot.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keepsource.render.keepalived import HEADER, WORKLOAD_FWMARK
from keepsource.stackfile import load_config
from keepsource.verify import parse_ipvs

pytestmark = pytest.mark.lab

_MISSING = [t for t in ("qemu-system-x86_64", "debootstrap", "ip") if shutil.which(t) is None]
if os.geteuid() != 0 or _MISSING:
    pytest.skip(
        f"lab tests need root and {_MISSING or 'the lab tools'} (run `sudo ./run-tests`)",
        allow_module_level=True,
    )

from lab import driver, guest, hosts, image, net, paths  # noqa: E402
from lab import run as lab  # noqa: E402

EXPECTED_STEPS = 4
STATE_DIR = "/var/lib/keepsource"
CONF = "/etc/keepalived/keepalived.conf"
DROPIN = "/etc/systemd/system/keepalived.service.d/lab-fault.conf"


@pytest.fixture(scope="module")
def plan() -> Iterator[lab.Plan]:
    lab.down()
    p = lab.make_plan()
    lab.up(p)
    try:
        yield p
    finally:
        lab.down()


def _snapshot() -> str:
    """What keepsource manages on the LB, for before/after comparisons."""
    cmd = (
        f"sha256sum {CONF} {STATE_DIR}/keepalived.conf.staged /etc/keepsource/* "
        "/etc/sysctl.d/90-keepsource-gateway.conf 2>&1; "
        "systemctl is-active keepalived haproxy; systemctl is-enabled keepalived haproxy; "
        "systemctl show -p MainPID --value keepalived; "
        "iptables-save | sed -e '/^#/d' -e 's/\\[[0-9]*:[0-9]*\\]$//'; "
        "ipvsadm -Ln | awk '{print $1, $2}'; sysctl -n net.ipv4.ip_forward"
    )
    done = guest.ssh(cmd, timeout=60)
    return done.stdout


def _config(**lb: Any) -> dict[str, Any]:
    """The local stack's config with keys of ``keepsource:lb`` overridden."""
    config = load_config(lab.STACK)
    config["keepsource:lb"] = {**config["keepsource:lb"], **lb}
    return config


def _apply(
    plan: lab.Plan,
    cut: tuple[str, float] | None = None,
    config: dict[str, Any] | None = None,
    workload_first: bool = True,
) -> list[driver.Result]:
    return lab.apply(plan, cut, workload_first=workload_first, config=config).results


def _failed(results: list[driver.Result], name: str) -> str:
    """The output of the one step that failed, which must be ``name`` (steps
    run as the engine runs them: the failed one need not finish last)."""
    bad = driver.failures(results)
    assert [r.name for r in bad] == [name], [(r.name, r.rc, r.output) for r in results]
    return bad[0].output


def _ok(results: list[driver.Result]) -> None:
    assert [r.rc for r in results] == [0] * EXPECTED_STEPS, [(r.name, r.output) for r in results]


def _urls(plan: lab.Plan) -> tuple[str, str]:
    vip = plan.settings.network.vip
    return (
        f"http://{vip}:{plan.settings.apiserver.port}/",
        f"http://{vip}:{plan.settings.node_port}/",
    )


def _answers(ns: str, url: str) -> bool:
    """Any HTTP answer (the seed's HAProxy answers refused clients with a 50x)."""
    rc, out = lab.curl(ns, url)
    return rc == 0 and "HTTP " in out and "HTTP 000" not in out


def _haproxy_serves_as_before(plan: lab.Plan) -> None:
    api, page = _urls(plan)
    assert guest.ssh("systemctl is-active haproxy").stdout.strip() == "active"
    assert guest.ssh("systemctl is-enabled haproxy").stdout.strip() == "enabled"
    assert _answers("ks-host01", api) and _answers("ks-host01", page)
    assert _answers(plan.workers[0].netns, api)
    state = guest.ssh(
        "systemctl is-active keepalived; test -e /etc/keepsource/switch.rules && echo switch; "
        "iptables -t mangle -S KEEPSOURCE-SWITCH 2>/dev/null | grep -c -- '-j MARK' || true; "
        f"test -e {CONF} && echo conf; ipvsadm -Ln | grep -c '^FWM' || true"
    ).stdout.split()
    assert state == ["inactive", "0", "0"], state


def _lab_fault(unit_lines: str) -> None:
    guest.ssh(
        f"mkdir -p {DROPIN.rsplit('/', 1)[0]} && printf '[Service]\\n{unit_lines}\\n' > {DROPIN}"
        " && systemctl daemon-reload",
        timeout=60,
    )


def _lab_fault_off() -> None:
    guest.ssh(f"rm -f {DROPIN} && systemctl daemon-reload", timeout=60)


def test_root_namespace_stays_out_of_the_lab(plan: lab.Plan) -> None:
    n = plan.settings.network
    assert net.conflicts([n.external_subnet, n.internal_subnet]) == []
    # ... and the check does catch an overlap with this machine's own networks.
    ours = subprocess.run(["ip", "-j", "-4", "route"], capture_output=True, text=True, check=True)
    nets = [r["dst"] for r in json.loads(ours.stdout) if r.get("dst", "default") != "default"]
    if nets:
        assert net.conflicts([ipaddress.IPv4Network(nets[0], strict=False)])


def test_seed_fault_both_clients_refused_through_haproxy(plan: lab.Plan) -> None:
    rows = lab.fault(plan)
    assert all(ok for _, ok, _ in rows), rows
    assert guest.ssh("command -v keepalived || echo absent").stdout.strip() == "absent"


def test_a_package_removal_is_refused_and_nothing_removed(plan: lab.Plan, tmp_path: Path) -> None:
    """apt would resolve a conflict by removing a package (ufw does this with
    iptables-persistent): the packages step simulates first and refuses."""
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        "Package: ks-lab-conflict\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: keepsource lab <lab@keepsource.invalid>\nConflicts: keepalived\n"
        "Description: lab test package that conflicts with keepalived\n"
    )
    deb = paths.REPO / "ks-lab-conflict_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(pkg), str(deb)], check=True, timeout=60)
    image.index_repo()
    try:
        got = guest.ssh(
            "apt-get -q update >/dev/null && apt-get -q -y install ks-lab-conflict", timeout=300
        )
        assert got.returncode == 0, got.stdout
        results = _apply(plan, workload_first=False)
        assert "would remove: ks-lab-conflict" in _failed(results, "lb-packages")
        # Nothing that waits for the packages ran; the gateway (independent,
        # nothing that serves changes) may run beside it.
        assert "lb-packages" in [r.name for r in results]
        assert {r.name for r in results} <= {"lb-packages", "lb-gateway"}
        state = guest.ssh("dpkg-query -W -f='${Status}' ks-lab-conflict; command -v keepalived")
        assert state.stdout.strip() == "install ok installed", state.stdout
    finally:
        guest.ssh("apt-get -q -y purge ks-lab-conflict >/dev/null 2>&1", timeout=300)
        deb.unlink(missing_ok=True)
        image.index_repo()
        guest.ssh("apt-get -q update >/dev/null", timeout=300)


def test_keepalived_cannot_start_haproxy_keeps_serving(plan: lab.Plan) -> None:
    _lab_fault("ExecStartPre=/bin/false")
    try:
        results = _apply(plan, workload_first=False)
    finally:
        _lab_fault_off()
    out = _failed(results, "lb-cutover")
    assert "keepalived did not start" in out
    assert "Rolled back" in out
    _haproxy_serves_as_before(plan)


def test_a_pool_that_never_gets_healthy_keeps_haproxy_serving(plan: lab.Plan) -> None:
    """The seed's policy does not admit the check source: the workload's pool
    stays empty, the cut-over gives up after lb.cutoverTimeout and says why."""
    results = _apply(plan, config=_config(cutoverTimeout=8), workload_first=False)
    out = _failed(results, "lb-cutover")
    assert "pool nginx (192.168.0.1:30080) has no healthy real server after 8 s" in out
    assert "worker01 172.16.0.11:30080 does not answer" in out
    assert "pool apiserver" not in out
    _haproxy_serves_as_before(plan)


def test_a_cut_stdin_is_refused_and_nothing_changes(plan: lab.Plan) -> None:
    step = next(s for s in driver.plan(lab.STACK) if s.name == "lb-keepalived-config")
    assert step.stdin is not None
    # A cut at a block boundary: keepalived -t alone would accept it.
    cut = step.stdin[: step.stdin.index("# nginx")]
    before = _snapshot()
    results = driver.apply([driver.Planned(**{**step.__dict__, "stdin": cut})], lab._driver_ssh)
    assert results[0].rc != 0
    assert "the transfer was cut or altered" in results[0].output
    assert _snapshot() == before


def test_first_apply_keeps_the_apiserver_answering(plan: lab.Plan) -> None:
    """From the fault state; the first try's SSH connection is cut during the
    cut-over, the second converges. host01 and worker01 ask VIP:6443 every
    0.2 s throughout: no request may fail."""
    api, page = _urls(plan)
    probes = {ns: lab.Probe(ns, api) for ns in ("ks-host01", plan.workers[0].netns)}
    time.sleep(1)
    try:
        cut = _apply(plan, cut=("lb-cutover", 2.5))
        results = _apply(plan)
    finally:
        seen = {ns: p.stop() for ns, p in probes.items()}
    print(f"probes during the first apply: {seen}")
    assert cut[-1].name == "lb-cutover" and "connection cut" in cut[-1].output
    _ok(results)
    # The very first request after apply returns.
    rc, out = lab.curl("ks-host01", page)
    assert rc == 0 and "Welcome to nginx" in out, out
    assert lab.curl("ks-host02", page)[0] == 28
    assert lab.curl(plan.workers[0].netns, page)[0] == 28  # policy: nodes are not clients
    for ns, probe in seen.items():
        assert probe["requests"] > 50 and probe["failures"] == 0, (ns, probe)
    assert guest.ssh("systemctl is-enabled haproxy").stdout.strip() == "masked"
    assert lab.verify() == 0


def test_second_apply_changes_nothing(plan: lab.Plan) -> None:
    before = _snapshot()
    results = _apply(plan)
    _ok(results)
    assert [r.name for r in results if r.changed] == []
    assert _snapshot() == before


def test_a_sudo_user_without_tty_applies_too(plan: lab.Plan) -> None:
    """A non-root SSH user with passwordless sudo: commands go through `sudo -n`."""
    setup = (
        "id ops >/dev/null 2>&1 || useradd -m -s /bin/bash ops; "
        "install -d -m 700 -o ops -g ops ~ops/.ssh; "
        "install -m 600 -o ops -g ops /root/.ssh/authorized_keys ~ops/.ssh/authorized_keys; "
        "echo 'ops ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/ops; chmod 440 /etc/sudoers.d/ops; "
        "command -v sudo"
    )
    assert guest.ssh(setup, timeout=60).returncode == 0, "the image has sudo"
    config = load_config(lab.STACK)
    config["keepsource:lb"]["ssh"]["user"] = "ops"
    steps = driver.plan(lab.STACK, config)
    assert all(s.user == "ops" and s.create.startswith("sudo -n ") for s in steps)
    before = _snapshot()
    results = driver.apply(steps, lab._driver_ssh)
    _ok(results)
    assert [r.name for r in results if r.changed] == []
    assert _snapshot() == before


def test_refused_keepalived_conf_never_goes_live(plan: lab.Plan) -> None:
    step = next(s for s in driver.plan(lab.STACK) if s.name == "lb-keepalived-config")
    assert step.stdin is not None and " retry 1\n" in step.stdin
    bad_conf = step.stdin.replace(" retry 1\n", " ng_get_retry 1\n", 1)
    # The program's digest follows the config: render the step for the bad one.
    bad = driver.Planned(
        **{
            **step.__dict__,
            "stdin": bad_conf,
            "create": step.create.replace(
                hashlib.sha256(step.stdin.encode()).hexdigest(),
                hashlib.sha256(bad_conf.encode()).hexdigest(),
            ),
        }
    )
    before = _snapshot()
    results = driver.apply([bad], lab._driver_ssh)
    assert results[0].rc != 0
    assert "keepalived -t rejected the new config" in results[0].output
    assert "ng_get_retry" in results[0].output  # the tool's own message names the keyword
    assert _snapshot() == before  # same config, same service (same PID), same IPVS table


def _pool(plan: lab.Plan) -> set[str]:
    vip, port = str(plan.settings.network.vip), plan.settings.node_port
    return parse_ipvs(guest.ssh("ipvsadm -Ln", timeout=20).stdout, vip, port, WORKLOAD_FWMARK)


def _wait_pool(plan: lab.Plan, want: set[str], timeout: float = 15) -> None:
    start = time.monotonic()
    while _pool(plan) != want and time.monotonic() - start < timeout:
        time.sleep(0.5)
    assert _pool(plan) == want


def _without_worker02() -> dict[str, Any]:
    config = load_config(lab.STACK)
    config["keepsource:workers"] = config["keepsource:workers"][:1]
    return config


def test_reapply_after_a_worker_change_keeps_the_apiserver_answering(plan: lab.Plan) -> None:
    api, page = _urls(plan)
    for config in (_without_worker02(), None):  # remove worker02, then add it back
        probe = lab.Probe("ks-host01", api)
        time.sleep(1)
        try:
            results = _apply(plan, config=config)
        finally:
            seen = probe.stop()
        print(f"probe during a re-apply ({'worker02 removed' if config else 'restored'}): {seen}")
        _ok(results)
        assert [r.name for r in results if r.changed] == ["lb-keepalived-config", "lb-cutover"]
        assert seen["requests"] > 10 and seen["failures"] == 0, seen
        rc, out = lab.curl("ks-host01", page)
        assert rc == 0 and "Welcome to nginx" in out


def test_a_failed_reload_converges_on_the_next_apply(plan: lab.Plan) -> None:
    both = {w.name: "pod" for w in plan.workers}
    hosts.set_workers(plan.workers, both, lab._filter(plan, "fixed"))
    addrs = {f"{w.address}:{plan.settings.node_port}" for w in plan.workers}
    worker01 = f"{plan.workers[0].address}:{plan.settings.node_port}"
    try:
        _wait_pool(plan, addrs)
        _lab_fault("ExecReload=\\nExecReload=/bin/false")
        try:
            failed = _apply(plan, config=_without_worker02())
        finally:
            _lab_fault_off()
        assert "keepalived could not reload the new config" in _failed(failed, "lb-cutover")
        assert _pool(plan) == addrs  # the daemon still runs the old config
        results = _apply(plan, config=_without_worker02())
        _ok(results)
        assert "keepalived reloaded" in results[-1].output
        _wait_pool(plan, {worker01})
        again = _apply(plan, config=_without_worker02())
        assert [r.name for r in again if r.changed] == []
    finally:
        lab.set_pod(plan, lab.State.load())
        _ok(_apply(plan))
        _wait_pool(plan, {worker01})


def test_a_foreign_keepalived_conf_is_refused_then_taken_over_with_a_backup(
    plan: lab.Plan,
) -> None:
    foreign = "# a site's own keepalived.conf\nglobal_defs {\n    router_id site\n}\n"
    assert guest.ssh(f"cat > {CONF}", stdin=foreign).returncode == 0
    sha = guest.ssh(f"sha256sum < {CONF}").stdout
    refused = _apply(plan)
    out = _failed(refused, "lb-keepalived-config")
    assert "keepsource did not write it" in out
    assert "keepsource:lb.takeOver" in out
    assert "lb-cutover" not in [r.name for r in refused]  # no step after a failed one
    assert guest.ssh(f"sha256sum < {CONF}").stdout == sha  # untouched
    taken = _apply(plan, config=_config(takeOver=["keepalived.conf"]))
    _ok(taken)
    assert "took over" in taken[-1].output
    backups = guest.ssh(f"cat {STATE_DIR}/backup/keepalived.conf.*").stdout
    assert backups == foreign
    rendered = guest.ssh(f"head -n 1 {CONF}").stdout.strip()
    assert rendered == HEADER


def _postrouting() -> list[str]:
    return guest.ssh("iptables -t nat -S POSTROUTING").stdout.splitlines()


def _assert_host_rule_first() -> list[str]:
    """The seed's own MASQUERADE decides before keepsource's chain; returns
    the live POSTROUTING rules."""
    rules = _postrouting()
    seed = "-A POSTROUTING -s 172.16.0.0/24 -o lbext -j MASQUERADE"
    assert rules.index(seed) < rules.index("-A POSTROUTING -j KEEPSOURCE-POSTROUTING"), rules
    return rules


def test_the_hosts_own_nat_rule_still_decides_first(plan: lab.Plan) -> None:
    """The seed's own MASQUERADE (persisted by the host's own unit) stays ahead
    of keepsource's chain; only the narrow hairpin goes first."""
    rules = _assert_host_rule_first()
    assert rules[1] == "-A POSTROUTING -j KEEPSOURCE-HAIRPIN", rules
    # Nothing saved the host's live rule set.
    assert guest.ssh("test -e /etc/iptables/rules.v4 || echo none").stdout.strip() == "none"


def _served_by(plan: lab.Plan, worker: str, timeout: float = 15) -> float:
    """Seconds until host01 gets the page and IPVS holds only that worker."""
    addr = next(w.address for w in plan.workers if w.name == worker)
    vip, port = plan.settings.network.vip, plan.settings.node_port
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        servers = _pool(plan)
        rc, out = lab.curl(plan.clients[0].netns, f"http://{vip}:{port}/")
        if servers == {f"{addr}:{port}"} and rc == 0 and "Welcome to nginx" in out:
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"traffic did not move to {worker} within {timeout} s")


def test_moving_the_pod_moves_the_traffic_without_apply(plan: lab.Plan) -> None:
    state = lab.State.load()
    for worker in [plan.workers[-1].name, plan.workers[0].name]:
        state.pod = worker
        lab.set_pod(plan, state)
        print(f"traffic on {worker} after {_served_by(plan, worker):.1f} s")
