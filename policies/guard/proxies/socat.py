"""socat: ``socat TCP-LISTEN:PORT,... TCP:HOST:PORT`` (a relay, always terminating).

socat accepts the client's connection and opens its own toward the target:
the target sees socat's address. Its address keywords are case-insensitive;
options follow a comma.
"""

from __future__ import annotations

from guard.proxies.base import Backend, Hop

PROXY = "socat"
LISTEN = (
    "tcp-listen",
    "tcp4-listen",
    "tcp6-listen",
    "tcp-l",
    "tcp4-l",
    "tcp6-l",
    "openssl-listen",
    "ssl-l",
)
CONNECT = ("tcp", "tcp4", "tcp6", "tcp-connect", "tcp4-connect", "tcp6-connect", "openssl", "ssl")


def _address(arg: str) -> tuple[str, list[str]]:
    head = arg.split(",", 1)[0]
    kind, _, rest = head.partition(":")
    return kind.lower(), rest.split(":") if rest else []


def parse_argv(argv: list[str]) -> list[Hop]:
    """argv without the program name; options (-d, -v, -lf FILE) are skipped."""
    addrs = [a for a in argv if not a.startswith("-") or a == "-"]
    addrs = [a for a in addrs if ":" in a or a in ("-", "STDIO")]
    if len(addrs) < 2:
        return []
    first, second = _address(addrs[0]), _address(addrs[1])
    if first[0] in CONNECT and second[0] in LISTEN:
        first, second = second, first
    if first[0] not in LISTEN or second[0] not in CONNECT or len(second[1]) < 2:
        return []
    port = second[1][-1]
    host = ":".join(second[1][:-1]).strip("[]")
    listen = first[1][0] if first[1] else "?"
    return [
        Hop(
            PROXY,
            f"{addrs[0].split(',')[0]}",
            "terminating",
            (Backend(host, int(port) if port.isdigit() else None),),
            f"socat relays from port {listen}: it opens its own connection",
        )
    ]
