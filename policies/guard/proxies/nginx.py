"""nginx: proxy_pass / grpc_pass / fastcgi_pass ... in http and stream contexts.

Read with crossplane (NGINX Inc.'s own config parser, on PyPI). nginx ends the
client's connection in every mode; ``proxy_bind $remote_addr transparent``
(inherited from http/stream, server, location; ``proxy_bind off`` cancels it)
makes it connect onward with the client's address (TPROXY). ``proxy_protocol
on`` does not count.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import crossplane

from guard.proxies.base import Backend, ConfigError, Hop, split_hostport

PROXY = "nginx"
PASSES = ("proxy_pass", "grpc_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass", "memcached_pass")


def directives(text: str) -> list[dict[str, Any]]:
    """The parsed tree of one config file (includes are not followed)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "nginx.conf")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        payload = crossplane.parse(
            path, single=True, check_ctx=False, check_args=False, catch_errors=True
        )
    errors = payload.get("errors") or []
    if errors:
        first = errors[0]
        raise ConfigError(f"line {first.get('line')}: {first.get('error')}")
    config = payload.get("config") or [{}]
    parsed: list[dict[str, Any]] = config[0].get("parsed") or []
    return parsed


def _walk(block: Sequence[dict[str, Any]], name: str) -> Iterable[dict[str, Any]]:
    for d in block:
        if d.get("directive") == name:
            yield d
        yield from _walk(d.get("block") or [], name)


def _upstreams(tree: Sequence[dict[str, Any]]) -> dict[str, list[Backend]]:
    found: dict[str, list[Backend]] = {}
    for up in _walk(tree, "upstream"):
        servers = []
        for d in up.get("block") or []:
            if d.get("directive") == "server" and d.get("args"):
                b = split_hostport(d["args"][0], 80)
                if b is not None:
                    servers.append(b)
        if up.get("args"):
            found[up["args"][0]] = servers
    return found


def _transparent(args: list[str] | None, inherited: bool) -> bool:
    if args is None:
        return inherited
    return "transparent" in args and args[0] != "off"


def parse(text: str) -> list[Hop]:
    tree = directives(text)
    upstreams = _upstreams(tree)
    hops: list[Hop] = []

    def own(block: Sequence[dict[str, Any]], name: str) -> list[str] | None:
        for d in block:
            if d.get("directive") == name:
                return list(d.get("args") or [])
        return None

    def visit(block: Sequence[dict[str, Any]], where: str, bind: bool, listen: str) -> None:
        bind = _transparent(own(block, "proxy_bind"), bind)
        for d in block:
            name = d.get("directive")
            args = list(d.get("args") or [])
            if name in ("http", "stream"):
                visit(d.get("block") or [], name, bind, listen)
            elif name == "server" and d.get("block") is not None:
                listens = [
                    " ".join(x.get("args") or [])
                    for x in d["block"]
                    if x.get("directive") == "listen"
                ]
                visit(d["block"], f"{where} server {', '.join(listens) or ':80'}", bind, listen)
            elif name in ("location", "if", "limit_except") and d.get("block") is not None:
                visit(
                    d["block"],
                    f"{where.split(' location')[0]} location {' '.join(args)}",
                    bind,
                    listen,
                )
            elif name in PASSES and args:
                target = args[0]
                transparent = bind and name == "proxy_pass"
                if "$" in target:
                    backends: tuple[Backend, ...] = (Backend(target, None),)
                else:
                    stripped = target.split("://", 1)[-1].split("/", 1)[0]
                    if stripped in upstreams:
                        backends = tuple(upstreams[stripped])
                    else:
                        b = split_hostport(target, 80)
                        backends = (b,) if b else ()
                if not backends:
                    continue
                detail = (
                    "`proxy_bind $remote_addr transparent` (TPROXY)"
                    if transparent
                    else f"{name} {target} without `proxy_bind $remote_addr transparent`"
                )
                hops.append(
                    Hop(
                        PROXY,
                        where,
                        "transparent" if transparent else "terminating",
                        backends,
                        detail,
                    )
                )

    visit(tree, "main", False, "")
    return hops
