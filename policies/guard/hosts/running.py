"""Finding the proxies on a host: the systemd services left running or
enabled, the processes, containers and compose services a Command started,
each with its config read by that proxy's parser.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from guard import shell
from guard.base import Resource
from guard.hosts.configs import _debian_default_config, _files_under, _flag_values, _read, _unit
from guard.hosts.model import ARGV_KINDS, KINDS, Container, File, Host, Proxy, Service, image_kind
from guard.proxies import caddy as proxy_caddy
from guard.proxies import socat as proxy_socat


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
        proxy = _service_proxy(host, name, svc, managed)
        if proxy is not None:
            found.append(proxy)
    for prog, pargv, res, _session in host.processes:
        found.append(_process_proxy(host, prog, pargv, res, managed))
    for name, c in host.containers.items():
        if c.running and c.image is not None:
            found += _container_proxy(host, name, c, managed, list(c.mounts), c.image, list(c.cmd))
        elif c.running:
            found += _container_proxy(host, name, c, managed)
    for path, res in host.compose:
        found += _compose_proxies(host, path, res, managed)
    return found


def _service_state(svc: Service) -> str:
    """How a service is left: running or enabled, and what may stop it or not."""
    state = "running" if svc.running else "enabled (runs after a reboot)"
    if svc.maskers and svc.running:
        state = "masked but still running (`systemctl mask` does not stop it; use `systemctl mask --now`)"
    elif len(svc.running) > 1 or (svc.running and any(True for _ in svc.maskers)):
        state += " (started by Commands not ordered before the one that stops it)"
    if svc.maybe_stopped:
        state += f" ({'; '.join(dict.fromkeys(svc.maybe_stopped))})"
    return state


def _service_proxy(host: Host, name: str, svc: Service, managed: str | None) -> Proxy | None:
    """The proxy a systemd service runs, if it is left running or enabled."""
    claim = svc.last()
    if claim is None:
        return None
    by, how = claim
    state = _service_state(svc)
    # a socket unit starts its service (same name) on the first connection
    stem = name.removesuffix(".socket")
    argv, env = _unit(host, stem)
    kind_name = posixpath.basename(argv[0]) if argv else name
    if kind_name in ARGV_KINDS:
        hops = ARGV_KINDS[kind_name](argv[1:])
        if kind_name == "kubectl" and "port-forward" not in argv:
            return None
        return Proxy(
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
    kind = KINDS.get(kind_name)
    if kind is None:
        return None
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
    return Proxy(
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


def _process_proxy(
    host: Host, prog: str, pargv: tuple[str, ...], res: Resource, managed: str | None
) -> Proxy:
    """The proxy a process started by a Command runs."""
    if prog in ARGV_KINDS:
        hops = ARGV_KINDS[prog](list(pargv))
        return Proxy(
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
    if prog == "caddy" and pargv and pargv[0] == "reverse-proxy":
        return Proxy(
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
    kind = KINDS[prog]
    cfgs = _flag_values(pargv, kind.config_flags)
    files = _files_under(host, cfgs or kind.config_paths)
    hops, missing, error = _read(host, kind, files)
    return Proxy(
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
