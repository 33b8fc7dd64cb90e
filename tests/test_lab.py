"""The local lab, for real: a Debian guest under QEMU, namespaces, SSH.

Needs root, qemu-system-x86 and debootstrap (run-tests installs them). The
tests share one lab and run in file order: the fault, an apply cut mid-way,
a full apply, idempotence, a refused config, moving the pod, a reboot.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from keepsource.stackfile import PROJECT_ROOT, load_config
from keepsource.verify import parse_ipvs

pytestmark = pytest.mark.lab

_MISSING = [t for t in ("qemu-system-x86_64", "debootstrap", "ip") if shutil.which(t) is None]
if os.geteuid() != 0 or _MISSING:
    pytest.skip(
        f"lab tests need root and {_MISSING or 'the lab tools'} (run `sudo ./run-tests`)",
        allow_module_level=True,
    )

from lab import __main__ as lab  # noqa: E402
from lab import driver, guest, net  # noqa: E402

EXPECTED_STEPS = 5


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
        "sha256sum /etc/keepalived/keepalived.conf /etc/iptables/rules.v4 "
        "/etc/iptables/keepsource.rules.v4 /etc/sysctl.d/90-keepsource-gateway.conf; "
        "systemctl is-active keepalived haproxy; systemctl is-enabled keepalived haproxy; "
        "systemctl show -p MainPID --value keepalived; "
        "iptables-save | sed -e '/^#/d' -e 's/\\[[0-9]*:[0-9]*\\]$//'; "
        "ipvsadm -Ln | awk '{print $1, $2}'; sysctl -n net.ipv4.ip_forward"
    )
    done = guest.ssh(cmd, timeout=60)
    return done.stdout


def _apply(plan: lab.Plan, cut: tuple[str, float] | None = None) -> list[driver.Result]:
    return lab.apply(plan, cut).results


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


def test_apply_cut_midway_then_again_converges(plan: lab.Plan) -> None:
    cut = _apply(plan, cut=("lb-packages", 6.0))
    assert cut[-1].name == "lb-packages" and cut[-1].rc != 0
    assert "connection cut" in cut[-1].output
    results = _apply(plan)
    assert [r.rc for r in results] == [0] * EXPECTED_STEPS, [(r.name, r.output) for r in results]
    assert lab.verify() == 0


def test_second_apply_changes_nothing(plan: lab.Plan) -> None:
    before = _snapshot()
    results = _apply(plan)
    assert [r.rc for r in results] == [0] * EXPECTED_STEPS
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
    assert [r.rc for r in results] == [0] * EXPECTED_STEPS, [(r.name, r.output) for r in results]
    assert [r.name for r in results if r.changed] == []
    assert _snapshot() == before


def test_refused_keepalived_conf_never_goes_live(plan: lab.Plan) -> None:
    step = next(s for s in driver.plan(lab.STACK) if s.name == "lb-keepalived-config")
    assert step.stdin is not None and " retry 1\n" in step.stdin
    bad = driver.Planned(
        **{**step.__dict__, "stdin": step.stdin.replace(" retry 1\n", " ng_get_retry 1\n", 1)}
    )
    before = _snapshot()
    results = driver.apply([bad], lab._driver_ssh)
    assert results[0].rc != 0
    assert "keepalived -t rejected the new config" in results[0].output
    assert "ng_get_retry" in results[0].output  # the tool's own message names the keyword
    assert _snapshot() == before  # same config, same service (same PID), same IPVS table


def _served_by(plan: lab.Plan, worker: str, timeout: float = 15) -> float:
    """Seconds until host01 gets the page and IPVS holds only that worker."""
    addr = next(w.address for w in plan.workers if w.name == worker)
    vip, port = plan.settings.network.vip, plan.settings.node_port
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        servers = parse_ipvs(guest.ssh("ipvsadm -Ln", timeout=20).stdout, str(vip), port)
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
    assert lab.verify() == 0


def test_end_state_holds_after_reboot(plan: lab.Plan) -> None:
    times = lab.reboot()
    print(f"reboot: {times}")
    assert lab.verify() == 0
    results = _apply(plan)
    assert [r.name for r in results if r.changed or r.rc != 0] == []


def test_verify_fails_when_the_end_state_breaks(plan: lab.Plan) -> None:
    """verify can fail: with haproxy back on it says so and exits non-zero."""
    guest.ssh("systemctl enable --now haproxy", timeout=60)
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "keepsource",
                "--project",
                str(PROJECT_ROOT),
                "verify",
                lab.STACK,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 1
        assert "FAIL  haproxy inactive and disabled" in done.stdout
    finally:
        guest.ssh("systemctl disable --now haproxy", timeout=60)
