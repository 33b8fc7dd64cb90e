"""Applying one Command's shell events to its host: files written, copied,
moved and removed; packages installed or removed; systemd services started,
stopped, enabled, disabled, masked (each claim kept with the resource that
made it); containers, compose projects and proxy processes started or ended.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Sequence

from guard import shell
from guard.base import Resource
from guard.hosts.model import (
    ARGV_KINDS,
    DEBIAN_STARTS_ON_INSTALL,
    Container,
    File,
    Host,
    Service,
)


def _undoes(ev: shell.Event) -> bool:
    """Whether an event stops, disables, masks or removes something."""
    base = ev.action.removesuffix("+now")
    if ev.kind == "service":
        return base in ("stop", "kill", "disable", "mask", "remove")
    if ev.kind in ("package", "compose", "container"):
        return ev.action in ("remove", "down", "rm", "stop", "kill")
    if ev.kind == "process":
        return ev.action == "kill"
    return ev.kind == "remove"


def _put(host: Host, path: str, new: File, uncertain: str) -> None:
    """Write a file; a write that may not run keeps what was there as a content
    that may still be in place (the proxy is judged on both)."""
    old = host.files.get(path)
    if uncertain and old is not None:
        new.earlier = (*old.earlier, old.text)
    host.files[path] = new


def _kill(host: Host, name: str, before: Callable[[str], bool]) -> None:
    """End the processes that surely started before this point and that ``name``
    names: by program, or by the unit or session they run in (``tmux:*``: all)."""

    def named(p: tuple[str, tuple[str, ...], Resource, str]) -> bool:
        if name == "tmux:*":
            return p[3].startswith("tmux:")
        return posixpath.basename(p[0]) == name or (bool(p[3]) and p[3] == name)

    host.processes = [p for p in host.processes if not (named(p) and before(p[2].urn))]


def _apply(
    host: Host,
    res: Resource,
    events: Iterable[shell.Event],
    stdin: str | None,
    ancestors: Callable[[str], set[str]],
) -> None:
    mine = ancestors(res.urn)

    def before(urn: str) -> bool:
        return urn == res.urn or urn in mine

    for ev in events:
        if ev.uncertain and _undoes(ev):
            # A stop that may never run (in a branch, after `exit`) undoes nothing:
            # the proxy may still run, as when two Commands race.
            if ev.kind == "service" or ev.kind == "package":
                name = ev.name if ev.kind == "service" else _pkg_service(ev.name)
                svc = host.services.setdefault(name, Service())
                svc.maybe_stopped.append(
                    f"its `{ev.action.replace('+now', ' --now')}` by {res.name} may not run: {ev.uncertain}"
                )
            continue
        if ev.kind == "netfilter":
            # Rules are only ever added here (guard_nat reads -A/-I, nft add):
            # one that may not run counts as added, the cautious side, as
            # starts do; `iptables -C RULE || iptables -A RULE` is the idiom.
            host.netfilter.append((ev.name, ev.argv, res))
            continue
        if ev.kind == "script":
            host.scripts.append((ev.name, ev.argv, res))
            continue
        if ev.kind in ("write", "append", "copy", "move", "remove"):
            _apply_file(host, res, ev, stdin)
        elif ev.kind in ("package", "service"):
            _apply_service(host, res, ev, before)
        elif ev.kind in ("container", "compose"):
            _apply_container(host, res, ev, before)
        elif ev.kind == "process":
            _apply_process(host, res, ev, before)


def _apply_file(host: Host, res: Resource, ev: shell.Event, stdin: str | None) -> None:
    """A file written, appended to, copied, moved or removed."""
    if ev.kind in ("write", "append"):
        content = ev.content
        if content == shell.STDIN:
            content = stdin
        if ev.kind == "append" and ev.name in host.files:
            old = host.files[ev.name].text
            content = None if old is None or content is None else old + content
        _put(host, ev.name, File(content, res), ev.uncertain)
    elif ev.kind in ("copy", "move") and ev.source is not None:
        src = host.files.get(ev.source)
        _put(host, ev.name, File(src.text if src else None, res), ev.uncertain)
        if ev.kind == "move" and not ev.uncertain:
            host.files.pop(ev.source, None)
    elif ev.kind == "remove":
        host.files.pop(ev.name, None)


def _apply_service(
    host: Host, res: Resource, ev: shell.Event, before: Callable[[str], bool]
) -> None:
    """A package installed or removed, or a service's systemctl action."""
    if ev.kind == "package":
        svc = host.services.setdefault(_pkg_service(ev.name), Service())
        if ev.action == "install":
            if ev.source == "apt" and ev.name in DEBIAN_STARTS_ON_INSTALL:
                _service(
                    svc,
                    "install",
                    res,
                    before,
                    f"installed with apt by {res.name} (Debian starts and enables it)",
                )
        else:
            _service(svc, "remove", res, before)
    elif ev.kind == "service":
        _service(host.services.setdefault(ev.name, Service()), ev.action, res, before)
        if ev.action in ("stop", "kill", "disable+now", "mask+now"):
            _kill(host, f"unit:{ev.name}", before)  # a `systemd-run --unit` process


def _apply_container(
    host: Host, res: Resource, ev: shell.Event, before: Callable[[str], bool]
) -> None:
    """A container run, created, started or removed; a compose project up or down."""
    if ev.kind == "container":
        if ev.action in ("run", "create"):
            host.containers[ev.name] = Container(ev.argv, ev.action == "run", res)
        elif ev.name in host.containers:
            c = host.containers[ev.name]
            if ev.action in ("start", "restart"):
                c.running = True
            elif before(c.by.urn):
                del host.containers[ev.name]
    elif ev.kind == "compose":
        if ev.action == "up":
            host.compose.append((ev.name, res))
        else:
            host.compose = [
                (f, r) for f, r in host.compose if not before(r.urn) or (ev.name and f != ev.name)
            ]


def _apply_process(
    host: Host, res: Resource, ev: shell.Event, before: Callable[[str], bool]
) -> None:
    """A process killed, or a proxy started as a process (not a one-shot check)."""
    if ev.action == "kill":
        _kill(host, ev.name, before)
    elif ev.name in (
        "haproxy",
        "nginx",
        "envoy",
        "traefik",
        "caddy",
        "keepalived",
        *ARGV_KINDS,
    ) and _daemon(ev.name, ev.argv):
        host.processes.append((ev.name, ev.argv, res, ev.source or ""))


# Invocations that only check, print or signal: no proxy is left running.
_ONE_SHOT = {
    "nginx": {"-t", "-T", "-s", "-v", "-V", "-h", "-?"},
    "haproxy": {"-c", "-v", "-vv", "-h"},
    "keepalived": {"-t", "--config-test", "-v", "--version", "-h"},
    "envoy": {"--version", "validate"},
    "traefik": {"version", "healthcheck", "--version"},
    "socat": {"-V", "-h"},
}


def _daemon(prog: str, argv: Sequence[str]) -> bool:
    if prog == "caddy":
        return bool(argv) and argv[0] in (
            "run",
            "start",
            "reload",
            "reverse-proxy",
        )  # reload: a running Caddy takes --config
    if prog == "kubectl":
        return "port-forward" in argv
    return not (_ONE_SHOT.get(prog, set()) & set(argv))


def _pkg_service(pkg: str) -> str:
    return "nginx" if pkg.startswith("nginx") else pkg


def _service(
    svc: Service, action: str, res: Resource, before: Callable[[str], bool], how: str = ""
) -> None:
    """Apply one action by ``res``; ``before(urn)``: that resource surely ran before this point."""
    how = how or f"systemctl {action.replace('+now', ' --now')} by {res.name}"
    base = action.removesuffix("+now")
    now = action.endswith("+now")

    def drop(claims: dict[str, tuple[Resource, str]]) -> None:
        for urn in [u for u in claims if before(u)]:
            del claims[urn]

    masked = any(before(m) for m in svc.maskers)
    if not masked and base not in ("mask", "unmask", "disable", "stop", "kill", "remove"):
        svc.maybe_stopped.clear()  # a start after a stop that may not run: that stop is moot
    if base == "mask":
        svc.maskers.add(res.urn)
        drop(svc.enabled)
        if now:
            drop(svc.running)
    elif base == "unmask":
        svc.maskers = {m for m in svc.maskers if not before(m)}
    elif base in ("enable", "reenable"):
        if not masked:
            drop(svc.enabled)  # superseded: it is enabled by this one now
            svc.enabled[res.urn] = (res, how)
            if now:
                drop(svc.running)
                svc.running[res.urn] = (res, how)
    elif base == "disable":
        drop(svc.enabled)
        if now:
            drop(svc.running)
    elif base in ("start", "restart", "reload-or-restart", "force-reload", "reload", "install"):
        if not masked:
            drop(svc.running)  # superseded: it runs because of this one now
            svc.running[res.urn] = (res, how)
            if base == "install":
                drop(svc.enabled)
                svc.enabled[res.urn] = (res, how)
    elif base in ("stop", "kill"):
        drop(svc.running)
    elif base == "remove":
        drop(svc.running)
        drop(svc.enabled)
