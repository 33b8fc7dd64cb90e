"""keepsource.facts: each fact's parser fed what its command prints.

``ip -4 -o addr show`` was captured on this machine and on the lab's guest;
this machine has no IPVS (nor ipvsadm) and no systemd, so the IPVS outputs
are the lab guest's (the fixtures of test_status and test_verify: kernel 6.1,
ipvsadm 1.31) and, for the cases the lab never makes (no real servers, UDP,
persistence, IPv6, the connection list), ipvsadm's own formats
(``print_title``, ``print_service_entry``: ``"  -> %-28s %-7s %-6d %-10u
%-10u"``; ``list_conn``, ``print_conn``: ``"%-3s %-6s %-11s %-18s %-18s %s"``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from keepsource import facts
from keepsource.facts import Connection, Real
from keepsource.render.keepalived import APISERVER_FWMARK, WORKLOAD_FWMARK
from tests.conftest import require_tool
from tests.test_status import IPVSADM

# -- the IPVS table ----------------------------------------------------------------------

#: ``ipvsadm -Ln`` as the lab's guest prints it: keepalived's fwmark services, one real
#: server at weight 0 (its check failing: keepalived's alpha).
LAB_TABLE = IPVSADM

#: The cases the lab never makes, in ipvsadm's format: a service with no real
#: server, a persistent UDP service with a netmask, direct routing and a local
#: real server, one-packet scheduling, IPv6 services (``[addr]:port``, and a
#: fwmark service marked ``IPv6``), SCTP.
AWKWARD_TABLE = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  192.168.0.1:80 wlc
  -> 10.0.0.11:80                 Route   1      12         40
  -> 127.0.0.1:80                 Local   2      0          0
TCP  192.168.0.1:443 rr
UDP  192.168.0.1:53 rr persistent 50 mask 255.255.255.0
  -> 10.0.0.11:53                 Masq    1      0          5
UDP  192.168.0.1:514 sh ops
  -> 10.0.0.12:514                Tunnel  100    0          0
SCTP 192.168.0.1:3868 rr
  -> 10.0.0.13:3868               Masq    1      1          0
TCP  [2001:db8::1]:80 rr
  -> [2001:db8::11]:80            Masq    1      0          2
FWM  7 IPv6 wlc
  -> [2001:db8::12]:0             Route   1      0          0
FWM  7 wlc
  -> 10.0.0.14:0                  Route   1      0          0
"""


def test_the_lab_table_parses() -> None:
    t = facts.IPVS_TABLE.parse(LAB_TABLE)
    assert list(t) == ["FWM 1802698753", "FWM 1802698754", "FWM 1802698755"]
    assert t["FWM 1802698753"] == [Real("172.16.0.1:6443", "Masq", 1, 3, 1)]
    assert t["FWM 1802698754"] == [Real("172.16.0.12:30080", "Masq", 1, 0, 7)]
    assert [(r.address, r.weight) for r in t["FWM 1802698755"]] == [
        ("172.16.0.11:30053", 1),
        ("172.16.0.12:30053", 0),
    ]
    assert facts.IPVS_TABLE.command == "ipvsadm -Ln"


def test_the_awkward_table_parses() -> None:
    t = facts.parse_ipvs_table(AWKWARD_TABLE)
    assert t["TCP 192.168.0.1:80"] == [
        Real("10.0.0.11:80", "Route", 1, 12, 40),
        Real("127.0.0.1:80", "Local", 2, 0, 0),
    ]
    assert t["TCP 192.168.0.1:443"] == []  # a service with no real server is still listed
    assert t["UDP 192.168.0.1:53"] == [Real("10.0.0.11:53", "Masq", 1, 0, 5)]
    assert t["UDP 192.168.0.1:514"] == [Real("10.0.0.12:514", "Tunnel", 100, 0, 0)]
    assert t["SCTP 192.168.0.1:3868"] == [Real("10.0.0.13:3868", "Masq", 1, 1, 0)]
    assert t["TCP [2001:db8::1]:80"] == [Real("[2001:db8::11]:80", "Masq", 1, 0, 2)]
    # The same mark in both families: two services, never one merged.
    assert t["FWM 7 IPv6"] == [Real("[2001:db8::12]:0", "Route", 1, 0, 0)]
    assert t["FWM 7"] == [Real("10.0.0.14:0", "Route", 1, 0, 0)]
    assert len(t) == 8


def test_one_fwmark_service() -> None:
    """``ipvsadm -Ln -f N``: the titles and that service, no version line."""
    fact = facts.ipvs_service(WORKLOAD_FWMARK)
    assert fact.command == f"ipvsadm -Ln -f {WORKLOAD_FWMARK}"
    out = (
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        f"FWM  {WORKLOAD_FWMARK} rr\n"
        "  -> 172.16.0.11:30080            Masq    1      0          0\n"
        "  -> 172.16.0.12:30080            Masq    1      2          0\n"
    )
    t = fact.parse(out)
    assert [r.address for r in t[f"FWM {WORKLOAD_FWMARK}"]] == [
        "172.16.0.11:30080",
        "172.16.0.12:30080",
    ]


@pytest.mark.parametrize(
    "out",
    [
        "",
        # no IPVS in the kernel (this machine's)
        "Can't initialize ipvs: Protocol not available\n"
        "Are you sure that IP Virtual Server is built in the kernel or as module?\n",
        # IPVS loaded, no service yet
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        # -f N of a mark with no service
        "Service not defined\n",
        # without -n: names, no address to take
        "TCP  lb.example:http wlc\n  -> web1.example:http    Masq    1      0          0\n",
    ],
)
def test_no_table_is_an_empty_one(out: str) -> None:
    t = facts.parse_ipvs_table(out)
    assert all(reals == [] for reals in t.values())


def test_the_table_among_other_commands_lines() -> None:
    """verify runs the pool's probes and the table in one command: the probes'
    ``up FWMARK ADDR`` lines are no part of the table."""
    out = (
        f"up {APISERVER_FWMARK} 172.16.0.1:6443\n"
        f"down {WORKLOAD_FWMARK} 172.16.0.11:30080\n" + LAB_TABLE
    )
    assert facts.parse_ipvs_table(out) == facts.parse_ipvs_table(LAB_TABLE)


def test_one_services_real_servers() -> None:
    assert facts.parse_ipvs(LAB_TABLE, "192.168.0.1", 30080, WORKLOAD_FWMARK) == {
        "172.16.0.12:30080"
    }
    assert facts.parse_ipvs(AWKWARD_TABLE, "192.168.0.1", 80) == {"10.0.0.11:80", "127.0.0.1:80"}
    assert facts.parse_ipvs(AWKWARD_TABLE, "192.168.0.1", 443) == set()
    assert facts.parse_ipvs(AWKWARD_TABLE, "192.168.0.1", 53) == set()  # UDP: not a TCP service


# -- the IPVS connections ----------------------------------------------------------------

#: ``ipvsadm -Lnc`` on the pair's backup: connections synced from the master
#: (NAT to the workers through the fwmark services), a UDP one, a persistence
#: template (protocol IP, state NONE; a fwmark service's: the mark as the
#: virtual address, 0x6b730002 = 107.115.0.2), an IPv6 one.
CONNECTIONS = """IPVS connection entries
pro expire state       source             virtual            destination
TCP 14:59  ESTABLISHED 192.168.0.10:53212 192.168.0.1:30080  172.16.0.11:30080
TCP 01:57  FIN_WAIT    192.168.0.10:53208 192.168.0.1:30080  172.16.0.12:30080
TCP 00:59  SYN_RECV    192.168.0.99:40002 192.168.0.1:30080  172.16.0.12:30080
UDP 04:58  UDP         192.168.0.11:40111 192.168.0.1:30053  172.16.0.11:30053
IP  05:59  NONE        192.168.0.10:0     107.115.0.2:0      172.16.0.11:0
TCP 120:00 ESTABLISHED [2001:db8::5]:40000 [2001:db8::1]:80   [2001:db8::11]:80
"""


def test_the_connections_parse() -> None:
    got = facts.IPVS_CONNECTIONS.parse(CONNECTIONS)
    assert facts.IPVS_CONNECTIONS.command == "ipvsadm -Lnc"
    assert got[0] == Connection(
        "TCP", 899, "ESTABLISHED", "192.168.0.10:53212", "192.168.0.1:30080", "172.16.0.11:30080"
    )
    assert [c.state for c in got] == [
        "ESTABLISHED",
        "FIN_WAIT",
        "SYN_RECV",
        "UDP",
        "NONE",
        "ESTABLISHED",
    ]
    assert [c.expires for c in got] == [899, 117, 59, 298, 359, 7200]
    assert got[4].protocol == "IP" and got[4].virtual == "107.115.0.2:0"
    assert got[5].source == "[2001:db8::5]:40000"
    assert "192.168.0.99:40002" in {c.source for c in got}
    assert "192.168.0.98:40001" not in {c.source for c in got}


def test_no_connections() -> None:
    header = "IPVS connection entries\npro expire state       source   virtual    destination\n"
    assert facts.parse_ipvs_connections(header) == []
    assert facts.parse_ipvs_connections("cannot open file /proc/net/ip_vs_conn\n") == []
    assert facts.parse_ipvs_connections("") == []


def test_persistent_conn_columns_are_left_out() -> None:
    """``--persistent-conn`` adds the persistence engine's name and data."""
    line = "UDP 02:59  UDP         10.0.0.1:5060      192.168.0.1:5060   10.0.0.2:5060      sip abc"
    assert facts.parse_ipvs_connections(line) == [
        Connection("UDP", 179, "UDP", "10.0.0.1:5060", "192.168.0.1:5060", "10.0.0.2:5060")
    ]


# -- the addresses ---------------------------------------------------------------------------

#: ``ip -4 -o addr show`` on this machine (captured).
HERE = (
    "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
    "4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever"
    " preferred_lft forever\n"
)
#: On the pair's master: its own addresses and keepalived's (the VIP, the
#: nodes' gateway) on the same interfaces; a labelled secondary; a tunnel's
#: point-to-point address.
MASTER = (
    "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
    "2: lbext    inet 192.168.0.2/24 brd 192.168.0.255 scope global lbext\\       valid_lft"
    " forever preferred_lft forever\n"
    "2: lbext    inet 192.168.0.1/24 scope global secondary lbext\\       valid_lft forever"
    " preferred_lft forever\n"
    "3: lbint    inet 172.16.0.252/24 brd 172.16.0.255 scope global lbint\\       valid_lft"
    " forever preferred_lft forever\n"
    "3: lbint    inet 172.16.0.254/24 scope global secondary lbint:gw\\       valid_lft forever"
    " preferred_lft forever\n"
    "9: tun0    inet 10.8.0.1 peer 10.8.0.2/32 scope global tun0\\       valid_lft forever"
    " preferred_lft forever\n"
)


def test_the_addresses_parse() -> None:
    assert facts.IPV4_ADDRESSES.parse(HERE) == {
        "lo": [IPv4Interface("127.0.0.1/8")],
        "eth0": [IPv4Interface("192.0.2.2/24")],
    }
    got = facts.parse_ipv4_addresses(MASTER)
    assert [str(a) for a in got["lbext"]] == ["192.168.0.2/24", "192.168.0.1/24"]
    assert [str(a) for a in got["lbint"]] == ["172.16.0.252/24", "172.16.0.254/24"]
    assert got["tun0"] == [IPv4Interface("10.8.0.1/32")]
    assert facts.ips(got) == {
        "127.0.0.1",
        "192.168.0.2",
        "192.168.0.1",
        "172.16.0.252",
        "172.16.0.254",
        "10.8.0.1",
    }


def test_no_addresses() -> None:
    assert facts.parse_ipv4_addresses("") == {}
    assert facts.parse_ipv4_addresses("Cannot open netlink socket: Permission denied\n") == {}
    # ip -6 output, had it been asked: no IPv4 address in it
    six = "1: lo    inet6 ::1/128 scope host \\       valid_lft forever preferred_lft forever\n"
    assert facts.parse_ipv4_addresses(six) == {}


def test_the_addresses_of_this_machine() -> None:
    """The command as it runs here: loopback's address is among them."""
    ip = require_tool("ip")
    argv = [ip, *facts.IPV4_ADDRESSES.command.split()[1:]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)
    got = facts.IPV4_ADDRESSES.parse(done.stdout)
    assert IPv4Interface("127.0.0.1/8") in got.get("lo", [])
    assert facts.ips(got) == {w.split("/")[0] for w in done.stdout.split() if "." in w and "/" in w}


# -- systemd units ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("out", "state"),
    [
        ("active\n", "active"),
        ("inactive\n", "inactive"),
        ("failed\n", "failed"),
        ("activating\n", "activating"),
        ("enabled\n", "enabled"),
        ("masked\n", "masked"),
        ("", "unknown"),
        # this machine (no systemd), stderr merged as the runners merge it
        (
            "System has not been booted with systemd as init system (PID 1). Can't operate.\n"
            "Failed to connect to bus: Host is down\n",
            "Failed to connect to bus: Host is down",
        ),
    ],
)
def test_a_units_state(out: str, state: str) -> None:
    assert facts.parse_unit_state(out) == state


def test_the_unit_commands() -> None:
    assert facts.unit_active("keepalived").command == "systemctl is-active keepalived"
    assert facts.unit_enabled("haproxy").command == "systemctl is-enabled haproxy"
    fact = facts.unit_active("keepalived")
    assert fact.read(lambda command: (0, "active\n" if "keepalived" in command else "")) == "active"
    assert fact.read(lambda _: (3, "inactive\n")) == "inactive"


# -- lab/measure.py's poller: the table per poll, parsed here --------------------------------


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_the_pollers_tables_parse_per_poll(tmp_path: Path, shell: str) -> None:
    """The guest-side loop as it runs (a stand-in ipvsadm on PATH): each poll
    prints the fwmark service's table, then the marker with the guest's times."""
    from lab import measure

    path = shutil.which(shell)
    assert path is not None
    fake = tmp_path / "ipvsadm"
    fake.write_text(
        "#!/bin/sh\n"
        f'[ "$*" = "-Ln -f {WORKLOAD_FWMARK}" ] || exit 2\n'
        "echo 'Prot LocalAddress:Port Scheduler Flags'\n"
        "echo '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn'\n"
        f"echo 'FWM  {WORKLOAD_FWMARK} rr'\n"
        "echo '  -> 172.16.0.11:30080            Masq    1      0          0'\n"
        "echo '  -> 172.16.0.12:30080            Masq    1      0          0'\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    done = subprocess.run(
        [path, "-c", measure._poller(rounds=3)],
        input="GO\n",
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=True,
    )
    got = list(measure.polls(done.stdout.splitlines(keepends=True)))
    assert len(got) == 3
    assert all(servers == {"172.16.0.11:30080", "172.16.0.12:30080"} for _, servers in got)
    times = [t for t, _ in got]
    assert times == sorted(times) and 0 <= times[0] < 5


def test_a_poll_without_the_service_has_no_servers() -> None:
    from lab import measure

    lines = ["@@poll 100.50 100.00\n", "Service not defined\n", "@@poll 100.75 100.00\n"]
    assert list(measure.polls(lines)) == [(0.5, set()), (0.75, set())]
