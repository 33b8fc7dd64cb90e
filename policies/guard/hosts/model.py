"""The host model: the resource types the guard replays, the proxy kinds it
knows (by service or program name, by command line, by container image) and
what a host holds once replayed: files, services, containers, processes and
the proxies found on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from guard.base import Resource
from guard.proxies import caddy as proxy_caddy
from guard.proxies import envoy as proxy_envoy
from guard.proxies import haproxy as proxy_haproxy
from guard.proxies import keepalived as proxy_keepalived
from guard.proxies import more as proxy_more
from guard.proxies import nginx as proxy_nginx
from guard.proxies import socat as proxy_socat
from guard.proxies import traefik as proxy_traefik
from guard.proxies.base import Hop

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
