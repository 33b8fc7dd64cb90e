"""The events a script's programs cause, and the tables that name those
programs: :class:`Event` (what the reader emits; ``STDIN`` marks content that is
the Command's stdin), ``KNOWN_PROGS`` and ``NETFILTER_PROGS``, and how the
service managers (``systemctl``, ``service``, ``update-rc.d``), package managers
(``PKG_INSTALL``), container tools (``docker``/``podman``/``nerdctl`` and
compose) and ``pkill``/``killall`` map their arguments to events; any other
program is a ``process`` run. Nothing here reads the script itself.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

STDIN = "\0stdin"  # content marker: the Command's stdin
#: Programs run by path that are no script of the stack's own (their effects are
#: read elsewhere, or have none on the traffic path).
KNOWN_PROGS = (
    "haproxy",
    "nginx",
    "envoy",
    "caddy",
    "traefik",
    "socat",
    "keepalived",
    "systemctl",
    "iptables",
    "ipvsadm",
    "nft",
    "sysctl",
    "modprobe",
    "ip",
    "cat",
    "tee",
    "install",
    "cp",
    "mv",
    "rm",
    "mkdir",
    "chmod",
    "chown",
    "ln",
    "true",
    "false",
    "curl",
    "wget",
    "apt-get",
    "apt",
    "dpkg",
    "docker",
    "podman",
)
#: Programs whose arguments are NAT rules or LVS services (guard_nat reads them).
NETFILTER_PROGS = (
    "iptables",
    "iptables-nft",
    "iptables-legacy",
    "ip6tables",
    "ipvsadm",
    "nft",
    "iptables-restore",
    "iptables-nft-restore",
    "iptables-legacy-restore",
    "ip6tables-restore",
)


@dataclass(frozen=True)
class Event:
    """kind: write (path, content or None=unknown, or STDIN), copy (src -> path),
    move, remove; service (name, action); package (name, action); container
    (name, action, argv = the run's argv); compose (path, action); process (argv)."""

    kind: str
    name: str
    action: str = ""
    content: str | None = None
    source: str | None = None
    argv: tuple[str, ...] = ()
    uncertain: str = ""  # why it may never run ("inside an `if` branch"); "" = it runs


SYSTEMCTL_ACTIONS = {
    "start",
    "stop",
    "restart",
    "reload",
    "reload-or-restart",
    "try-restart",
    "try-reload-or-restart",
    "condrestart",
    "force-reload",
    "enable",
    "disable",
    "mask",
    "unmask",
    "kill",
    "reenable",
}
PKG_INSTALL = {
    "apt-get": "apt",
    "apt": "apt",
    "aptitude": "apt",
    "dnf": "rpm",
    "yum": "rpm",
    "zypper": "rpm",
    "apk": "apk",
    "pacman": "pacman",
}


def _service_events(prog: str, args: list[str]) -> list[Event]:
    events: list[Event] = []
    if prog == "systemctl":
        flags = {a for a in args if a.startswith("-")}
        pos = [a for a in args if not a.startswith("-")]
        if pos and pos[0] in SYSTEMCTL_ACTIONS:
            action = pos[0]
            if "--now" in flags and action in ("enable", "disable", "mask"):
                action += "+now"
            for unit in pos[1:]:
                events.append(Event("service", _unit(unit), action))
    elif prog == "service" and len(args) >= 2:
        events.append(Event("service", _unit(args[0]), args[1]))
    elif prog in ("update-rc.d",) and len(args) >= 2:
        events.append(
            Event(
                "service",
                _unit(args[0]),
                {"enable": "enable", "disable": "disable", "remove": "disable"}.get(args[1], ""),
            )
        )
    elif prog in PKG_INSTALL:
        value_opts = {"-o", "-t", "-c", "--option", "--target-release", "--config-file", "-X"}
        pos = [
            a
            for i, a in enumerate(args)
            if not a.startswith("-") and (i == 0 or args[i - 1] not in value_opts)
        ]
        if pos and pos[0] in ("install", "add", "reinstall", "-S"):
            for pkg in pos[1:]:
                events.append(
                    Event("package", pkg.split("=")[0], "install", source=PKG_INSTALL[prog])
                )
        elif pos and pos[0] in ("remove", "purge", "del", "erase", "autoremove"):
            for pkg in pos[1:]:
                events.append(Event("package", pkg, "remove", source=PKG_INSTALL[prog]))
        elif "-S" in args:
            for pkg in pos:
                events.append(Event("package", pkg, "install", source=PKG_INSTALL[prog]))
    elif prog in ("docker", "podman", "nerdctl"):
        events += _container_events(prog, args)
    elif prog == "docker-compose" or prog == "podman-compose":
        events += _compose_events(args)
    elif prog in ("pkill", "killall"):
        pos = [a for a in args if not a.startswith("-")]
        for p in pos:
            events.append(Event("process", posixpath.basename(p), "kill"))
    else:
        events.append(Event("process", prog, "run", argv=tuple(args)))
    return events


def _unit(name: str) -> str:
    return name[: -len(".service")] if name.endswith(".service") else name


# docker run options that take a value (the rest are flags).
_RUN_VALUE_OPTS = {
    "-p",
    "--publish",
    "-v",
    "--volume",
    "--name",
    "-e",
    "--env",
    "--network",
    "--net",
    "--restart",
    "--mount",
    "-w",
    "--workdir",
    "--entrypoint",
    "-u",
    "--user",
    "-l",
    "--label",
    "--env-file",
    "--cap-add",
    "--cap-drop",
    "-h",
    "--hostname",
    "--log-driver",
    "--log-opt",
    "--memory",
    "-m",
    "--cpus",
    "--add-host",
    "--dns",
    "--ip",
    "--pull",
    "--platform",
    "--sysctl",
    "--ulimit",
    "--device",
    "--tmpfs",
    "--security-opt",
    "--health-cmd",
    "--stop-signal",
    "--pid",
    "--ipc",
    "--userns",
    "--expose",
}


def _container_events(prog: str, args: list[str]) -> list[Event]:
    # skip global options (docker -H x run ...)
    while args and args[0].startswith("-"):
        args = args[2:] if args[0] in ("-H", "--host", "--context", "-c", "--config") else args[1:]
    if not args:
        return []
    sub, rest = args[0], args[1:]
    if sub == "container" and rest:
        sub, rest = rest[0], rest[1:]
    if sub == "compose":
        return _compose_events(rest)
    if sub in ("run", "create"):
        name = ""
        i = 0
        while i < len(rest):
            a = rest[i]
            if a.startswith("-"):
                key = a.split("=", 1)[0]
                if key == "--name":
                    name = (
                        a.split("=", 1)[1]
                        if "=" in a
                        else (rest[i + 1] if i + 1 < len(rest) else "")
                    )
                if "=" not in a and key in _RUN_VALUE_OPTS:
                    i += 1
                i += 1
                continue
            break
        image = rest[i] if i < len(rest) else ""
        return [
            Event("container", name or image, "run" if sub == "run" else "create", argv=tuple(rest))
        ]
    if sub in ("rm", "stop", "kill", "start", "restart"):
        names = [a for a in rest if not a.startswith("-")]
        return [Event("container", n, sub) for n in names]
    return []


def _compose_events(args: list[str]) -> list[Event]:
    files = []
    i = 0
    sub = ""
    while i < len(args):
        a = args[i]
        if a in ("-f", "--file") and i + 1 < len(args):
            files.append(args[i + 1])
            i += 2
            continue
        if a.startswith("--file="):
            files.append(a.split("=", 1)[1])
        elif a in ("--project-directory", "-p", "--project-name", "--env-file") and i + 1 < len(
            args
        ):
            i += 2
            continue
        elif not a.startswith("-") and not sub:
            sub = a
        i += 1
    if sub in ("up", "start", "restart", "create", "run"):
        return [Event("compose", f, "up") for f in files] or [Event("compose", "", "up")]
    if sub in ("down", "stop", "rm", "kill"):
        return [Event("compose", f, "down") for f in files] or [Event("compose", "", "down")]
    return []
