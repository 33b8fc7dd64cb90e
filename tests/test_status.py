"""``./ks status``: the IPVS table and the host's state joined with the stack's pools."""

from __future__ import annotations

import copy

from keepsource.facts import parse_ipvs_table
from keepsource.host import lb_host
from keepsource.settings import parse
from keepsource.stackfile import load_config
from keepsource.status import COMMAND, read_host, report

#: ``ipvsadm -Ln`` as the lab's guest prints it (kernel 6.1, ipvsadm 1.31).
IPVSADM = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
FWM  1802698753 rr
  -> 172.16.0.1:6443              Masq    1      3          1
FWM  1802698754 rr
  -> 172.16.0.12:30080            Masq    1      0          7
FWM  1802698755 rr
  -> 172.16.0.11:30053            Masq    1      0          0
  -> 172.16.0.12:30053            Masq    0      0          0
"""
ADDR = (
    "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
    "3: ext0    inet 192.168.0.1/24 brd 192.168.0.255 scope global ext0\n"
    "4: int0    inet 172.16.0.254/24 brd 172.16.0.255 scope global int0\n"
)


def _fake(out: str, rc: int = 0):  # type: ignore[no-untyped-def]
    seen: list[str] = []

    def run(command: str) -> tuple[int, str]:
        seen.append(command)
        return rc, out

    run.seen = seen  # type: ignore[attr-defined]
    return run


def test_the_table_parses() -> None:
    t = parse_ipvs_table(IPVSADM)
    assert [r.address for r in t["FWM 1802698754"]] == ["172.16.0.12:30080"]
    assert t["FWM 1802698753"][0].active == 3 and t["FWM 1802698754"][0].inactive == 7
    assert t["FWM 1802698755"][1].weight == 0


def test_the_report_joins_pools_and_the_table() -> None:
    s = parse(copy.deepcopy(load_config("local-services")))
    assert [v.fwmark for v in lb_host(s).pools] == [1802698753, 1802698754, 1802698755]
    run = _fake(f"@@ipvs\n{IPVSADM}@@keepalived\nactive\n@@addr\n{ADDR}")
    state = read_host("lb", run)
    assert run.seen == [COMMAND]  # type: ignore[attr-defined]
    text, ok = report(s, {"lb": state})
    lines = text.splitlines()
    assert lines[0] == "lb: keepalived active, holds the VIP 192.168.0.1"
    rows = {(ln.split()[0], ln.split()[2]): ln for ln in lines[2:]}
    assert "in pool" in rows[("apiserver", "master")] and rows[("apiserver", "master")].endswith(
        "3       1"
    )
    assert "out (check failing)" in rows[("web", "worker01")]
    assert "in pool" in rows[("web", "worker02")]
    assert "192.168.0.1:30053/udp" in rows[("dns", "worker01")]
    assert "weight 0" in rows[("dns", "worker02")]
    assert ok  # every pool has a server in it on the VIP's holder


def test_an_empty_pool_or_no_vip_is_not_ok() -> None:
    s = parse(copy.deepcopy(load_config("local-services")))
    empty = IPVSADM.split("FWM  1802698754")[0]
    _, ok = report(
        s, {"lb": read_host("lb", _fake(f"@@ipvs\n{empty}@@keepalived\nactive\n@@addr\n{ADDR}"))}
    )
    assert not ok
    no_vip = ADDR.replace("192.168.0.1/24", "192.168.0.7/24")
    text, ok = report(
        s,
        {"lb": read_host("lb", _fake(f"@@ipvs\n{IPVSADM}@@keepalived\nactive\n@@addr\n{no_vip}"))},
    )
    assert not ok and "held by no LB host" in text
    text, ok = report(s, {"lb": read_host("lb", _fake("ssh: connect refused", 255))})
    assert not ok and "lb: unreachable over SSH" in text
