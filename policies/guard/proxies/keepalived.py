"""keepalived / LVS: virtual servers, their forwarding method and checks.

IPVS forwards packets: with ``lvs_method`` NAT (the default), DR or TUN the
real server sees the client's own address. The health checks, though, come
from the LB itself: from ``bindto`` when a check sets it, else from the LB's
address on the real server's network, which the config does not say.
The old keyword ``lb_kind`` is read like ``lvs_method``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from guard.proxies.base import Backend, ConfigError, Hop

PROXY = "keepalived/LVS"
CHECKS = ("TCP_CHECK", "HTTP_GET", "SSL_GET", "SMTP_CHECK", "DNS_CHECK", "MISC_CHECK", "BFD_CHECK")


@dataclass
class Node:
    words: list[str]
    children: list[Node] = field(default_factory=list)

    def first(self, keyword: str) -> list[str] | None:
        for c in self.children:
            if c.words and c.words[0] == keyword:
                return c.words[1:]
        return None


def tree(text: str) -> list[Node]:
    root = Node([])
    stack = [root]
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split("!", 1)[0]
        line = line.replace("{", " { ").replace("}", " } ")
        words: list[str] = []
        for w in line.split():
            if w == "{":
                node = Node(words)
                stack[-1].children.append(node)
                stack.append(node)
                words = []
            elif w == "}":
                if words:
                    stack[-1].children.append(Node(words))
                    words = []
                if len(stack) == 1:
                    raise ConfigError(f"line {n}: unbalanced '}}'")
                stack.pop()
            else:
                words.append(w)
        if words:
            stack[-1].children.append(Node(words))
    if len(stack) != 1:
        raise ConfigError("a block is not closed")
    return root.children


def parse(text: str) -> list[Hop]:
    hops = []
    for vs in tree(text):
        if not vs.words or vs.words[0] != "virtual_server":
            continue
        label = " ".join(vs.words[1:])
        method = ((vs.first("lvs_method") or vs.first("lb_kind") or ["NAT"])[0]).upper()
        vport = int(vs.words[2]) if len(vs.words) > 2 and vs.words[2].isdigit() else None
        backends = []
        sources: set[str] = set()
        through = False
        unknown_source = False
        for rs in vs.children:
            if not rs.words or rs.words[0] != "real_server" or len(rs.words) < 2:
                continue
            port = int(rs.words[2]) if len(rs.words) > 2 and rs.words[2].isdigit() else vport
            backends.append(Backend(rs.words[1], port))
            for chk in rs.children:
                if not chk.words or chk.words[0] not in CHECKS or chk.words[0] == "MISC_CHECK":
                    continue
                cport = chk.first("connect_port")
                if cport is None or (cport and cport[0].isdigit() and int(cport[0]) == port):
                    through = True
                src = chk.first("bindto") or chk.first("bind_to")
                if src:
                    sources.add(src[0])
                else:
                    unknown_source = True
        if method not in ("NAT", "DR", "TUN"):
            raise ConfigError(f"virtual_server {label}: unknown lvs_method {method}")
        hops.append(
            Hop(
                PROXY,
                f"virtual_server {label}",
                "preserving",
                tuple(backends),
                f"LVS {method} keeps the client address",
                tuple(sorted(sources)),
                through,
                unknown_source,
            )
        )
    return hops
