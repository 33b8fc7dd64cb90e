"""The stack's settings: one typed model of every value a lab has.

Stack config lives under the ``keepsource:`` namespace, one key per top-level
field below (camelCase, as ``pulumi config set`` writes them).  Unknown keys,
at the top level or nested, are errors.  :func:`parse` turns a flat config map
into :class:`Settings` or raises one :class:`ConfigError` that lists every
fault with the key it belongs to.

This module imports no Pulumi: the render CLI, the lab and the components all
share it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel

NAMESPACE = "keepsource"
#: The one key that holds a secret; it is never part of :class:`Settings`.
PRIVATE_KEY_KEY = "lbPrivateKey"

IPv4 = ipaddress.IPv4Address
Net4 = ipaddress.IPv4Network

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# name[:tag][@digest] with a registry/path; the tag must be explicit and not "latest".
_IMAGE = re.compile(
    r"^(?P<name>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError("must be a DNS label: lower-case letters, digits and '-', 1-63 characters")
    return value


def _pinned_image(value: str) -> str:
    match = _IMAGE.match(value)
    if not match:
        raise ValueError("is not a container image reference")
    tag, digest = match.group("tag"), match.group("digest")
    if digest is None and (tag is None or tag == "latest"):
        raise ValueError("must pin a tag other than 'latest' (or a sha256 digest)")
    return value


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        strict=False,
    )


class Network(_Model):
    """Address plan of the lab."""

    external_subnet: Net4 = Field(
        description="Subnet of the clients and the VIP (the LB's outside)."
    )
    internal_subnet: Net4 = Field(description="Subnet of the Kubernetes nodes (the LB's inside).")
    vip: IPv4 = Field(description="Virtual IP the clients connect to; an address of the LB host.")
    lb_internal_address: IPv4 = Field(
        description="The LB's address on the internal subnet: the nodes' default "
        "gateway and the source of the LB's health checks."
    )
    hairpin_source_: IPv4 | None = Field(
        default=None,
        alias="hairpinSource",
        description="Address internal clients of the VIP's services are source-NATed to "
        "(default: the VIP); never admitted by the NetworkPolicy.",
    )

    @property
    def hairpin_source(self) -> IPv4:
        return self.hairpin_source_ or self.vip


class Ssh(_Model):
    """How Pulumi reaches the LB host. The private key is not here: set it with
    ``pulumi config set --secret keepsource:lbPrivateKey``."""

    host: str = Field(min_length=1, description="Address or name of the LB host.")
    port: Port = Field(default=22, description="SSH port.")
    user: str = Field(
        default="root",
        min_length=1,
        description="Login user; a non-root user needs passwordless sudo.",
    )
    jump_host: str | None = Field(
        default=None, description="Optional bastion, as user@host[:port]."
    )
    host_key: str | None = Field(
        default=None,
        description="Pinned host public key ('ssh-ed25519 AAAA...'); without it the "
        "host key is not checked.",
    )

    @field_validator("jump_host")
    @classmethod
    def _jump(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[^@\s]+@[^@\s:]+(:\d{1,5})?$", value):
            raise ValueError("must look like user@host or user@host:port")
        return value

    @field_validator("host_key")
    @classmethod
    def _host_key(cls, value: str | None) -> str | None:
        if value is not None and not re.match(
            r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( .*)?$",
            value,
        ):
            raise ValueError("must be an OpenSSH public key line ('TYPE BASE64')")
        return value


class Lb(_Model):
    """The load-balancer host."""

    ssh: Ssh = Field(description="SSH connection to the LB host.")
    take_over: tuple[Literal["keepalived.conf"], ...] = Field(
        default=(),
        description="Things on the LB that keepsource did not write and may replace "
        "(a backup is kept): keepalived.conf.",
    )
    cutover_timeout: float = Field(
        default=60,
        ge=5,
        le=600,
        description="Seconds the cut-over waits for every pool to hold a healthy real server.",
    )


class Apiserver(_Model):
    """The Kubernetes apiserver behind VIP:port."""

    address: IPv4 = Field(description="The master's internal address.")
    port: Port = Field(default=6443, description="The apiserver's port.")


class Worker(_Model):
    """A worker node behind VIP:nodePort."""

    name: DnsLabel = Field(description="Node name.")
    address: IPv4 = Field(description="The node's internal address.")


class Workload(_Model):
    """The application the NetworkPolicy guards."""

    namespace: DnsLabel = Field(default="my-ns", description="Kubernetes namespace.")
    name: DnsLabel = Field(
        default="nginx", description="Name of the Deployment, Service and policy."
    )
    image: Annotated[str, AfterValidator(_pinned_image)] = Field(
        description="Container image with a pinned tag (not 'latest')."
    )
    replicas: int = Field(default=1, ge=0, le=100, description="Pod replicas.")
    container_port: Port = Field(default=80, description="The pod's port.")


class HealthCheck(_Model):
    """keepalived TCP_CHECK timing for every real server (seconds)."""

    delay_loop: float = Field(default=0.5, gt=0, le=60, description="Seconds between two checks.")
    connect_timeout: float = Field(
        default=1.0, gt=0, le=30, description="Seconds a connect may take."
    )
    retry: int = Field(default=1, ge=0, le=10, description="Retries before a server is failed.")
    delay_before_retry: float = Field(
        default=0.5, ge=0, le=30, description="Seconds before a retry."
    )


class Kubernetes(_Model):
    """The explicit Kubernetes provider (never the ambient KUBECONFIG)."""

    kubeconfig: str | None = Field(
        default=None, description="Kubeconfig contents or path; None: the provider's default."
    )
    context: str | None = Field(default=None, description="Kubeconfig context.")


class Client(_Model):
    """A client host the end-state check runs curl from."""

    name: DnsLabel = Field(description="Client name, e.g. host01.")
    address: IPv4 = Field(description="The client's address on the external subnet.")
    target: str = Field(
        min_length=1,
        description="How to run a command there: a network namespace name (via: netns) "
        "or user@host[:port] (via: ssh).",
    )


class Verify(_Model):
    """Where `python -m keepsource verify` runs its client checks from."""

    via: Literal["netns", "ssh"] = Field(description="netns on the local lab, ssh on a real lab.")
    allowed_client: Client = Field(description="A client the policy admits: must get the page.")
    denied_client: Client = Field(description="A client the policy refuses: must time out.")
    lb_target: str | None = Field(
        default=None,
        description="user@host[:port] verify uses to reach the LB; default: lb.ssh.",
    )
    ssh_identity: str | None = Field(
        default=None, description="Private key file for verify's SSH logins (not a secret value)."
    )
    known_hosts_file: str | None = Field(
        default=None, description="known_hosts file for verify's SSH logins (default: the user's)."
    )


def _client_cidr(value: Net4) -> Net4:
    if value.prefixlen == 0:
        raise ValueError("admits the whole world; name the clients")
    return value


class Settings(_Model):
    """Everything a keepsource stack is configured with."""

    network: Network
    lb: Lb
    apiserver: Apiserver
    workers: list[Worker] = Field(min_length=1, description="Worker nodes, at least one.")
    node_port: int = Field(default=30080, ge=30000, le=32767, description="The Service's NodePort.")
    workload: Workload
    allowed_clients: list[Annotated[Net4, AfterValidator(_client_cidr)]] = Field(
        min_length=1, description="Client CIDRs the NetworkPolicy admits."
    )
    health_check: HealthCheck = Field(default_factory=HealthCheck)
    kubernetes: Kubernetes = Field(default_factory=Kubernetes)
    verify: Verify | None = Field(default=None, description="End-state check clients.")

    # -- derived facts, used by renderers and the policy ---------------------
    @property
    def worker_addresses(self) -> list[str]:
        return [str(w.address) for w in self.workers]


# ----------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    key: str  # full config key, e.g. "keepsource:network.vip"
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"


class ConfigError(ValueError):
    """One error for a bad config: every fault, each naming its key."""

    def __init__(self, faults: Iterable[Fault]) -> None:
        self.faults = sorted(set(faults), key=lambda f: (f.key, f.reason))
        lines = "\n".join(f"  - {f}" for f in self.faults)
        super().__init__(f"invalid keepsource config ({len(self.faults)} faults):\n{lines}")


def _key(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + item)
    text = "".join(parts)
    return f"{NAMESPACE}:{text}" if text else NAMESPACE


def _faults_from(error: ValidationError) -> list[Fault]:
    faults = []
    for item in error.errors():
        loc = tuple(x for x in item["loc"] if not str(x).startswith("function-after"))
        reason = item["msg"]
        if item["type"] == "extra_forbidden":
            reason = "unknown key"
        elif item["type"] == "missing":
            reason = "required key is missing"
        elif reason.startswith("Value error, "):
            reason = reason.removeprefix("Value error, ")
        faults.append(Fault(_key(loc), reason))
    return faults


# ----------------------------------------------------------------------------
# Cross-field rules
# ----------------------------------------------------------------------------


def cross_faults(s: Settings) -> list[Fault]:
    """Rules that tie several keys together."""
    faults: list[Fault] = []
    net = s.network
    ext, inner = net.external_subnet, net.internal_subnet
    if ext.overlaps(inner):
        faults.append(Fault(_key(("network", "internalSubnet")), f"overlaps externalSubnet {ext}"))
    if net.vip not in ext:
        faults.append(Fault(_key(("network", "vip")), f"{net.vip} is outside externalSubnet {ext}"))
    inside: list[tuple[tuple[int | str, ...], IPv4]] = [
        (("network", "lbInternalAddress"), net.lb_internal_address),
        (("apiserver", "address"), s.apiserver.address),
    ]
    inside += [(("workers", i, "address"), w.address) for i, w in enumerate(s.workers)]
    for loc, addr in inside:
        if addr not in inner:
            faults.append(Fault(_key(loc), f"{addr} is outside internalSubnet {inner}"))
    for loc, addr in [(("network", "vip"), net.vip), *inside]:
        for subnet in (ext, inner):
            edges = (subnet.network_address, subnet.broadcast_address)
            if subnet.prefixlen < 31 and addr in edges:
                faults.append(
                    Fault(_key(loc), f"{addr} is the network or broadcast address of {subnet}")
                )
    seen: dict[IPv4, str] = {}
    for loc, addr in [(("network", "vip"), net.vip), *inside]:
        key = _key(loc)
        if addr in seen:
            faults.append(Fault(key, f"duplicate address {addr} (also {seen[addr]})"))
        else:
            seen[addr] = key
    names: dict[str, int] = {}
    for i, w in enumerate(s.workers):
        if w.name in names:
            faults.append(Fault(_key(("workers", i, "name")), f"duplicate worker name {w.name!r}"))
        names.setdefault(w.name, i)
    hairpin = net.hairpin_source
    if hairpin == net.lb_internal_address:
        faults.append(
            Fault(
                _key(("network", "hairpinSource")),
                "equals lbInternalAddress, the health-check source the NetworkPolicy admits",
            )
        )
    for i, cidr in enumerate(s.allowed_clients):
        if hairpin in cidr:
            faults.append(
                Fault(
                    _key(("network", "hairpinSource")),
                    f"{hairpin} is inside allowedClients[{i}] {cidr}: the NetworkPolicy would "
                    "admit every node and pod through it (set network.hairpinSource)",
                )
            )
    if s.node_port == s.apiserver.port:
        faults.append(
            Fault(_key(("nodePort",)), f"equals apiserver.port {s.apiserver.port} on the same VIP")
        )
    for i, cidr in enumerate(s.allowed_clients):
        if cidr.overlaps(inner):
            faults.append(
                Fault(
                    _key(("allowedClients", i)),
                    f"{cidr} overlaps internalSubnet {inner}: clients come from outside",
                )
            )
    if s.verify is not None:
        allowed, denied = s.verify.allowed_client, s.verify.denied_client
        for field, client in (("allowedClient", allowed), ("deniedClient", denied)):
            if client.address not in ext:
                faults.append(
                    Fault(
                        _key(("verify", field, "address")),
                        f"{client.address} is outside externalSubnet {ext}",
                    )
                )
        if not any(allowed.address in c for c in s.allowed_clients):
            faults.append(
                Fault(
                    _key(("verify", "allowedClient", "address")),
                    f"{allowed.address} is not in allowedClients",
                )
            )
        if any(denied.address in c for c in s.allowed_clients):
            faults.append(
                Fault(
                    _key(("verify", "deniedClient", "address")),
                    f"{denied.address} is admitted by allowedClients",
                )
            )
    return faults


# ----------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------


def _decode(value: Any) -> Any:
    """Pulumi hands config values over as strings (objects and lists as JSON)."""
    if isinstance(value, str):
        text = value.strip()
        if (
            text[:1] in "[{"
            or text in ("true", "false", "null")
            or re.fullmatch(r"-?\d+(\.\d+)?", text)
        ):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return value
    return value


def split_namespace(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[Fault]]:
    """Strip ``keepsource:`` from a flat config map; other namespaces are left
    to their owners (``kubernetes:``, ``command:``...), bare keys are faults."""
    values: dict[str, Any] = {}
    faults: list[Fault] = []
    for full, value in config.items():
        ns, sep, key = full.partition(":")
        if not sep:
            faults.append(Fault(full, "config keys must be namespaced as keepsource:KEY"))
        elif ns == NAMESPACE:
            values[key] = _decode(value)
    return values, faults


def parse(config: Mapping[str, Any], secret_keys: Iterable[str] = ()) -> Settings:
    """Validate a flat ``{"keepsource:key": value}`` map.

    ``keepsource:lbPrivateKey`` is accepted only as a secret (``secret_keys`` lists
    it, or it is a ``{secure: ...}`` value from a stack file) and is never part
    of the returned settings.
    """
    values, faults = split_namespace(config)
    full_key = f"{NAMESPACE}:{PRIVATE_KEY_KEY}"
    if PRIVATE_KEY_KEY in values:
        raw = values.pop(PRIVATE_KEY_KEY)
        is_secure = isinstance(raw, Mapping) and set(raw) == {"secure"}
        if full_key not in set(secret_keys) and not is_secure:
            faults.append(
                Fault(full_key, "is stored in plain text; set it with `pulumi config set --secret`")
            )
    try:
        settings = Settings.model_validate(values)
    except ValidationError as error:
        raise ConfigError(faults + _faults_from(error)) from None
    faults += cross_faults(settings)
    if faults:
        raise ConfigError(faults)
    return settings


def json_schema() -> dict[str, Any]:
    """JSON schema of the ``config:`` block of a ``Pulumi.STACK.yaml`` for editors."""
    inner = Settings.model_json_schema(by_alias=True)
    defs = inner.pop("$defs", {})
    props = {f"{NAMESPACE}:{k}": v for k, v in inner["properties"].items()}
    props[f"{NAMESPACE}:{PRIVATE_KEY_KEY}"] = {
        "description": "SSH private key of the LB host: only as a secret.",
        "type": "object",
        "properties": {"secure": {"type": "string"}},
        "required": ["secure"],
        "additionalProperties": False,
    }
    config_block: dict[str, Any] = {
        "type": "object",
        "properties": props,
        "required": [f"{NAMESPACE}:{k}" for k in inner.get("required", [])],
        "patternProperties": {r"^(?!keepsource:)[A-Za-z0-9_-]+:": {}},
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "keepsource stack file (Pulumi.STACK.yaml)",
        "type": "object",
        "properties": {
            "config": config_block,
            "secretsprovider": {"type": "string"},
            "encryptedkey": {"type": "string"},
            "encryptionsalt": {"type": "string"},
        },
        "$defs": defs,
    }


__all__ = [
    "NAMESPACE",
    "PRIVATE_KEY_KEY",
    "ConfigError",
    "Fault",
    "Settings",
    "json_schema",
    "parse",
]
