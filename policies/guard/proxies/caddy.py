"""Caddy: ``reverse_proxy`` in a Caddyfile (own small parser) or in JSON config.

Caddy ends the client's connection (HTTP, and layer4 ``proxy`` too) and has no
transparent mode. The Caddyfile is read as Caddy's lexer reads it: tokens
split on blanks, quotes and backticks group, ``#`` starts a comment at a token
start, ``{``/``}`` open and close blocks; site blocks, ``handle``/``route``
nesting and ``reverse_proxy`` with upstreams inline or in ``to`` lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from guard.proxies.base import Backend, ConfigError, Hop, split_hostport

PROXY = "Caddy"


def lex(text: str) -> list[list[str]]:
    """Lines of tokens; braces are their own tokens."""
    lines: list[list[str]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        toks: list[str] = []
        cur = ""
        quote = ""
        started = False
        for ch in raw:
            if quote:
                if ch == quote:
                    quote = ""
                else:
                    cur += ch
                continue
            if ch in '"`':
                quote = ch
                started = True
            elif ch == "#" and not started:
                break
            elif ch in " \t":
                if started:
                    toks.append(cur)
                    cur, started = "", False
            else:
                cur += ch
                started = True
        if quote:
            raise ConfigError(f"line {n}: unterminated quote")
        if started:
            toks.append(cur)
        lines.append(toks)
    return lines


@dataclass
class Block:
    head: list[str]
    children: list[Block] = field(default_factory=list)


def blocks(text: str) -> list[Block]:
    root = Block([])
    stack = [root]
    for toks in lex(text):
        if not toks:
            continue
        opens = toks[-1] == "{"
        closes = toks[0] == "}"
        if closes:
            if len(stack) == 1:
                raise ConfigError("unbalanced '}'")
            stack.pop()
            toks = toks[1:]
            if not toks:
                continue
        head = toks[:-1] if opens else toks
        node = Block(head)
        stack[-1].children.append(node)
        if opens:
            stack.append(node)
    if len(stack) != 1:
        raise ConfigError("a block is not closed")
    return root.children


def _upstreams(node: Block) -> list[Backend]:
    args = node.head[1:]
    if args and (args[0].startswith(("@", "/", "*"))):
        args = args[1:]  # a matcher
    found = [b for a in args if (b := split_hostport(a, 80))]
    for child in node.children:
        if child.head and child.head[0] == "to":
            found += [b for a in child.head[1:] if (b := split_hostport(a, 80))]
    return found


def _walk(nodes: Iterable[Block], site: str) -> Iterable[tuple[str, Block]]:
    for n in nodes:
        if n.head and n.head[0] in ("reverse_proxy", "proxy"):
            yield site, n
        else:
            yield from _walk(n.children, site)


def _json_hops(data: Mapping[str, Any]) -> list[Hop]:
    hops: list[Hop] = []

    def visit(obj: Any, path: str) -> None:
        if isinstance(obj, Mapping):
            if obj.get("handler") in ("reverse_proxy", "proxy"):
                ups: list[Any] = []
                for u in obj.get("upstreams") or []:
                    if isinstance(u, Mapping):
                        dial = u.get("dial")
                        # layer4's upstream dials a list of addresses (caddy-l4 docs)
                        ups += dial if isinstance(dial, list) else [dial]
                backends = tuple(
                    b for u in ups if isinstance(u, str) and (b := split_hostport(u, 80))
                )
                if backends:
                    hops.append(
                        Hop(
                            PROXY,
                            f"handler at {path}",
                            "terminating",
                            backends,
                            "Caddy reverse_proxy ends the connection",
                        )
                    )
            for k, v in obj.items():
                visit(v, f"{path}.{k}")
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                visit(v, f"{path}[{i}]")

    visit(data, "apps")
    return hops


def parse(text: str) -> list[Hop]:
    if text.lstrip().startswith("{") and '"apps"' in text:
        try:
            return _json_hops(json.loads(text))
        except ValueError as err:
            raise ConfigError(f"not JSON: {err}") from None
    hops = []
    for top in blocks(text):
        if not top.head:  # the global options block
            continue
        site = " ".join(top.head)
        for where, node in _walk(top.children, site):
            backends = tuple(_upstreams(node))
            if backends:
                hops.append(
                    Hop(
                        PROXY,
                        f"site {where}",
                        "terminating",
                        backends,
                        f"Caddy {node.head[0]} ends the connection (no transparent mode)",
                    )
                )
    return hops


def reverse_proxy_command(argv: list[str]) -> list[Hop]:
    """``caddy reverse-proxy --from :80 --to host:port``."""
    to = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--to", "-t")]
    to += [a.split("=", 1)[1] for a in argv if a.startswith("--to=")]
    backends = tuple(b for t in to if (b := split_hostport(t, 80)))
    return (
        [
            Hop(
                PROXY,
                "caddy reverse-proxy",
                "terminating",
                backends,
                "Caddy reverse-proxy ends the connection",
            )
        ]
        if backends
        else []
    )
