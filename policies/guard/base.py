"""Facts the guard reads: resources, findings, unknown and malformed values.

Plain data only: this module imports neither Pulumi nor pulumi-policy, so every
part of the guard can be tested without an engine. The pulumi-policy adapter
(pack.py) turns what the engine sends into these types.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# Policy names (also the names the Pulumi CLI shows and config keys use).
TERMINATING = "no-terminating-proxy-before-ipblock"
SNAT = "client-address-kept-by-kube-proxy"
HEALTH = "lb-health-checks-admitted"
WORLD = "world-open-ipblock"
UNKNOWN_POLICY = "unknown-at-preview"
MALFORMED = "readable-guard-inputs"


@dataclass(frozen=True)
class Unknown:
    """A value the engine does not know yet (preview): where it sits."""

    path: str
    kind: str = "value"

    def __repr__(self) -> str:
        return f"<unknown {self.kind} at {self.path}>"


@dataclass(frozen=True)
class Asset:
    """A Pulumi asset as the engine delivers it (text, file path or URI)."""

    text: str | None = None
    path: str | None = None
    uri: str | None = None


# The engine's wire signature of an asset (what a unit test builds by hand).
ASSET_SIG_KEY = "4dabf18193072939515e22adb298388d"
ASSET_SIG = "c44067f5952c0a294b673a41bacd8c17"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    parent: str | None = None
    dependencies: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    policy: str
    level: Literal["violation", "advisory"]
    message: str
    urn: str | None = None


def normalize(value: Any) -> Any:
    """Wire-shaped dicts (asset and secret signatures) as plain values."""
    if isinstance(value, Mapping):
        sig = value.get(ASSET_SIG_KEY)
        if sig == ASSET_SIG:
            return Asset(
                text=_opt_str(value.get("text")),
                path=_opt_str(value.get("path")),
                uri=_opt_str(value.get("uri")),
            )
        if sig == SECRET_SIG:
            return normalize(value.get("value"))
        return {str(k): normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    return value


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class Malformed(Exception):  # noqa: N818 (a finding, not a crash)
    def __init__(self, field: str, value: Any, reason: str) -> None:
        super().__init__(f"{field}: {value!r} {reason}")
        self.field = field
        self.value = value
        self.reason = reason


def describe(res: Resource) -> str:
    kind = res.type.rsplit(":", 1)[-1]
    meta = res.props.get("metadata") if isinstance(res.props, Mapping) else None
    ns = meta.get("namespace") if isinstance(meta, Mapping) else None
    name = meta.get("name") if isinstance(meta, Mapping) else None
    label = str(name) if isinstance(name, str) else res.name
    if isinstance(ns, str):
        label = f"{ns}/{label}"
    return f"{kind} {label}"


# -- typed readers: each returns the value, an Unknown, or raises Malformed ----------


def dig(obj: Any, *path: str | int) -> Any:
    """obj[path...]; None when absent; the Unknown itself when a step is unknown."""
    cur = obj
    for key in path:
        if isinstance(cur, Unknown) or cur is None:
            return cur
        if isinstance(key, int):
            if isinstance(cur, Sequence) and not isinstance(cur, str) and key < len(cur):
                cur = cur[key]
            else:
                return None
        elif isinstance(cur, Mapping):
            cur = cur.get(key)
        else:
            return None
    return cur


def as_list(value: Any, field_: str) -> list[Any] | Unknown:
    if value is None:
        return []
    if isinstance(value, Unknown):
        return value
    if isinstance(value, list | tuple):
        return list(value)
    raise Malformed(field_, value, "is not a list")


def as_map(value: Any, field_: str) -> Mapping[str, Any] | Unknown:
    if value is None:
        return {}
    if isinstance(value, Unknown):
        return value
    if isinstance(value, Mapping):
        return value
    raise Malformed(field_, value, "is not an object")


def as_str(value: Any, field_: str) -> str | Unknown | None:
    if value is None or isinstance(value, str | Unknown):
        return value
    raise Malformed(field_, value, "is not a string")


def as_port(value: Any, field_: str) -> int | str | Unknown | None:
    """A port number (floats on the wire) or a port name."""
    if value is None or isinstance(value, Unknown):
        return value
    if isinstance(value, bool):
        raise Malformed(field_, value, "is not a port")
    if isinstance(value, float):
        if math.isnan(value):
            raise Malformed(field_, value, "is not a number (NaN), so not a port")
        if math.isinf(value):
            raise Malformed(field_, value, "is infinite, so not a port (1-65535)")
        if not value.is_integer():
            raise Malformed(field_, value, "is not a whole port number")
        if abs(value) >= 1e15:  # shown as the number sent, not its 300 digits
            raise Malformed(field_, value, "is out of the port range 1-65535")
        value = int(value)
    if isinstance(value, int):
        if not 0 < value < 65536:
            raise Malformed(field_, value, "is out of the port range 1-65535")
        return value
    if isinstance(value, str):
        if value.isdigit():
            return as_port(int(value), field_)
        if is_port_name(value):
            return value
        raise Malformed(
            field_,
            value,
            "is neither a port number (1-65535) nor a port name (1-15 lowercase letters, "
            "digits and inner single '-', at least one letter)",
        )
    raise Malformed(field_, value, "is not a port")


def is_port_name(text: str) -> bool:
    """A Kubernetes port name (IANA_SVC_NAME, as its validation IsValidPortName checks)."""
    return (
        0 < len(text) <= 15
        and all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in text)
        and any(c.isalpha() for c in text)
        and not text.startswith("-")
        and not text.endswith("-")
        and "--" not in text
    )


def as_cidr(value: Any, field_: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | Unknown:
    if isinstance(value, Unknown):
        return value
    if not isinstance(value, str):
        raise Malformed(field_, value, "is not a CIDR")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise Malformed(field_, value, "is not a CIDR") from None


def known_list(value: Any, field_: str, unknowns: list[tuple[str, Unknown]]) -> list[Any]:
    """``value`` as a list; one unknown at preview is noted in ``unknowns`` and
    read as empty (only the paths through it wait for ``pulumi up``)."""
    items = as_list(value, field_)
    if isinstance(items, Unknown):
        unknowns.append((field_, items))
        return []
    return items


def known_cidrs(
    value: Any, field_: str, unknowns: list[tuple[str, Unknown]]
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """A list of CIDRs; each one unknown at preview is noted and left out."""
    out = []
    for n, v in enumerate(known_list(value, field_, unknowns)):
        cidr = as_cidr(v, f"{field_}[{n}]")
        if isinstance(cidr, Unknown):
            unknowns.append((f"{field_}[{n}]", cidr))
        else:
            out.append(cidr)
    return out


def as_address(value: Any, field_: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | Unknown:
    if isinstance(value, Unknown):
        return value
    if not isinstance(value, str):
        raise Malformed(field_, value, "is not an IP address")
    try:
        return ipaddress.ip_address(value.split("/")[0] if value.endswith("/32") else value)
    except ValueError:
        raise Malformed(field_, value, "is not an IP address") from None


def is_ip(text: str) -> bool:
    """Whether a host is a literal IP address (not a name)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
