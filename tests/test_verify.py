"""verify's logic against scripted answers (the real thing runs in test_lab.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import mockrun
from keepsource.render.keepalived import APISERVER_FWMARK, WORKLOAD_FWMARK, render_keepalived
from keepsource.render.scripts import LB_NAME, LB_TYPE, STEP_NAMES, step_urn
from keepsource.stackfile import load
from keepsource.verify import client_checks, lb_checks, parse_ipvs, repair_line, vip_holder

IPVSADM = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
FWM  1802698753 rr
  -> 172.16.0.1:6443              Masq    1      0          0
FWM  1802698754 rr
  -> 172.16.0.11:30080            Masq    1      0          0
TCP  192.168.0.1:80 rr
  -> 172.16.0.12:80               Masq    1      0          0
"""


def test_parse_ipvs_reads_one_virtual_service() -> None:
    assert parse_ipvs(IPVSADM, "192.168.0.1", 30080, WORKLOAD_FWMARK) == {"172.16.0.11:30080"}
    assert parse_ipvs(IPVSADM, "192.168.0.1", 6443, APISERVER_FWMARK) == {"172.16.0.1:6443"}
    assert parse_ipvs(IPVSADM, "192.168.0.1", 30080) == set()  # no such TCP service
    assert parse_ipvs(IPVSADM, "192.168.0.1", 80) == {"172.16.0.12:80"}
    assert parse_ipvs(IPVSADM, "192.168.0.1", 1, 1) == set()


def _lb(answers: dict[str, str]) -> Callable[[str], tuple[int, str]]:
    def run(command: str) -> tuple[int, str]:
        for key, out in answers.items():
            if key in command:
                return (1, "") if out is FAIL else (0, out)
        return 1, ""

    return run


FAIL = "<rc 1>"
SWITCH = """\
-A KEEPSOURCE-SWITCH -d 192.168.0.1/32 -p tcp -m tcp --dport 6443 -j MARK --set-xmark 0x6b730001/0xffffffff
-A KEEPSOURCE-SWITCH -d 192.168.0.1/32 -p tcp -m tcp --dport 30080 -j MARK --set-xmark 0x6b730002/0xffffffff
"""
CONF_SHA = hashlib.sha256(
    render_keepalived(load("local"), load("local").node_port).encode()
).hexdigest()
GOOD = {
    "echo keepsource-reachable": "",
    # dpkg-query prints in its own order, not the arguments'
    "dpkg-query": "ipvsadm=install ok installed;keepalived=install ok installed;",
    "sha256sum < /etc/keepalived/keepalived.conf": f"{CONF_SHA}\n{CONF_SHA}",
    "systemctl is-active keepalived": "active",
    "systemctl is-enabled keepalived": "enabled",
    "systemctl cat haproxy.service": "",
    "systemctl is-active haproxy": "inactive",
    "systemctl is-enabled haproxy": "masked",
    "net-load --check": "",
    "systemctl is-enabled keepsource-net.service": "enabled",
    "iptables-save -t mangle": SWITCH,
    "sysctl -n net.ipv4.ip_forward": "1",
    "iptables-save -t nat": "-A POSTROUTING -j KEEPSOURCE-POSTROUTING\n"
    "-A KEEPSOURCE-POSTROUTING -s 172.16.0.0/24 ! -d 172.16.0.0/24 -j MASQUERADE",
    "ipvsadm -Ln": "up 172.16.0.11:30080\ndown 172.16.0.12:30080\n" + IPVSADM,
}


def test_lb_checks_pass_on_the_fixed_state() -> None:
    checks = lb_checks(load("local"), _lb(GOOD), settle_s=0.5)
    assert [c.ok for c in checks] == [True] * 9, [c.line() for c in checks]


def test_an_unreachable_lb_fails() -> None:
    checks = lb_checks(
        load("local"), _lb({**GOOD, "echo keepsource-reachable": FAIL}), settle_s=0.5
    )
    assert [c.ok for c in checks] == [False]


def test_haproxy_not_installed_counts_as_off() -> None:
    gone = {**GOOD, "systemctl cat haproxy.service": FAIL, "systemctl is-enabled haproxy": ""}
    checks = lb_checks(load("local"), _lb(gone), settle_s=0.5)
    assert all(c.ok for c in checks), [c.line() for c in checks]


def test_lb_checks_fail_on_each_broken_fact() -> None:
    broken = {
        "dpkg-query": "ipvsadm=deinstall ok config-files;keepalived=install ok installed;",
        "sha256sum < /etc/keepalived/keepalived.conf": f"{CONF_SHA}\nnone",  # not loaded
        "systemctl is-active haproxy": "active",
        "systemctl is-enabled haproxy": "disabled",  # stopped but not masked
        "net-load --check": FAIL,
        "iptables-save -t mangle": SWITCH.splitlines()[0],
        "sysctl -n net.ipv4.ip_forward": "0",
        "iptables-save -t nat": "",
        "ipvsadm -Ln": "up 172.16.0.12:30080\n" + IPVSADM,
    }
    for key, value in broken.items():
        checks = lb_checks(load("local"), _lb({**GOOD, key: value}), settle_s=0.5)
        assert sum(not c.ok for c in checks) == 1, key
        # Each broken fact names the steps that repair it.
        assert next(c.repair for c in checks if not c.ok), key


def test_drift_prints_the_pulumi_up_that_reruns_just_those_steps() -> None:
    s = load("local")
    haproxy_back = {**GOOD, "systemctl is-active haproxy": "active"}
    line = repair_line("local", lb_checks(s, _lb(haproxy_back), settle_s=0.5))
    urn = "urn:pulumi:local::keepsource::keepsource:lb:LoadBalancerHost$command:remote:Command"
    assert line == f"pulumi up -s local --replace '{urn}::lb-cutover'"
    no_forward = {**GOOD, "sysctl -n net.ipv4.ip_forward": "0", "net-load --check": FAIL}
    line = repair_line("local", lb_checks(s, _lb(no_forward), settle_s=0.5))
    assert line == f"pulumi up -s local --replace '{urn}::lb-gateway'"
    stale = {**no_forward, "sha256sum < /etc/keepalived/keepalived.conf": "0000\n0000"}
    line = repair_line("local", lb_checks(s, _lb(stale), settle_s=0.5))
    assert line is not None and [part.rsplit("::", 1)[-1] for part in line.split()[5::2]] == [
        "lb-gateway'",
        "lb-keepalived-config'",
        "lb-cutover'",
    ]
    assert repair_line("local", lb_checks(s, _lb(GOOD), settle_s=0.5)) is None


def test_step_urns_name_the_commands_the_program_declares() -> None:
    run = mockrun.run_stack("local")
    names = sorted(r.name for r in run.of_type("command:remote:Command"))
    assert names == sorted(step_urn("local", n).rsplit("::", 1)[1] for n in STEP_NAMES)
    lb = run.one(LB_TYPE)
    assert lb.name == LB_NAME


def test_client_checks_tell_page_from_timeout_and_refusal() -> None:
    s = load("local")
    page = (0, "<h1>any workload</h1>\nHTTP 200")
    timeout, refused = (28, "HTTP 000"), (7, "HTTP 000")
    assert [c.ok for c in client_checks(s, lambda _: page, lambda _: timeout)] == [True, True]
    assert [c.ok for c in client_checks(s, lambda _: page, lambda _: refused)] == [True, False]
    assert [c.ok for c in client_checks(s, lambda _: timeout, lambda _: page)] == [False, False]


def _addrs(*cidrs: str) -> Callable[[str], tuple[int, str]]:
    lines = [f"{i}: lbext    inet {c} scope global lbext" for i, c in enumerate(cidrs, 2)]
    return lambda _: (0, "\n".join(lines))


def test_a_pair_says_which_host_holds_the_vips() -> None:
    s = load("local-ha")
    master = _addrs("192.168.0.2/24", "192.168.0.1/24", "172.16.0.252/24", "172.16.0.254/24")
    backup = _addrs("192.168.0.3/24", "172.16.0.253/24")
    check = vip_holder(s, {"lb1": master, "lb2": backup})
    assert check.ok and "lb1 holds the VIP and the gateway" in check.name
    check = vip_holder(s, {"lb1": backup, "lb2": master})
    assert check.ok and "lb2 holds" in check.name
    # Both, neither, or split between the two: a failure.
    assert not vip_holder(s, {"lb1": master, "lb2": master}).ok
    assert not vip_holder(s, {"lb1": backup, "lb2": backup}).ok
    split = _addrs("192.168.0.3/24", "192.168.0.1/24")
    assert not vip_holder(s, {"lb1": split, "lb2": backup}).ok
    assert not vip_holder(s, {"lb1": lambda _: (255, "no route"), "lb2": backup}).ok


def test_a_pairs_checks_and_repairs_name_the_host() -> None:
    s = load("local-ha")
    lb2 = s.lb_nodes[1]
    conf_sha = hashlib.sha256(render_keepalived(s, s.node_port, lb2).encode()).hexdigest()
    answers = {
        **GOOD,
        "sha256sum < /etc/keepalived/keepalived.conf": f"{conf_sha}\n{conf_sha}",
        "systemctl is-active haproxy": "active",
    }
    checks = lb_checks(s, _lb(answers), settle_s=0.5, node=lb2)
    failed = [c for c in checks if not c.ok]
    assert [c.name for c in failed] == ["lb2: haproxy stopped, disabled and masked"]
    line = repair_line("local-ha", checks)
    assert line is not None and line.endswith("::lb2-cutover'")


def test_a_checks_line_never_passes_escape_sequences_to_the_terminal() -> None:
    from keepsource.verify import Check

    hostile = "active\x1b]0;owned\x07\x1b[2J\r\nsecond line\x9b31m"
    line = Check("keepalived active", False, hostile).line()
    assert line.startswith("FAIL  keepalived active: active")
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in line)
    assert "second line" in line and "\n" not in line
