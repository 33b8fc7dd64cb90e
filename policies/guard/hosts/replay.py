"""Building the hosts: remote and local Commands and copies grouped by the
host they run on and replayed in dependency order (then declaration order),
the rulesets that services load at start, and pulumi-docker Containers placed
on their Docker host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from guard import shell
from guard.base import Asset, Malformed, Resource, Unknown, as_str, dig
from guard.hosts.events import _apply
from guard.hosts.model import (
    COPY_FILE,
    COPY_TO_REMOTE,
    DOCKER_CONTAINERS,
    LOCAL_COMMAND,
    LOCAL_HOST,
    REMOTE_COMMAND,
    Container,
    File,
    Host,
    image_kind,
)


def connection_host(res: Resource) -> str | Unknown | None:
    conn = dig(res.props, "connection")
    if isinstance(conn, Unknown):
        return conn
    host = dig(conn, "host")
    if isinstance(host, Unknown):
        return host
    return as_str(host, "connection.host")


def ordered(resources: Sequence[Resource]) -> list[Resource]:
    """Dependency order (a resource after what it depends on), else declaration order."""
    index = {r.urn: i for i, r in enumerate(resources)}
    done: set[str] = set()
    out: list[Resource] = []
    by_urn = {r.urn: r for r in resources}

    def visit(r: Resource, trail: set[str]) -> None:
        if r.urn in done or r.urn in trail:
            return
        trail.add(r.urn)
        for d in sorted((d for d in r.dependencies if d in by_urn), key=lambda u: index[u]):
            visit(by_urn[d], trail)
        done.add(r.urn)
        out.append(r)

    for r in resources:
        visit(r, set())
    return out


def build(
    resources: Sequence[Resource],
    notes: Callable[[Resource, str, Any, str], None],
    unknown: Callable[[Resource, str, Unknown], None],
) -> dict[str, Host]:
    hosts: dict[str, Host] = {}
    ancestors = _ancestry(resources)
    for res in ordered(
        [
            r
            for r in resources
            if r.type in (REMOTE_COMMAND, COPY_TO_REMOTE, COPY_FILE, LOCAL_COMMAND)
        ]
    ):
        addr = _address(res, notes, unknown)
        if addr is None:
            continue
        host = hosts.setdefault(addr, Host(addr))
        host.resources.append(res)
        if res.type in (REMOTE_COMMAND, LOCAL_COMMAND):
            _command(host, res, notes, unknown, ancestors)
        else:
            _copy(host, res, notes, unknown)
    for host in hosts.values():
        _persistent_rules(host)
    host_of = {r.urn: a for a, h in hosts.items() for r in h.resources}
    for res in resources:
        if res.type in DOCKER_CONTAINERS:
            near = {host_of[u] for u in ancestors(res.urn) if u in host_of} - {LOCAL_HOST}
            _docker_container(hosts, res, notes, unknown, near.pop() if len(near) == 1 else None)
    return hosts


def _ancestry(resources: Sequence[Resource]) -> Callable[[str], set[str]]:
    """``ancestors(urn)``: every resource that one surely runs after (memoized)."""
    by_urn = {r.urn: r for r in resources}
    memo: dict[str, set[str]] = {}

    def ancestors(urn: str) -> set[str]:
        """Every resource this one surely runs after (its dependencies, transitively)."""
        if urn in memo:
            return memo[urn]
        memo[urn] = set()
        found: set[str] = set()
        res = by_urn.get(urn)
        for d in res.dependencies if res else ():
            found.add(d)
            found |= ancestors(d)
        memo[urn] = found
        return found

    return ancestors


def _address(
    res: Resource,
    notes: Callable[[Resource, str, Any, str], None],
    unknown: Callable[[Resource, str, Unknown], None],
) -> str | None:
    """The host a Command or copy runs on; None: it is left out (noted if malformed)."""
    try:
        addr = LOCAL_HOST if res.type == LOCAL_COMMAND else connection_host(res)
    except Malformed as err:
        notes(res, err.field, err.value, err.reason)
        return None
    if isinstance(addr, Unknown):
        unknown(res, "connection.host", addr)
        addr = f"(unknown host of {res.name})"
    return addr


def _command(
    host: Host,
    res: Resource,
    notes: Callable[[Resource, str, Any, str], None],
    unknown: Callable[[Resource, str, Unknown], None],
    ancestors: Callable[[str], set[str]],
) -> None:
    """A remote or local Command: its ``create`` script replayed on its host."""
    script = dig(res.props, "create")
    stdin = dig(res.props, "stdin")
    if isinstance(script, Unknown):
        unknown(res, "create", script)
        return
    if isinstance(stdin, Unknown):
        unknown(res, "stdin", stdin)
        stdin = None
    if script is not None and not isinstance(script, str):
        notes(res, "create", script, "is not a string")
        return
    if stdin is not None and not isinstance(stdin, str):
        notes(res, "stdin", stdin, "is not a string")
        stdin = None
    if script:
        env = dig(res.props, "environment")
        known = (
            {str(k): v for k, v in env.items() if isinstance(v, str)}
            if isinstance(env, Mapping)
            else {}
        )
        _apply(host, res, shell.parse(script, stdin=stdin, variables=known), stdin, ancestors)


def _copy(
    host: Host,
    res: Resource,
    notes: Callable[[Resource, str, Any, str], None],
    unknown: Callable[[Resource, str, Unknown], None],
) -> None:
    """A CopyToRemote or CopyFile: the file it writes on its host."""
    path = dig(res.props, "remotePath")
    source = dig(res.props, "source") if res.type == COPY_TO_REMOTE else dig(res.props, "localPath")
    if isinstance(path, Unknown):
        unknown(res, "remotePath", path)
        return
    if not isinstance(path, str):
        notes(res, "remotePath", path, "is not a string")
        return
    if isinstance(source, Unknown):
        unknown(res, "source", source)
        host.files[path] = File(None, res)
        return
    text = source.text if isinstance(source, Asset) else None
    host.files[path] = File(text, res)


#: Services that load a ruleset file at start (Debian): nftables.service runs
#: ``nft -f /etc/nftables.conf``; netfilter-persistent restores
#: /etc/iptables/rules.v4 (iptables-persistent's plugin).
RULESET_SERVICES = {
    "nftables": ("nft", ("-f", "/etc/nftables.conf")),
    "netfilter-persistent": ("iptables-restore", ("/etc/iptables/rules.v4",)),
}


def _persistent_rules(host: Host) -> None:
    """A ruleset service started or enabled loads its file, now or at boot."""
    for name, (prog, argv) in RULESET_SERVICES.items():
        svc = host.services.get(name)
        claim = svc.last() if svc is not None else None
        if claim is not None:
            host.netfilter.append((prog, argv, claim[0]))


def _docker_container(
    hosts: dict[str, Host],
    res: Resource,
    notes: Callable[[Resource, str, Any, str], None],
    unknown: Callable[[Resource, str, Unknown], None],
    near: str | None = None,
) -> None:
    """A pulumi-docker Container as a container on its Docker host. The
    provider's host is not in the resource's inputs: when the Container
    depends (directly or not) on remote Commands or copies of exactly one host,
    that host is taken as its Docker host (the stack prepares the files it
    mounts there first); else it is a host of its own.
    Its ``uploads`` are the files it sees, ``volumes`` with a ``hostPath``
    mount files the stack does not hold, ``command`` is its arguments; it runs
    unless ``start`` is false (pulumi-docker's default is to start it)."""
    image = dig(res.props, "image")
    if isinstance(image, Unknown):
        unknown(res, "image", image)
        return
    if not isinstance(image, str) or image_kind(image) is None:
        return
    start = dig(res.props, "start")
    if isinstance(start, Unknown):
        unknown(res, "start", start)
    name = dig(res.props, "name")
    name = name if isinstance(name, str) and name else res.name
    address = near or f"(the Docker host of {res.name})"
    host = hosts.setdefault(address, Host(address))
    host.resources.append(res)
    cmd = dig(res.props, "command")
    if isinstance(cmd, Unknown):
        unknown(res, "command", cmd)
        cmd = []
    elif cmd is not None and not (isinstance(cmd, list) and all(isinstance(a, str) for a in cmd)):
        notes(res, "command", None, "is not a list of strings")
        cmd = []
    mounts: list[tuple[str, str]] = []
    prefix = f"/(container {name})"
    uploads = dig(res.props, "uploads")
    for i, up in enumerate(uploads if isinstance(uploads, list) else []):
        file = dig(up, "file")
        if not isinstance(file, str):
            continue
        content = dig(up, "content")
        if isinstance(content, Unknown):
            unknown(res, f"uploads[{i}].content", content)
        host.files[prefix + file] = File(content if isinstance(content, str) else None, res)
        mounts.append((prefix + file, file))
    volumes = dig(res.props, "volumes")
    for vol in volumes if isinstance(volumes, list) else []:
        src, dst = dig(vol, "hostPath"), dig(vol, "containerPath")
        if isinstance(src, str) and isinstance(dst, str):
            mounts.append((src, dst))
    host.containers[name] = Container(
        (),
        start is not False,
        res,
        image=image,
        cmd=tuple(cmd or ()),
        mounts=tuple(mounts),
    )
