"""UDP datagrams from a given source address, as one shell command line.

bash's ``/dev/udp`` cannot bind a source address; perl can, and perl-base is
Essential in Debian (every LB and lab guest has it; ``Socket`` is part of it).
verify's pool probe (one datagram from the LB's check address, then a reply)
and the lab's forged IPVS sync messages (a few datagrams to the sync group,
no reply) are the same program: :func:`udp_send_command`.
"""

from __future__ import annotations

import ipaddress
import re
import shlex

#: The socket, bound to ``$ARGV[0]`` and connected to ``$ARGV[1]:$ARGV[2]``
#: (connected: an ICMP port unreachable fails the next send or the recv).
_OPEN = (
    "use Socket; socket(my $s, PF_INET, SOCK_DGRAM, 0) or exit 3; "
    "bind($s, pack_sockaddr_in(0, inet_aton($ARGV[0]))) or exit 3; "
    "connect($s, pack_sockaddr_in($ARGV[2], inet_aton($ARGV[1]))) or exit 3; "
)
#: One datagram of the hex payload ``$ARGV[3]``.
_SEND = 'send($s, pack("H*", $ARGV[3]), 0) or exit 1; '
#: ``$ARGV[4]`` datagrams, ``$ARGV[5]`` s apart.
_SEND_MANY = (
    "for my $i (1..$ARGV[4]) { select(undef, undef, undef, $ARGV[5]) if $i > 1; " + _SEND + "} "
)
_REPLY = "defined(recv($s, my $r, 4096, 0)) or exit 1; exit 0"

#: At least one byte: perl's send of an empty datagram returns 0, read as a failure.
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


def udp_program(count: int = 1, expect_reply: bool = True) -> str:
    """The perl program of :func:`udp_send_command` (its arguments: source,
    destination, port, payload hex; with ``count`` > 1, count and interval)."""
    return _OPEN + (_SEND if count == 1 else _SEND_MANY) + (_REPLY if expect_reply else "exit 0")


def udp_send_command(
    source: str,
    dest: str,
    port: int,
    payload_hex: str,
    count: int = 1,
    expect_reply: bool = True,
    timeout: float = 2,
    interval: float = 0.05,
) -> str:
    """A shell command line that sends ``count`` datagrams of ``payload_hex``
    (hex, at least one byte) from ``source`` to ``dest:port``, ``interval`` s
    apart; with ``expect_reply``, then waits for one reply. All of it within
    ``timeout`` s. Its exit status: 0 sent (and, with ``expect_reply``,
    answered); 124 no reply in time (``timeout``'s); 1 refused (an ICMP port
    unreachable) or a send failed; 3 the socket could not be made (bound to
    ``source``, connected to ``dest``). ``dest`` may be a multicast group
    (IPVS sync: 224.0.0.81): the interface is then the one holding ``source``."""
    for address in (source, dest):
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise ValueError(f"{address!r} is not an IPv4 address (never a name)") from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not a UDP port")
    if _HEX.fullmatch(payload_hex) is None:
        raise ValueError(f"payload {payload_hex!r} is not hex (two digits a byte, one at least)")
    if count < 1 or interval < 0:
        raise ValueError(f"count {count} must be at least 1, interval {interval} not negative")
    args = [source, dest, str(port), payload_hex]
    args += [str(count), f"{interval:g}"] if count > 1 else []
    program = shlex.quote(udp_program(count, expect_reply))
    return f"timeout {timeout:g} perl -e {program} {' '.join(shlex.quote(a) for a in args)}"
