"""What a proxy does to a connection, as every proxy parser reports it.

A parser reads one proxy's config and returns :class:`Hop`s: one per frontend
or listener and backend, saying whether the hop ends the client's TCP
connection (``terminating``), connects onward with the client's address
(``transparent``: TPROXY, ``usesrc clientip``, ``proxy_bind ... transparent``,
Envoy's original_src) or forwards packets keeping the client's address
(``preserving``: LVS NAT/DR/TUN). PROXY protocol does not preserve anything a
NetworkPolicy can see: it counts as terminating.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

Mode = Literal["terminating", "transparent", "preserving"]


@dataclass(frozen=True)
class Backend:
    host: str
    port: int | None  # None: not given (the listener's port or a name)


@dataclass(frozen=True)
class Hop:
    proxy: str  # "HAProxy", "nginx", ...
    where: str  # "frontend fe_web", "server :80 location /", ...
    mode: Mode
    backends: tuple[Backend, ...]
    detail: str = ""  # why this mode ("mode tcp, no `usesrc clientip`", ...)
    check_sources: tuple[str, ...] = ()  # L4 LBs: where health checks come from
    checks_backend_port: bool = False  # L4 LBs: checks connect to the backend's port
    check_source_unknown: bool = False  # L4 LBs: checks come from an address not in the config


class ConfigError(ValueError):
    """A config a parser cannot read (reported as a finding naming the file)."""


def port_number(value: object, where: str) -> int | None:
    """A config's numeric port (YAML/JSON numbers); None when absent. NaN, infinite,
    fractional or out-of-range values are a ConfigError naming ``where``."""
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} {value!r} is not a port number")
    if isinstance(value, float) and (math.isnan(value) or not value.is_integer()):
        raise ConfigError(f"{where} {value!r} is not a whole port number")
    if not 0 < value < 65536:
        raise ConfigError(f"{where} {value!r} is out of the port range 1-65535")
    return int(value)


_HOSTPORT = re.compile(r"^\[?(?P<host>[0-9A-Za-z._:%-]*?)\]?(?::(?P<port>\d+))?$")


def split_hostport(text: str, default_port: int | None = None) -> Backend | None:
    """``host:port``, ``[v6]:port``, ``scheme://host:port/path`` as a Backend."""
    scheme = ""
    if "://" in text:
        scheme, _, text = text.partition("://")
    text = text.split("/", 1)[0]
    if "@" in text:  # HAProxy's ipv4@ / unix@ prefixes, userinfo in URLs
        prefix, _, rest = text.rpartition("@")
        if prefix in ("unix", "abns", "fd", "sockpair"):
            return None
        text = rest
    if text.count(":") > 1 and not text.startswith("["):
        return Backend(text, default_port)  # a bare IPv6 address
    m = _HOSTPORT.match(text)
    if not m or not m.group("host"):
        return None
    port = int(m.group("port")) if m.group("port") else None
    if port is None:
        port = {"http": 80, "https": 443, "h2c": 80, "grpc": 80}.get(scheme.lower(), default_port)
    return Backend(m.group("host"), port)
