"""Traefik (file provider, YAML or TOML): routers and their services' servers.

Traefik ends the client's connection for HTTP and TCP routers alike and has no
transparent mode; ``proxyProtocol`` does not keep the address for a
NetworkPolicy. Static config (entryPoints, providers.file) and dynamic config
(http/tcp routers and services) may share a file or not: both are read.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from typing import Any

import yaml

from guard.proxies.base import ConfigError, Hop, split_hostport

PROXY = "Traefik"


def load(text: str) -> Mapping[str, Any]:
    stripped = text.lstrip()
    try:
        if stripped.startswith("{"):
            data = json.loads(text)
        elif stripped.startswith("[") or "\n[" in text:
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"not YAML/TOML: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError("the config is not a mapping")
    return data


def _m(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def file_provider_paths(data: Mapping[str, Any]) -> list[str]:
    fp = _m(_m(data.get("providers")).get("file"))
    return [str(fp[k]) for k in ("filename", "directory") if isinstance(fp.get(k), str)]


def parse(text: str) -> list[Hop]:
    data = load(text)
    hops = []
    for proto in ("http", "tcp"):
        section = _m(data.get(proto))
        services = _m(section.get("services"))
        used = {str(_m(r).get("service")) for r in _m(section.get("routers")).values()}
        for sname, svc in services.items():
            servers = _l(_m(_m(svc).get("loadBalancer")).get("servers"))
            backends = []
            for s in servers:
                s = _m(s)
                target = s.get("url") if proto == "http" else s.get("address")
                b = split_hostport(str(target), 80) if target else None
                if b is not None:
                    backends.append(b)
            if not backends:
                continue
            routed = "" if sname in used or not used else " (no router uses it)"
            hops.append(
                Hop(
                    PROXY,
                    f"{proto} service {sname}{routed}",
                    "terminating",
                    tuple(backends),
                    f"Traefik {proto.upper()} proxying ends the connection (no transparent mode)",
                )
            )
    return hops
