"""verify's logic against scripted answers (the real thing runs in test_lab.py)."""

from __future__ import annotations

import hashlib
import shlex
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mockrun
from keepsource.facts import parse_ipvs
from keepsource.host import lb_host
from keepsource.render import gateway
from keepsource.render.keepalived import (
    APISERVER_FWMARK,
    WORKLOAD_FWMARK,
)
from keepsource.render.scripts import LB_NAME, LB_TYPE, STEP_NAMES, step_urn
from keepsource.stackfile import load
from keepsource.udp_probe import udp_program, udp_send_command
from keepsource.verify import (
    client_checks,
    lb_checks,
    repair_line,
    udp_command,
    vip_holder,
)

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
                if out is LOST:
                    return 255, "ssh: connect to host 127.0.0.1 port 2222: Connection refused"
                return (1, "") if out is FAIL else (0, out)
        return 1, ""

    return run


FAIL = "<rc 1>"
LOST = "<ssh failed>"
SWITCH = """\
-A KEEPSOURCE-SWITCH -d 192.168.0.1/32 -p tcp -m tcp --dport 6443 -j MARK --set-xmark 0x6b730001/0xffffffff
-A KEEPSOURCE-SWITCH -d 192.168.0.1/32 -p tcp -m tcp --dport 30080 -j MARK --set-xmark 0x6b730002/0xffffffff
"""
CONF_SHA = hashlib.sha256(lb_host(load("local")).keepalived_conf.encode()).hexdigest()
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
    "ipvsadm -Ln": f"up {APISERVER_FWMARK} 172.16.0.1:6443\n"
    f"up {WORKLOAD_FWMARK} 172.16.0.11:30080\ndown {WORKLOAD_FWMARK} 172.16.0.12:30080\n" + IPVSADM,
    # a relay on the LB: curl from the gateway address to the healthy worker, dropped
    "--interface 172.16.0.254 http://": "rc=28",
}


def test_lb_checks_pass_on_the_fixed_state() -> None:
    checks = lb_checks(load("local"), _lb(GOOD), settle_s=0.5)
    assert [c.ok for c in checks] == [True] * 11, [c.line() for c in checks]
    assert checks[-1].name.startswith("a relay on the LB (from 172.16.0.254) does not reach")


@pytest.mark.parametrize(("answer", "why"), [("rc=0", "curl exit 0"), (FAIL, "could not check")])
def test_a_relay_that_reaches_the_pod_or_an_unanswered_probe_fails(answer: str, why: str) -> None:
    """The policy admits the checkAddress only: a connection from the LB's
    gateway address that gets an answer fails the check, as does no answer."""
    key = "--interface 172.16.0.254 http://"
    checks = lb_checks(load("local"), _lb({**GOOD, key: answer}), settle_s=0.5)
    failed = [c for c in checks if not c.ok]
    assert [c.name.split(" (")[0] for c in failed] == ["a relay on the LB"], failed
    assert why in failed[0].line()


def test_without_a_check_address_no_relay_check_is_made() -> None:
    """Without network.checkAddress the checks come from the gateway address,
    which the policy admits: a relay from it cannot be told apart (the program
    warns at preview instead)."""
    s = load("local")
    s = s.model_copy(update={"network": s.network.model_copy(update={"check_address": None})})
    checks = lb_checks(s, _lb(GOOD), settle_s=0.5)
    assert not [c for c in checks if c.name.startswith("a relay")]


def test_each_pool_names_its_members_and_only_keepsources_workload_gets_a_relay_check() -> None:
    """A pool's service, looked up in one place: the apiserver's real servers
    and a workload's workers; the relay check only for a workload keepsource
    manages (dev-lb-only's is external: its policy is not keepsource's)."""
    for stack, relays in (("local", 1), ("dev-lb-only", 0)):
        names = [c.name for c in lb_checks(load(stack), _lb(GOOD), settle_s=0.5)]
        assert [n for n in names if n.startswith("IPVS ")] == [
            "IPVS 192.168.0.1:6443/tcp (apiserver) holds exactly the healthy real servers",
            "IPVS 192.168.0.1:30080 holds exactly the healthy workers",
        ], stack
        assert len([n for n in names if n.startswith("a relay on the LB")]) == relays, stack


def test_an_unreachable_lb_fails() -> None:
    checks = lb_checks(
        load("local"), _lb({**GOOD, "echo keepsource-reachable": FAIL}), settle_s=0.5
    )
    assert [c.ok for c in checks] == [False]


def test_a_check_the_lb_never_answered_does_not_pass() -> None:
    """The SSH connection drops on one command (haproxy's unit): the answer
    would read "not installed", a pass; no check passes then, the loss is named."""
    for key in ("systemctl cat haproxy.service", "systemctl is-active keepalived"):
        checks = lb_checks(load("local"), _lb({**GOOD, key: LOST}), settle_s=0.5)
        assert checks and not any(c.ok for c in checks), [c.line() for c in checks]
        assert checks[0].name == "the LB answered every check over SSH"
        assert key in checks[0].line()


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
        "ipvsadm -Ln": f"up {APISERVER_FWMARK} 172.16.0.1:6443\n"
        f"up {WORKLOAD_FWMARK} 172.16.0.12:30080\n" + IPVSADM,
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
    assert load("local").metrics is None  # every step but metrics
    want = [n for n in STEP_NAMES if n != "metrics"]
    assert names == sorted(step_urn("local", n).rsplit("::", 1)[1] for n in want)
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
    # One host that cannot be asked is not a host that holds nothing.
    check = vip_holder(s, {"lb1": lambda _: (255, "no route"), "lb2": master})
    assert not check.ok and "lb1: could not check (exit 255)" in check.line()


def test_a_pairs_checks_and_repairs_name_the_host() -> None:
    s = load("local-ha")
    lb2 = s.lb_nodes[1]
    conf_sha = hashlib.sha256(lb_host(s, lb2).keepalived_conf.encode()).hexdigest()
    answers = {
        **GOOD,
        "sha256sum < /etc/keepalived/keepalived.conf": f"{conf_sha}\n{conf_sha}",
        "systemctl is-active haproxy": "active",
        "systemctl is-active prometheus-node-exporter": "active",
        "ss -Hltn 'sport = :9100'": "172.16.0.253:9100",  # lb2's own internal address
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


# -- many services (issue 18): each service's pool and clients -----------------------------


def _services_lb() -> dict[str, str]:
    s = load("local-services")
    vss = lb_host(s).pools
    conf = hashlib.sha256(lb_host(s).keepalived_conf.encode()).hexdigest()
    table = "\n".join(
        f"FWM  {vs.fwmark} rr\n"
        + "".join(f"  -> {rs.address}:{rs.port}  Masq 1 0 0\n" for rs in vs.real_servers[:1])
        for vs in vss
    )
    up = "".join(
        f"up {vs.fwmark} {rs.address}:{rs.port}\n" for vs in vss for rs in vs.real_servers[:1]
    )
    switch = "\n".join(
        line
        for line in gateway.render_switch_rules(lb_host(s).pools).splitlines()
        if line.startswith("-A ")
    )
    return {
        **GOOD,
        "sha256sum < /etc/keepalived/keepalived.conf": f"{conf}\n{conf}",
        "iptables-save -t mangle": switch,
        "ipvsadm -Ln": up + table,
        "systemctl is-active prometheus-node-exporter": "active",
        "ss -Hltn 'sport = :9100'": "172.16.0.254:9100",
    }


def test_every_services_pool_is_checked_with_its_protocols_probe() -> None:
    s = load("local-services")
    commands: list[str] = []
    answers = _services_lb()

    def run(command: str) -> tuple[int, str]:
        commands.append(command)
        return _lb(answers)(command)

    checks = lb_checks(s, run, settle_s=0.5)
    pool_rows = [c for c in checks if c.name.startswith("IPVS ")]
    assert [c.name for c in pool_rows] == [
        "IPVS 192.168.0.1:6443/tcp (apiserver) holds exactly the healthy real servers",
        "IPVS 192.168.0.1:30080/tcp (web) holds exactly the healthy workers",
        "IPVS 192.168.0.1:30053/udp (dns) holds exactly the healthy workers",
    ]
    assert all(c.ok for c in checks), [c.line() for c in checks]
    probes = " ".join(c for c in commands if "ipvsadm -Ln" in c)
    assert "--interface 172.16.0.250" in probes  # TCP: curl from the check address
    assert "172.16.0.250 172.16.0.11 30053" in probes  # UDP: perl bound to it
    # One worker of the DNS pool out of IPVS while its check answers: that pool fails, alone.
    broken = {**answers, "ipvsadm -Ln": answers["ipvsadm -Ln"] + "up "
              f"{lb_host(s).pools[2].fwmark} 172.16.0.12:30053\n"}  # fmt: skip
    failed = [c.name for c in lb_checks(s, _lb(broken), settle_s=0.5) if not c.ok]
    assert failed == ["IPVS 192.168.0.1:30053/udp (dns) holds exactly the healthy workers"]
    # The exporter listening on every address (not only the internal one) fails, named.
    wide = {**answers, "ss -Hltn 'sport = :9100'": "*:9100"}
    failed_checks = [c for c in lb_checks(s, _lb(wide), settle_s=0.5) if not c.ok]
    assert [(c.name, c.repair) for c in failed_checks] == [
        ("the node exporter serves on 172.16.0.254:9100 only", ("metrics",))
    ]


def test_each_client_is_checked_against_each_services_own_clients() -> None:
    s = load("local-services")  # web admits host01 only, dns host02 only

    def client(http_ok: bool, dns_ok: bool) -> Callable[[str], tuple[int, str]]:
        def run(command: str) -> tuple[int, str]:
            if "/dev/udp/" in command:
                return (0, "") if dns_ok else (124, "")
            return (0, "<html>\nHTTP 200") if http_ok else (28, "")

        return run

    good = client_checks(s, client(True, False), client(False, True))
    assert [(c.name, c.ok) for c in good] == [
        ("host01 is served from http://192.168.0.1:30080/", True),
        ("host02 times out on http://192.168.0.1:30080/", True),
        ("host01 gets no answer from udp 192.168.0.1:30053 (dns)", True),
        ("host02 gets an answer from udp 192.168.0.1:30053 (dns)", True),
    ]
    swapped = client_checks(s, client(False, True), client(True, False))
    assert [c.ok for c in swapped] == [False] * 4


def test_the_udp_probe_tells_an_answer_from_silence_and_refusal() -> None:
    """udp_command under the real bash, against sockets on loopback: a DNS
    stand-in that answers (lab/dns.py), a socket that never replies, a closed port."""
    import socket
    import subprocess
    import threading

    from keepsource.settings.services import dns_query_payload
    from lab import dns

    payload = dns_query_payload("web.my-ns.svc.cluster.local")
    answering = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    answering.bind(("127.0.0.1", 0))
    port = answering.getsockname()[1]
    answering.close()
    log = Path(tempfile.mkdtemp()) / "dns.log"
    threading.Thread(target=dns.serve, args=("127.0.0.1", port, log, 120), daemon=True).start()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()

    def rc(p: int, source: str | None = None) -> int:
        # 3 s: an answer on a busy machine (CI with the lab beside it) is not silence
        cmd = udp_command("127.0.0.1", p, payload, timeout=3, source=source)
        return subprocess.run(["bash", "-c", cmd], timeout=20, check=False).returncode

    deadline = time.monotonic() + 5
    while rc(port) != 0 and time.monotonic() < deadline:  # the stand-in binds in its thread
        time.sleep(0.1)
    # bash's /dev/udp (clients), and perl bound to a source (the LB's check address)
    for source in (None, "127.0.0.2"):
        assert rc(port, source) == 0, source
        assert dns.peers(log.read_text())[-1] == (source or "127.0.0.1")
        assert rc(silent.getsockname()[1], source) == 124, source
        assert rc(closed_port, source) == 1, source
    silent.close()


@pytest.mark.parametrize("count", [1, 5])
@pytest.mark.parametrize("expect_reply", [True, False])
def test_every_variant_of_the_udp_sender_is_valid_perl(count: int, expect_reply: bool) -> None:
    import subprocess

    program = udp_program(count, expect_reply)
    done = subprocess.run(
        ["perl", "-c", "-e", program], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0 and "syntax OK" in done.stderr, done.stderr
    # verify's probe from a source is the one-datagram, one-reply variant, with its arguments.
    assert udp_command("10.0.0.1", 53, "ab", source="10.0.0.2") == (
        f"timeout 2 perl -e {shlex.quote(udp_program())} 10.0.0.2 10.0.0.1 53 ab"
    )


def test_the_udp_sender_sends_count_datagrams_of_the_payload_from_the_source() -> None:
    """Loopback only: a socket on 127.0.0.1 gets the N datagrams, each the
    payload, all from 127.0.0.2 (one socket, one port); with a reply wanted,
    the sender waits for it and exits 0."""
    import socket
    import subprocess

    payload = bytes.fromhex("0001abcdef")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(5)
        port = sink.getsockname()[1]
        for count, reply in ((5, False), (3, True), (1, False)):
            cmd = udp_send_command(
                "127.0.0.2", "127.0.0.1", port, payload.hex().upper(), count=count,
                expect_reply=reply, timeout=10, interval=0.01,
            )  # fmt: skip
            sender = subprocess.Popen(["bash", "-c", cmd])
            try:
                got = [sink.recvfrom(4096) for _ in range(count)]
                if reply:
                    sink.sendto(b"ok", got[-1][1])
                assert sender.wait(timeout=15) == 0, (count, reply)
            finally:
                sender.kill()
                sender.wait()
            assert [data for data, _ in got] == [payload] * count
            assert {peer[0] for _, peer in got} == {"127.0.0.2"}
            assert len({peer for _, peer in got}) == 1  # one socket, one source port
            sink.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sink.recvfrom(4096)  # exactly count, no more
            sink.settimeout(5)


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (("localhost", "127.0.0.1", 53, "ab"), "IPv4"),
        (("127.0.0.2", "127.0.0.1", 0, "ab"), "port"),
        (("127.0.0.2", "127.0.0.1", 53, "abc"), "hex"),
        (("127.0.0.2", "127.0.0.1", 53, "zz"), "hex"),
        (("127.0.0.2", "127.0.0.1", 53, "ab'; reboot"), "hex"),
        (("127.0.0.2", "127.0.0.1", 53, ""), "one at least"),
    ],
)
def test_the_udp_sender_takes_addresses_and_hex_only(args: tuple[Any, ...], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        udp_send_command(*args)
    with pytest.raises(ValueError, match="count"):
        udp_send_command("127.0.0.2", "127.0.0.1", 53, "ab", count=0)
