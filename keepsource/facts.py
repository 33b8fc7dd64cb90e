"""Facts about an LB host, the way pyinfra keeps them: each fact is the shell
command that reads it and the pure function that parses its output into
typed values. verify, ``./ks status`` and the lab run a fact's ``command``
(through their own runners: SSH, ``sudo -n``) and give its output to its
``parse``.

* the IPVS table (``ipvsadm -Ln``): virtual service -> its real servers;
* the IPVS connections (``ipvsadm -Lnc``);
* the IPv4 addresses per interface (``ip -4 -o addr show``);
* a systemd unit's state (``systemctl is-active UNIT``, ``is-enabled``).

A parser leaves out what it does not recognise (headers, an error message
the runner merged in, other commands' lines around the fact's): it never
fails on an answer, and nothing in an unknown line is taken for a fact.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Interface
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Fact(Generic[T]):
    """A fact: the command that reads it, the function that parses its output."""

    command: str
    parse: Callable[[str], T]

    def read(self, run: Callable[[str], tuple[int, str]]) -> T:
        """Run the command with a keepsource runner ((exit code, output)) and
        parse the output, whatever the exit code."""
        return self.parse(run(self.command)[1])


# -- the IPVS table ---------------------------------------------------------------


@dataclass(frozen=True)
class Real:
    """One real server of a virtual service, as ``ipvsadm -Ln`` lists it."""

    address: str  # ip:port ([ip]:port for IPv6)
    forward: str  # Masq, Route, Tunnel or Local
    weight: int
    active: int
    inactive: int


#: Virtual service ("FWM 1802698754", "TCP 192.168.0.1:80", "UDP ...") -> its
#: real servers, in ipvsadm's order. An IPv6 fwmark service is "FWM N IPv6".
IpvsTable = dict[str, list[Real]]

_PROTOCOLS = ("TCP", "UDP", "SCTP", "FWM")
_NUMBER = re.compile(r"\d+")


def parse_ipvs_table(text: str) -> IpvsTable:
    """``ipvsadm -Ln`` (or ``-Ln -f N``, ``-Ln -t ...``): each virtual service
    with its real servers. A service line is ``PROT ADDR:PORT SCHED [persistent
    T [mask M]] [ops]`` or ``FWM  N [IPv6] SCHED ...``; a real server's line is
    ``  -> ADDR:PORT FORWARD WEIGHT ACTIVE INACTIVE``."""
    table: IpvsTable = {}
    current: str | None = None
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 2 and f[0] in _PROTOCOLS:
            ipv6 = f[0] == "FWM" and f[2:3] == ["IPv6"]
            current = f"{f[0]} {f[1]}" + (" IPv6" if ipv6 else "")
            table[current] = []
        elif (
            current is not None
            and len(f) >= 6
            and f[0] == "->"
            and re.match(r"[\d\[]", f[1]) is not None  # not the header's RemoteAddress:Port
            and all(_NUMBER.fullmatch(n) for n in f[3:6])
        ):
            table[current].append(Real(f[1], f[2], int(f[3]), int(f[4]), int(f[5])))
    return table


IPVS_TABLE = Fact("ipvsadm -Ln", parse_ipvs_table)


def fwmark_key(fwmark: int) -> str:
    """The table's key of an IPv4 fwmark service (keepalived's virtual servers)."""
    return f"FWM {fwmark}"


def ipvs_service(fwmark: int) -> Fact[IpvsTable]:
    """One fwmark service's part of the table (the same format, that service only)."""
    return Fact(f"ipvsadm -Ln -f {fwmark}", parse_ipvs_table)


def parse_ipvs(text: str, vip: str, port: int, fwmark: int | None = None) -> set[str]:
    """Real servers ('ip:port') of one virtual service in ``ipvsadm -Ln``
    output: the ``TCP vip:port`` service, or the ``FWM fwmark`` one when given."""
    table = parse_ipvs_table(text)
    wanted = [f"TCP {vip}:{port}"] + ([fwmark_key(fwmark)] if fwmark is not None else [])
    return {r.address for key in wanted for r in table.get(key, [])}


# -- the IPVS connections -----------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """One entry of ``ipvsadm -Lnc``."""

    protocol: str  # TCP, UDP, SCTP; IP for a persistence template
    expires: int  # seconds left
    state: str  # ESTABLISHED, SYN_RECV, FIN_WAIT, ...; UDP; NONE (a template)
    source: str  # the client, ip:port ([ip]:port for IPv6)
    virtual: str  # ip:port (a fwmark service's template: the mark as an address, port 0)
    destination: str  # the real server, ip:port


_EXPIRES = re.compile(r"(\d+):(\d\d)")


def parse_ipvs_connections(text: str) -> list[Connection]:
    """``ipvsadm -Lnc``: ``PRO MM:SS STATE SOURCE VIRTUAL DESTINATION`` per
    connection after two header lines (``--persistent-conn`` adds two columns,
    left out here)."""
    found = []
    for line in text.splitlines():
        f = line.split()
        m = _EXPIRES.fullmatch(f[1]) if len(f) >= 6 else None
        if m is not None:
            expires = int(m[1]) * 60 + int(m[2])
            found.append(Connection(f[0], expires, f[2], f[3], f[4], f[5]))
    return found


IPVS_CONNECTIONS = Fact("ipvsadm -Lnc", parse_ipvs_connections)


# -- the addresses --------------------------------------------------------------------

#: Interface name -> its IPv4 addresses with their prefix, in ``ip``'s order.
Addresses = dict[str, list[IPv4Interface]]


def parse_ipv4_addresses(text: str) -> Addresses:
    """``ip -4 -o addr show``: one line per address, ``N: IFNAME inet ADDR/LEN
    [brd B] scope S [LABEL]\\ valid_lft ...`` (a point-to-point address,
    ``inet ADDR peer P/LEN``, counts as ADDR/32)."""
    found: Addresses = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 4 and f[2] == "inet":
            try:
                address = IPv4Interface(f[3])
            except ValueError:
                continue
            found.setdefault(f[1], []).append(address)
    return found


IPV4_ADDRESSES = Fact("ip -4 -o addr show", parse_ipv4_addresses)


def ips(addresses: Addresses) -> set[str]:
    """Every address of every interface, without its prefix."""
    return {str(a.ip) for on_one in addresses.values() for a in on_one}


# -- systemd units ----------------------------------------------------------------------


def parse_unit_state(text: str) -> str:
    """``systemctl is-active UNIT`` or ``is-enabled UNIT``: the state it
    printed (its last line: active, inactive, failed, ...; enabled, masked,
    ...), "unknown" when it printed nothing."""
    lines = text.strip().splitlines()
    return lines[-1].strip() if lines else "unknown"


def unit_active(unit: str) -> Fact[str]:
    return Fact(f"systemctl is-active {unit}", parse_unit_state)


def unit_enabled(unit: str) -> Fact[str]:
    return Fact(f"systemctl is-enabled {unit}", parse_unit_state)
