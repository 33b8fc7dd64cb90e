"""HAProxy: which frontends end the client's connection, toward which servers.

HAProxy always ends the client's TCP connection (``mode http`` and ``mode tcp``
alike); it connects onward with the client's address only with ``source ADDR
usesrc clientip`` (or ``client``/``hdr_ip(...)``: TPROXY), set in ``defaults``,
in the backend, or per ``server``. ``send-proxy`` (PROXY protocol) does not
count: the address travels in the payload, which a NetworkPolicy never reads.
Sections inherit the last ``defaults`` before them (HAProxy's own rule), or the
named one they pick with ``from NAME`` (``defaults NAME``, HAProxy 2.6+).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from guard.proxies.base import Backend, ConfigError, Hop, split_hostport

PROXY = "HAProxy"
SECTIONS = (
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "peers",
    "resolvers",
    "userlist",
    "program",
    "http-errors",
    "ring",
    "mailers",
    "cache",
)


def tokens(line: str) -> list[str]:
    """One config line as HAProxy splits it: blanks, quotes, backslash, ``#``."""
    out: list[str] = []
    cur: list[str] = []
    quote = ""
    started = False
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"' and i + 1 < len(line):
                i += 1
                cur.append(line[i])
            else:
                cur.append(ch)
        elif ch == "\\" and i + 1 < len(line):
            i += 1
            cur.append(line[i])
            started = True
        elif ch in "\"'":
            quote = ch
            started = True
        elif ch == "#":
            break
        elif ch in " \t":
            if started:
                out.append("".join(cur))
                cur, started = [], False
        else:
            cur.append(ch)
            started = True
        i += 1
    if quote:
        raise ConfigError(f"unterminated quote in: {line.strip()}")
    if started:
        out.append("".join(cur))
    return out


@dataclass
class _Section:
    kind: str
    name: str
    lines: list[list[str]] = field(default_factory=list)
    defaults: _Section | None = None

    def values(self, keyword: str) -> list[list[str]]:
        own = [t[1:] for t in self.lines if t and t[0] == keyword]
        if own or self.defaults is None:
            return own
        return self.defaults.values(keyword)


def sections(text: str) -> list[_Section]:
    """The sections; each proxy section inherits from the last ``defaults`` before it,
    or, with ``from NAME`` (HAProxy 2.6+), from the ``defaults NAME`` section (a
    named defaults section may itself say ``from OTHER``)."""
    result: list[_Section] = []
    current_defaults: _Section | None = None
    named: dict[str, _Section] = {}
    cur: _Section | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        try:
            toks = tokens(raw)
        except ConfigError as err:
            raise ConfigError(f"line {n}: {err}") from None
        if not toks:
            continue
        if toks[0] in SECTIONS:
            parent = current_defaults if toks[0] != "defaults" else None
            if toks[0] in ("defaults", "frontend", "backend", "listen") and "from" in toks[1:]:
                at = toks.index("from", 1)
                ref = toks[at + 1] if at + 1 < len(toks) else ""
                if ref not in named:
                    raise ConfigError(
                        f"line {n}: `from {ref}` names no `defaults {ref}` section before it"
                    )
                parent = named[ref]
                toks = toks[:at] + toks[at + 2 :]
            name = toks[1] if len(toks) > 1 else ""
            cur = _Section(toks[0], name, [], parent)
            if toks[0] == "defaults":
                current_defaults = cur
                if name:
                    named[name] = cur
            if toks[0] == "listen" and len(toks) > 2:
                cur.lines.append(["bind", *toks[2:]])
            result.append(cur)
        elif cur is not None:
            cur.lines.append(toks)
    return result


def _usesrc_client(args: list[str]) -> bool:
    """``source ADDR[:PORT] usesrc client|clientip|hdr_ip(...)``."""
    if "usesrc" not in args:
        return False
    after = args[args.index("usesrc") + 1 : args.index("usesrc") + 2]
    return bool(after) and (after[0] in ("client", "clientip") or after[0].startswith("hdr_ip"))


def _mode(section: _Section) -> str:
    modes = section.values("mode")
    return modes[-1][0] if modes and modes[-1] else "tcp"


def _servers(section: _Section) -> list[tuple[Backend, bool, bool]]:
    """(backend, transparent, PROXY protocol) per server line."""
    section_transparent = any(_usesrc_client(v) for v in section.values("source"))
    found = []
    for toks in section.lines:
        if toks[0] not in ("server", "server-template"):
            continue
        addr_at = 2 if toks[0] == "server" else 3
        if len(toks) <= addr_at:
            continue
        backend = split_hostport(toks[addr_at])
        if backend is None:
            continue
        params = toks[addr_at + 1 :]
        transparent = section_transparent
        if "source" in params:
            transparent = _usesrc_client(params[params.index("source") + 1 :])
        proxy_protocol = any(p.startswith("send-proxy") for p in params)
        found.append((backend, transparent, proxy_protocol))
    return found


def _bind_ports(section: _Section) -> list[int]:
    """The single ports a frontend/listen binds (``bind [ADDR]:PORT[,...]``);
    ranges and names are left out."""
    ports: list[int] = []
    for toks in section.lines:
        if toks[0] != "bind" or len(toks) < 2:
            continue
        for addr in toks[1].split(","):
            port = addr.rpartition(":")[2]
            if port.isdigit() and 0 < int(port) < 65536 and int(port) not in ports:
                ports.append(int(port))
    return ports


def _with_ports(backends: list[Backend], listen: list[int]) -> tuple[Backend, ...]:
    """A server line without a port connects to the port the client connected
    to (HAProxy configuration manual, ``server``: "If no port is set, the
    same port as the one the client connected to is used"): one backend per
    port the section binds."""
    out: list[Backend] = []
    for b in backends:
        if b.port is None and listen:
            out += [Backend(b.host, p) for p in listen]
        else:
            out.append(b)
    return tuple(out)


def parse(text: str) -> list[Hop]:
    secs = sections(text)
    backends = {s.name: s for s in secs if s.kind == "backend"}
    hops: list[Hop] = []
    for sec in secs:
        if sec.kind not in ("frontend", "listen"):
            continue
        targets: list[_Section] = []
        if sec.kind == "listen":
            targets.append(sec)
        for args in sec.values("default_backend") + [
            v for v in (t[1:] for t in sec.lines if t[0] == "use_backend") if v
        ]:
            if args and args[0] in backends:
                targets.append(backends[args[0]])
        for target in targets:
            servers = _servers(target)
            if not servers:
                continue
            mode = _mode(sec)
            for transparent, group in (
                (True, [s for s in servers if s[1]]),
                (False, [s for s in servers if not s[1]]),
            ):
                if not group:
                    continue
                where = f"{sec.kind} {sec.name}"
                if target is not sec:
                    where += f" -> backend {target.name}"
                if transparent:
                    detail = f"mode {mode}, `source ... usesrc clientip` (TPROXY)"
                else:
                    detail = f"mode {mode}, no `usesrc clientip`"
                    if any(s[2] for s in group):
                        detail += "; send-proxy (PROXY protocol) does not keep the address for a NetworkPolicy"
                hops.append(
                    Hop(
                        PROXY,
                        where,
                        "transparent" if transparent else "terminating",
                        _with_ports([s[0] for s in group], _bind_ports(sec)),
                        detail,
                    )
                )
    return hops
