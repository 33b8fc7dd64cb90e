"""Many services behind one LB (``keepsource:services``), and the one record
every renderer reads: :class:`Exposed`, one per service, the apiserver's
included.

A stack written the seed's way (``apiserver``, ``nodePort``, ``workload``,
``allowedClients``) is the same list of two: the apiserver's service, then the
workload's (see :func:`exposed`), so its keepalived.conf, switch rules and
Kubernetes objects are what they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from keepsource.settings.base import DnsLabel, IPv4, Model, Net4, Port, ServiceName, Text
from keepsource.settings.checks import HealthCheck
from keepsource.settings.workload import Workload

if TYPE_CHECKING:
    from keepsource.settings.model import Settings

Protocol = Literal["TCP", "UDP"]


def _client_cidr(value: Net4) -> Net4:
    if value.prefixlen == 0:
        raise ValueError("admits the whole world; name the clients")
    return value


ClientNet = Annotated[Net4, AfterValidator(_client_cidr)]


class ServicePort(Model):
    """One port of a service on the VIP."""

    name: DnsLabel = Field(description="The port's name (in the Service and the pool's name).")
    protocol: Protocol = Field(default="TCP", description="TCP or UDP.")
    port: Port = Field(description="The port on the VIP.")
    node_port: int | None = Field(
        default=None,
        ge=30000,
        le=32767,
        description="A workload service's NodePort on every worker (default: the VIP port).",
    )
    target_port: Port | None = Field(
        default=None,
        description="The pod's port (workload services), or the real servers' port "
        "(services with realServers; default: the VIP port).",
    )


class RealServerSpec(Model):
    name: DnsLabel
    address: IPv4


class ServiceCheck(Model):
    """How the LB checks a service's real servers: keepalived's TCP_CHECK for a
    TCP port; for a UDP port keepalived's UDP_CHECK sends ``udpPayload`` (or
    a DNS query for ``dnsQuery``) and requires a reply, since a node that
    drops the datagram (``externalTrafficPolicy: Local`` with no local pod)
    sends no error back and would otherwise pass."""

    udp_payload: str | None = Field(
        default=None,
        pattern=r"^([0-9a-fA-F]{2}){1,512}$",
        description="Hex of the datagram a UDP check sends (the service must answer it).",
    )
    dns_query: DnsLabel | Text | None = Field(
        default=None,
        description="A name the UDP check asks for (type A): for DNS services.",
    )

    @field_validator("dns_query")
    @classmethod
    def _dns_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        labels = value.rstrip(".").split(".")
        if not all(0 < len(x) <= 63 and x.replace("-", "").isalnum() for x in labels):
            raise ValueError("must be a DNS name (labels of letters, digits and '-')")
        return value


class ServiceSpec(Model):
    """One exposed service: its ports on the VIP, its clients, its backends."""

    name: ServiceName = Field(description="The service's name (DNS-1035).")
    ports: list[ServicePort] = Field(min_length=1, max_length=16)
    allowed_clients: list[ClientNet] = Field(
        default_factory=list,
        description="Client CIDRs its NetworkPolicy admits (workload services: at least one).",
    )
    workload: Workload | None = Field(
        default=None,
        description="Its workload (Deployment, NodePort Service, NetworkPolicy) behind "
        "every worker's nodePort; its name is the service's.",
    )
    real_servers: list[RealServerSpec] | None = Field(
        default=None,
        description="Or fixed real servers (the apiserver's masters): no Kubernetes objects.",
    )
    health_check: HealthCheck | None = Field(
        default=None, description="Check timing (default: keepsource:healthCheck)."
    )
    check: ServiceCheck = Field(default_factory=ServiceCheck)

    @model_validator(mode="after")
    def _one_backend(self) -> ServiceSpec:
        if (self.workload is None) == (self.real_servers is None):
            raise ValueError("give exactly one of workload and realServers")
        if self.workload is not None and not self.allowed_clients:
            raise ValueError("a workload service needs allowedClients (its NetworkPolicy)")
        if self.real_servers is not None:
            if not self.real_servers:
                raise ValueError("realServers is empty: the pool would never serve")
            if self.allowed_clients:
                raise ValueError(
                    "allowedClients needs a workload: keepsource declares no NetworkPolicy "
                    "for fixed real servers (filter on those hosts)"
                )
            if any(p.node_port is not None for p in self.ports):
                raise ValueError(
                    "a nodePort is for a workload service (realServers take targetPort)"
                )
        wl = self.workload
        if wl is not None and "name" in wl.model_fields_set and wl.name != self.name:
            raise ValueError("workload.name is the service's name: leave it out")
        names = [p.name for p in self.ports]
        if len(set(names)) != len(names):
            raise ValueError("two ports with one name")
        for p in self.ports:
            if p.protocol == "UDP" and not (self.check.udp_payload or self.check.dns_query):
                raise ValueError(
                    f"port {p.name} is UDP: set check.dnsQuery or check.udpPayload (a request "
                    "the service answers); without a reply required, a node that drops the "
                    "datagram would pass the check"
                )
        return self


@dataclass(frozen=True)
class ExposedPort:
    name: str
    protocol: Protocol
    port: int  # on the VIP
    backend_port: int  # on each real server (a nodePort, or the real server's port)
    target_port: int  # the pod's (workload) or the real server's port


@dataclass(frozen=True)
class Exposed:
    """One service as the renderers see it (plain values)."""

    name: str
    ports: tuple[ExposedPort, ...]
    real_servers: tuple[tuple[str, str], ...]  # (name, address)
    allowed_clients: tuple[Net4, ...]
    health_check: HealthCheck
    check: ServiceCheck
    workload: Workload | None  # keepsource's or external workload; None: fixed real servers
    legacy: bool = False  # the seed's single workload (its objects keep their names)

    @property
    def managed(self) -> bool:
        return self.workload is not None and self.workload.managed_by == "keepsource"

    def pool_name(self, port: ExposedPort) -> str:
        return self.name if len(self.ports) == 1 else f"{self.name}-{port.name}"


def exposed(s: Settings) -> tuple[Exposed, ...]:
    """Every service the LB exposes, in fwmark order."""
    if s.services is None:
        api, wl = s.apiserver, s.workload
        assert wl is not None and s.allowed_clients is not None
        return (
            Exposed(
                "apiserver",
                (ExposedPort("https", "TCP", api.port, api.port, api.port),),
                (("apiserver", str(api.address)),),
                (),
                s.health_check,
                ServiceCheck(),
                None,
            ),
            Exposed(
                wl.name,
                (ExposedPort("http", "TCP", s.node_port, s.node_port, wl.container_port),),
                tuple((w.name, str(w.address)) for w in s.workers),
                tuple(s.allowed_clients),
                s.health_check,
                ServiceCheck(),
                wl,
                legacy=True,
            ),
        )
    found = []
    for spec in s.services:
        hc = spec.health_check or s.health_check
        if spec.workload is not None:
            wl = spec.workload.model_copy(update={"name": spec.name})
            ports = tuple(
                ExposedPort(
                    p.name,
                    p.protocol,
                    p.port,
                    p.node_port or p.port,
                    p.target_port or wl.container_port,
                )
                for p in spec.ports
            )
            servers = tuple((w.name, str(w.address)) for w in s.workers)
        else:
            wl = None
            ports = tuple(
                ExposedPort(
                    p.name, p.protocol, p.port, p.target_port or p.port, p.target_port or p.port
                )
                for p in spec.ports
            )
            servers = tuple((r.name, str(r.address)) for r in spec.real_servers or ())
        found.append(
            Exposed(spec.name, ports, servers, tuple(spec.allowed_clients), hc, spec.check, wl)
        )
    return tuple(found)


def dns_query_payload(name: str) -> str:
    """The hex of a DNS query (RFC 1035 4.1) for ``name``, type A, class IN,
    recursion desired, id 0x6b73: what a DNS server answers, whatever the name."""
    out = bytearray.fromhex("6b7301000001000000000000")
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        out += bytes([len(raw)]) + raw
    out += bytes([0]) + bytes.fromhex("00010001")
    return out.hex()


def check_payload(check: ServiceCheck) -> str | None:
    if check.udp_payload:
        return check.udp_payload.lower()
    return dns_query_payload(check.dns_query) if check.dns_query else None
