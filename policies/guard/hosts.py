"""Hosts and their proxies: the final state of each service on each host.

Remote Commands and CopyToRemote are grouped by their connection's host and
replayed in dependency order (then declaration order): files written, copied,
moved; packages installed or removed; services started, reloaded, enabled,
stopped, disabled, masked; containers run and removed; compose projects up and
down. What is left running (or enabled: it runs after a reboot) is a proxy
whose config is then read with that proxy's parser.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from guard import shell
from guard.base import Asset, Malformed, Resource, Unknown, as_str, dig
from guard.proxies import caddy as proxy_caddy
from guard.proxies import envoy as proxy_envoy
from guard.proxies import haproxy as proxy_haproxy
from guard.proxies import keepalived as proxy_keepalived
from guard.proxies import more as proxy_more
from guard.proxies import nginx as proxy_nginx
from guard.proxies import socat as proxy_socat
from guard.proxies import traefik as proxy_traefik
from guard.proxies.base import ConfigError, Hop

REMOTE_COMMAND = "command:remote:Command"
COPY_TO_REMOTE = "command:remote:CopyToRemote"
COPY_FILE = "command:remote:CopyFile"
LOCAL_COMMAND = "command:local:Command"
#: Where a command:local:Command runs: the machine that runs the engine.
LOCAL_HOST = "(the machine that runs `pulumi up`)"
#: pulumi-docker's container (v4 token, and the short alias).
DOCKER_CONTAINERS = ("docker:index/container:Container", "docker:index:Container")

Parser = Callable[[str], list[Hop]]


@dataclass(frozen=True)
class Kind:
    label: str
    parse: Parser
    config_paths: tuple[str, ...]  # files or directories (ending in /) on a host
    container_paths: tuple[str, ...]
    config_flags: tuple[str, ...] = ()


KINDS: dict[str, Kind] = {
    "haproxy": Kind(
        "HAProxy",
        proxy_haproxy.parse,
        ("/etc/haproxy/haproxy.cfg", "/etc/haproxy/conf.d/"),
        ("/usr/local/etc/haproxy/", "/etc/haproxy/"),
        ("-f",),
    ),
    "nginx": Kind("nginx", proxy_nginx.parse, ("/etc/nginx/",), ("/etc/nginx/",), ("-c",)),
    "envoy": Kind(
        "Envoy", proxy_envoy.parse, ("/etc/envoy/",), ("/etc/envoy/",), ("-c", "--config-path")
    ),
    "traefik": Kind(
        "Traefik",
        proxy_traefik.parse,
        ("/etc/traefik/",),
        ("/etc/traefik/",),
        ("--configfile", "--configFile", "--providers.file.filename", "--providers.file.directory"),
    ),
    "caddy": Kind("Caddy", proxy_caddy.parse, ("/etc/caddy/",), ("/etc/caddy/",), ("--config",)),
    "stunnel4": Kind("stunnel", proxy_more.stunnel, ("/etc/stunnel/",), ("/etc/stunnel/",)),
    "stunnel": Kind("stunnel", proxy_more.stunnel, ("/etc/stunnel/",), ("/etc/stunnel/",)),
    "apache2": Kind(
        "Apache",
        proxy_more.apache,
        (
            "/etc/apache2/sites-enabled/",
            "/etc/apache2/sites-available/",
            "/etc/apache2/conf-enabled/",
        ),
        ("/usr/local/apache2/conf/",),
        ("-f",),
    ),
    "httpd": Kind(
        "Apache", proxy_more.apache, ("/etc/httpd/",), ("/usr/local/apache2/conf/",), ("-f",)
    ),
    "keepalived": Kind(
        "keepalived/LVS",
        proxy_keepalived.parse,
        ("/etc/keepalived/keepalived.conf",),
        ("/etc/keepalived/",),
        ("-f", "--use-file"),
    ),
}
#: Proxies read from their command line (argv without the program name).
ARGV_KINDS = {
    "socat": proxy_socat.parse_argv,
    "systemd-socket-proxyd": proxy_more.socket_proxyd,
    "kubectl": proxy_more.port_forward,
    "ssh": proxy_more.ssh_forward,
    "autossh": proxy_more.ssh_forward,
}
DEBIAN_STARTS_ON_INSTALL = {
    "apache2",
    "haproxy",
    "nginx",
    "keepalived",
    "caddy",
    "nginx-full",
    "nginx-light",
    "nginx-core",
    "nginx-extras",
}
IMAGE_KINDS = {
    "haproxy": "haproxy",
    "haproxytech/haproxy-alpine": "haproxy",
    "haproxytech/haproxy-debian": "haproxy",
    "nginx": "nginx",
    "nginxinc/nginx-unprivileged": "nginx",
    "envoyproxy/envoy": "envoy",
    "traefik": "traefik",
    "caddy": "caddy",
    "alpine/socat": "socat",
    "socat": "socat",
}


def image_kind(image: str) -> str | None:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    for prefix in ("docker.io/library/", "docker.io/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    if name in IMAGE_KINDS:
        return IMAGE_KINDS[name]
    tail = name.rsplit("/", 1)[-1]
    if tail in IMAGE_KINDS:
        return IMAGE_KINDS[tail]
    for key in ("haproxy", "envoy", "traefik", "caddy", "nginx", "socat"):
        if key in tail:
            return "nginx" if key == "nginx" else key
    return None


@dataclass
class File:
    text: str | None  # None: content not in the stack
    by: Resource
    # contents that may still be in place: the writes that replaced them may not run
    earlier: tuple[str | None, ...] = ()


@dataclass
class Service:
    """Claims on a service's state, each by the resource that made it.

    Two Commands with no dependency between them run in parallel in the engine,
    so a stop undoes only the starts that surely ran before it: earlier in the
    same script, or in a resource it depends on (directly or not). Where two
    Commands race, the service may be running, and the guard says so.
    """

    running: dict[str, tuple[Resource, str]] = field(default_factory=dict)
    enabled: dict[str, tuple[Resource, str]] = field(default_factory=dict)
    maskers: set[str] = field(default_factory=set)
    maybe_stopped: list[str] = field(default_factory=list)  # stops that may not run

    def last(self) -> tuple[Resource, str] | None:
        claims = list(self.running.values()) or list(self.enabled.values())
        return claims[-1] if claims else None


@dataclass
class Container:
    argv: tuple[str, ...]
    running: bool
    by: Resource
    engine: str = "docker"
    # A pulumi-docker Container: its parts as properties, not a `docker run` line.
    image: str | None = None
    cmd: tuple[str, ...] = ()
    mounts: tuple[tuple[str, str], ...] = ()


@dataclass
class Proxy:
    """A proxy left running on a host, with what its config says."""

    host: str
    label: str  # "HAProxy (systemd service haproxy)"
    kind: str
    by: Resource
    hops: list[Hop]
    state: str  # "running", "enabled at boot", ...
    config_missing: bool = False
    config_error: str | None = None
    managed_by: str | None = None  # URN of a keepsource LoadBalancerHost parent
    missing_paths: tuple[str, ...] = ()  # named config paths the stack does not write


@dataclass
class Host:
    address: str
    files: dict[str, File] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    containers: dict[str, Container] = field(default_factory=dict)
    # (program, argv, by, the systemd unit or screen/tmux session it runs in, or "")
    processes: list[tuple[str, tuple[str, ...], Resource, str]] = field(default_factory=list)
    compose: list[tuple[str, Resource]] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)
    # (program, argv, by): iptables/nft/ipvsadm calls, in the order they run (guard_nat)
    netfilter: list[tuple[str, tuple[str, ...], Resource]] = field(default_factory=list)
    # (script, its arguments, by): scripts run that the stack does not hold
    scripts: list[tuple[str, tuple[str, ...], Resource]] = field(default_factory=list)


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
        elif ev.kind == "package":
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
        elif ev.kind == "container":
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
                    (f, r)
                    for f, r in host.compose
                    if not before(r.urn) or (ev.name and f != ev.name)
                ]
        elif ev.kind == "process":
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


UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system")


def _unit(host: Host, stem: str) -> tuple[list[str], dict[str, str]]:
    """A service's ``ExecStart=`` argv and ``Environment=`` as the stack writes
    them: its unit file, then its drop-ins (``NAME.service.d/*.conf``, in name
    order, as systemd reads them; an empty ``ExecStart=`` resets it)."""
    texts = []
    for base in UNIT_DIRS:
        unit = host.files.get(f"{base}/{stem}.service")
        if unit is not None and unit.text:
            texts.append(unit.text)
    drop_ins = sorted(
        (posixpath.basename(p), f.text or "")
        for base in UNIT_DIRS
        for p, f in host.files.items()
        if p.startswith(f"{base}/{stem}.service.d/") and p.endswith(".conf")
    )
    texts += [t for _, t in drop_ins if t]
    argv: list[str] = []
    env: dict[str, str] = {}
    for text in texts:
        # systemd joins a line ending in a backslash with the next one
        for line in text.replace("\\\n", " ").splitlines():
            key, _, value = line.strip().partition("=")
            if key.strip() == "ExecStart":
                argv = shell.split_exec(value.strip()) if value.strip() else []
            elif key.strip() == "Environment":
                try:
                    words = shlex.split(value)
                except ValueError:
                    continue
                for w in words:
                    if "=" in w:
                        k, v = w.split("=", 1)
                        env[k] = v
    return argv, env


def _debian_default_config(host: Host, name: str, env: Mapping[str, str]) -> list[str]:
    """Debian's haproxy unit runs ``haproxy -f $CONFIG ... $EXTRAOPTS`` with
    ``Environment=`` from the unit and its drop-ins, then
    ``EnvironmentFile=-/etc/default/haproxy`` (whose values win, systemd's
    rule): ``CONFIG`` and every ``-f`` in ``EXTRAOPTS`` are its configs."""
    if name != "haproxy":
        return []
    values = dict(env)
    defaults = host.files.get("/etc/default/haproxy")
    for line in (defaults.text or "").splitlines() if defaults is not None else []:
        key, _, value = line.strip().partition("=")
        value = value.strip().strip("'\"")
        if key.strip() in ("CONFIG", "EXTRAOPTS") and value:
            values[key.strip()] = value
    if "CONFIG" not in values and "EXTRAOPTS" not in values:
        return []
    try:
        extra = shlex.split(values.get("EXTRAOPTS", ""))
    except ValueError:
        extra = []
    return [values.get("CONFIG", "/etc/haproxy/haproxy.cfg"), *_flag_values(extra, ("-f",))]


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


def build(
    resources: Sequence[Resource],
    notes: Callable[[Resource, str, Any, str], None],
    unknown: Callable[[Resource, str, Unknown], None],
) -> dict[str, Host]:
    hosts: dict[str, Host] = {}
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

    for res in ordered(
        [
            r
            for r in resources
            if r.type in (REMOTE_COMMAND, COPY_TO_REMOTE, COPY_FILE, LOCAL_COMMAND)
        ]
    ):
        try:
            addr = LOCAL_HOST if res.type == LOCAL_COMMAND else connection_host(res)
        except Malformed as err:
            notes(res, err.field, err.value, err.reason)
            continue
        if isinstance(addr, Unknown):
            unknown(res, "connection.host", addr)
            addr = f"(unknown host of {res.name})"
        if addr is None:
            continue
        host = hosts.setdefault(addr, Host(addr))
        host.resources.append(res)
        if res.type in (REMOTE_COMMAND, LOCAL_COMMAND):
            script = dig(res.props, "create")
            stdin = dig(res.props, "stdin")
            if isinstance(script, Unknown):
                unknown(res, "create", script)
                continue
            if isinstance(stdin, Unknown):
                unknown(res, "stdin", stdin)
                stdin = None
            if script is not None and not isinstance(script, str):
                notes(res, "create", script, "is not a string")
                continue
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
                _apply(
                    host, res, shell.parse(script, stdin=stdin, variables=known), stdin, ancestors
                )
        else:
            path = dig(res.props, "remotePath")
            source = (
                dig(res.props, "source")
                if res.type == COPY_TO_REMOTE
                else dig(res.props, "localPath")
            )
            if isinstance(path, Unknown):
                unknown(res, "remotePath", path)
                continue
            if not isinstance(path, str):
                notes(res, "remotePath", path, "is not a string")
                continue
            if isinstance(source, Unknown):
                unknown(res, "source", source)
                host.files[path] = File(None, res)
                continue
            text = source.text if isinstance(source, Asset) else None
            host.files[path] = File(text, res)
    for host in hosts.values():
        _persistent_rules(host)
    host_of = {r.urn: a for a, h in hosts.items() for r in h.resources}
    for res in resources:
        if res.type in DOCKER_CONTAINERS:
            near = {host_of[u] for u in ancestors(res.urn) if u in host_of} - {LOCAL_HOST}
            _docker_container(hosts, res, notes, unknown, near.pop() if len(near) == 1 else None)
    return hosts


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


def _files_under(host: Host, paths: Iterable[str]) -> list[tuple[str, File]]:
    found = []
    for p in paths:
        if p.endswith("/"):
            found += [(k, f) for k, f in sorted(host.files.items()) if k.startswith(p)]
        elif p in host.files:
            found.append((p, host.files[p]))
    return [
        version
        for path, f in found
        for version in [
            (path, f),
            *((path, File(text, f.by)) for text in f.earlier if text is not None),
        ]
    ]


def _flag_values(argv: Sequence[str], flags: Sequence[str]) -> list[str]:
    """Every value given to one of these flags (``-f X``, ``--flag=X``), each as
    a file and as a directory."""
    found: list[str] = []
    for i, a in enumerate(argv):
        for f in flags:
            if a == f and i + 1 < len(argv):
                found.append(argv[i + 1])
            elif a.startswith(f + "="):
                found.append(a.split("=", 1)[1])
    return [p for v in found for p in (v, v.rstrip("/") + "/")]


def _read(
    host: Host, kind: Kind, files: list[tuple[str, File]]
) -> tuple[list[Hop], bool, str | None]:
    texts = [(p, f.text) for p, f in files]
    if not texts:
        return [], True, None
    if any(t is None for _, t in texts) and all(t is None for _, t in texts):
        return [], True, None
    hops: list[Hop] = []
    error = None
    if kind.label == "nginx":
        joined = "\n".join(t for _, t in texts if t)
        try:
            hops = kind.parse(joined)
        except ConfigError as err:
            error = f"{', '.join(p for p, _ in texts)}: {err}"
        return hops, False, error
    for path, text in texts:
        if text is None:
            continue
        try:
            hops += kind.parse(text)
        except ConfigError as err:
            error = f"{path}: {err}"
    if kind.label == "Traefik":  # the static config names the dynamic file
        for _, text in texts:
            try:
                data = proxy_traefik.load(text or "")
            except ConfigError:
                continue
            for p in proxy_traefik.file_provider_paths(data):
                for _, f in _files_under(host, [p, p.rstrip("/") + "/"]):
                    if f.text and f not in [ff for _, ff in files]:
                        try:
                            hops += kind.parse(f.text)
                        except ConfigError as err:
                            error = str(err)
    return hops, False, error


def proxies(host: Host, lb_parents: Mapping[str, Any]) -> list[Proxy]:
    """The proxies left running (or enabled) on this host."""
    return _proxies(host, lb_parents)


def _managed(host: Host, lb_parents: Mapping[str, str]) -> str | None:
    for r in host.resources:
        if r.parent and r.parent in lb_parents:
            return r.parent
    return None


def _proxies(host: Host, lb_parents: Mapping[str, str]) -> list[Proxy]:
    found: list[Proxy] = []
    managed = _managed(host, lb_parents)
    for name, svc in host.services.items():
        claim = svc.last()
        if claim is None:
            continue
        by, how = claim
        state = "running" if svc.running else "enabled (runs after a reboot)"
        if svc.maskers and svc.running:
            state = "masked but still running (`systemctl mask` does not stop it; use `systemctl mask --now`)"
        elif len(svc.running) > 1 or (svc.running and any(True for _ in svc.maskers)):
            state += " (started by Commands not ordered before the one that stops it)"
        if svc.maybe_stopped:
            state += f" ({'; '.join(dict.fromkeys(svc.maybe_stopped))})"
        # a socket unit starts its service (same name) on the first connection
        stem = name.removesuffix(".socket")
        argv, env = _unit(host, stem)
        kind_name = posixpath.basename(argv[0]) if argv else name
        if kind_name in ARGV_KINDS:
            hops = ARGV_KINDS[kind_name](argv[1:])
            if kind_name == "kubectl" and "port-forward" not in argv:
                continue
            found.append(
                Proxy(
                    host.address,
                    f"{kind_name} (systemd service {name})",
                    kind_name,
                    by,
                    hops,
                    state,
                    not hops,
                    None,
                    managed,
                )
            )
            continue
        kind = KINDS.get(kind_name)
        if kind is None:
            continue
        cfgs = _flag_values(argv, kind.config_flags)
        if not cfgs and not argv:
            cfgs = _debian_default_config(host, kind_name, env)
        files = _files_under(host, cfgs or kind.config_paths)
        hops, missing, error = _read(host, kind, files)
        absent = tuple(
            p
            for p in dict.fromkeys(c.rstrip("/") for c in cfgs)
            if not _files_under(host, [p, p + "/"])
        )
        found.append(
            Proxy(
                host.address,
                f"{kind.label} (systemd service {name}, {how}; {state})",
                kind_name,
                by,
                hops,
                state,
                missing,
                error,
                managed,
                absent,
            )
        )
    for prog, pargv, res, _session in host.processes:
        if prog in ARGV_KINDS:
            hops = ARGV_KINDS[prog](list(pargv))
            found.append(
                Proxy(
                    host.address,
                    f"{prog} (started by the command)",
                    prog,
                    res,
                    hops,
                    "running",
                    not hops,
                    None,
                    managed,
                )
            )
            continue
        if prog == "caddy" and pargv and pargv[0] == "reverse-proxy":
            found.append(
                Proxy(
                    host.address,
                    "Caddy (caddy reverse-proxy)",
                    "caddy",
                    res,
                    proxy_caddy.reverse_proxy_command(list(pargv)),
                    "running",
                    False,
                    None,
                    managed,
                )
            )
            continue
        kind = KINDS[prog]
        cfgs = _flag_values(pargv, kind.config_flags)
        files = _files_under(host, cfgs or kind.config_paths)
        hops, missing, error = _read(host, kind, files)
        found.append(
            Proxy(
                host.address,
                f"{kind.label} (started as a process)",
                prog,
                res,
                hops,
                "running",
                missing,
                error,
                managed,
            )
        )
    for name, c in host.containers.items():
        if c.running and c.image is not None:
            found += _container_proxy(host, name, c, managed, list(c.mounts), c.image, list(c.cmd))
        elif c.running:
            found += _container_proxy(host, name, c, managed)
    for path, res in host.compose:
        found += _compose_proxies(host, path, res, managed)
    return found


def _mounts(argv: Sequence[str]) -> list[tuple[str, str]]:
    found = []
    for i, a in enumerate(argv):
        val = None
        if a in ("-v", "--volume") and i + 1 < len(argv):
            val = argv[i + 1]
        elif a.startswith(("--volume=", "-v=")):
            val = a.split("=", 1)[1]
        if val and ":" in val:
            src, dst = val.split(":")[:2]
            found.append((src, dst))
        if (a == "--mount" and i + 1 < len(argv)) or a.startswith("--mount="):
            spec = a.split("=", 1)[1] if a.startswith("--mount=") else argv[i + 1]
            kv = dict(p.split("=", 1) for p in spec.split(",") if "=" in p)
            msrc = kv.get("source") or kv.get("src")
            mdst = kv.get("target") or kv.get("destination") or kv.get("dst")
            if msrc and mdst:
                found.append((msrc, mdst))
    return found


def _container_parts(argv: Sequence[str]) -> tuple[str, list[str]]:
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-"):
            if "=" not in a and a.split("=", 1)[0] in shell._RUN_VALUE_OPTS:
                i += 1
            i += 1
            continue
        return a, list(argv[i + 1 :])
    return "", []


def _container_proxy(
    host: Host,
    name: str,
    c: Container,
    managed: str | None,
    mounts: list[tuple[str, str]] | None = None,
    image: str | None = None,
    cmd: list[str] | None = None,
) -> list[Proxy]:
    if image is None:
        image, cmd = _container_parts(c.argv)
        mounts = _mounts(c.argv)
    kind_name = image_kind(image)
    if kind_name is None:
        return []
    cmd = cmd or []
    mounts = mounts or []
    label = f"container {name} ({image})"
    if kind_name == "socat":
        hops = proxy_socat.parse_argv(cmd)
        return [
            Proxy(
                host.address,
                f"socat in {label}",
                "socat",
                c.by,
                hops,
                "running",
                not hops,
                None,
                managed,
            )
        ]
    kind = KINDS[kind_name]
    cfgs = _flag_values(cmd, kind.config_flags)
    host_files: list[tuple[str, File]] = []
    for src, dst in mounts:
        inside = cfgs or list(kind.container_paths)
        if any(
            dst == p or p.startswith(dst.rstrip("/") + "/") or dst.startswith(p) for p in inside
        ):
            host_files += _files_under(host, [src, src.rstrip("/") + "/"])
    hops, missing, error = _read(host, kind, host_files)
    return [
        Proxy(
            host.address,
            f"{kind.label} in {label}",
            kind_name,
            c.by,
            hops,
            "running",
            missing,
            error,
            managed,
        )
    ]


def _compose_proxies(host: Host, path: str, res: Resource, managed: str | None) -> list[Proxy]:
    candidates = (
        _files_under(host, [path])
        if path
        else [
            (p, f)
            for p, f in host.files.items()
            if posixpath.basename(p)
            in ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
        ]
    )
    found: list[Proxy] = []
    for cpath, f in candidates:
        if f.text is None:
            continue
        try:
            data = yaml.safe_load(f.text)
        except yaml.YAMLError:
            continue
        services = data.get("services") if isinstance(data, dict) else None
        if not isinstance(services, dict):
            continue
        base = posixpath.dirname(cpath)
        for sname, svc in services.items():
            if not isinstance(svc, dict) or not isinstance(svc.get("image"), str):
                continue
            mounts = []
            for v in svc.get("volumes") or []:
                if isinstance(v, str) and ":" in v:
                    src, dst = v.split(":")[:2]
                    mounts.append((posixpath.normpath(posixpath.join(base, src)), dst))
                elif isinstance(v, dict) and v.get("source") and v.get("target"):
                    mounts.append(
                        (
                            posixpath.normpath(posixpath.join(base, str(v["source"]))),
                            str(v["target"]),
                        )
                    )
            command = svc.get("command")
            cmd = (
                shell.split_exec(command)
                if isinstance(command, str)
                else [str(x) for x in command or []]
            )
            found += _container_proxy(
                host,
                f"{sname} (compose {cpath})",
                Container((), True, res),
                managed,
                mounts,
                svc["image"],
                cmd,
            )
    return found
