"""The whole stack: one typed record of every value a lab has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from keepsource.settings.base import IPv4, Model
from keepsource.settings.checks import HealthCheck, Verify
from keepsource.settings.lb import Lb, Ssh
from keepsource.settings.metrics import Metrics
from keepsource.settings.network import Apiserver, Network, Worker
from keepsource.settings.services import ClientNet, Exposed, ServiceSpec, exposed
from keepsource.settings.workload import Kubernetes, Workload

#: The resource name of the LB when there is one (a pair names its hosts).
SINGLE_LB_NAME = "lb"


@dataclass(frozen=True)
class LbNode:
    """One LB host as the renderers and the components see it: one for a
    single LB, two for a pair."""

    name: str
    ssh: Ssh
    ssh_at: tuple[int | str, ...]
    """Where its ssh block sits in the config (for messages)."""
    check_source: IPv4
    """Its health checks' source address (the NetworkPolicy admits it): its
    checkAddress, else its internal address."""
    internal_address: IPv4
    """Its own address on the internal subnet (the gateway address for one LB):
    VRRP, IPVS sync and the metrics listener; what a relay on it leaves from."""
    own_addresses: tuple[tuple[IPv4, str], ...]
    """(address, config key) that must be this host's own before anything changes."""
    external_address: IPv4 | None = None
    external_interface: str | None = None
    internal_interface: str | None = None
    priority: int = 100
    peer_external: IPv4 | None = None
    peer_internal: IPv4 | None = None


class Settings(Model):
    """Everything a keepsource stack is configured with."""

    network: Network
    lb: Lb
    apiserver: Apiserver
    workers: list[Worker] = Field(min_length=1, description="Worker nodes, at least one.")
    node_port: int = Field(default=30080, ge=30000, le=32767, description="The Service's NodePort.")
    workload: Workload | None = Field(
        default=None, description="The one workload (or list services instead)."
    )
    allowed_clients: list[ClientNet] | None = Field(
        default=None, min_length=1, description="Client CIDRs the NetworkPolicy admits."
    )
    services: list[ServiceSpec] | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Many services behind the LB, each with its ports, clients and "
        "backends (instead of nodePort, workload and allowedClients).",
    )
    health_check: HealthCheck = Field(default_factory=HealthCheck)
    kubernetes: Kubernetes = Field(default_factory=Kubernetes)
    verify: Verify | None = Field(default=None, description="End-state check clients.")
    metrics: Metrics | None = Field(
        default=None,
        description="Prometheus's view of the LB: Debian's node exporter (IPVS) on each LB "
        "host's internal address, for the named scrapers only.",
    )

    @field_validator("verify", "workload", "metrics", mode="before")
    @classmethod
    def _empty_verify(cls, value: Any) -> Any:
        """``{}`` (Pulumi.yaml's default for the key) means: no such section."""
        return None if value == {} else value

    @field_validator("allowed_clients", "services", mode="before")
    @classmethod
    def _empty_list(cls, value: Any) -> Any:
        """``[]`` (Pulumi.yaml's default for the key) means: not given."""
        return None if value == [] else value

    # -- derived facts, used by renderers and the policy ---------------------
    @property
    def worker_addresses(self) -> list[str]:
        return [str(w.address) for w in self.workers]

    @property
    def is_pair(self) -> bool:
        return bool(self.lb.hosts)

    @property
    def lb_nodes(self) -> tuple[LbNode, ...]:
        """The LB host(s). Call only on validated settings (``parse``): exactly
        one of ``lb.ssh`` and a two-host ``lb.hosts`` is set then."""
        net = self.network
        if not self.lb.hosts:
            assert self.lb.ssh is not None
            hairpin = (net.hairpin_source, "network.hairpinSource")
            own: list[tuple[IPv4, str]] = [
                (net.vip, "network.vip"),
                (net.lb_internal_address, "network.lbInternalAddress"),
            ]
            own += [hairpin] if net.hairpin_source not in (net.vip, net.lb_internal_address) else []
            check = net.check_address
            own += [(check, "network.checkAddress")] if check is not None else []
            return (
                LbNode(
                    SINGLE_LB_NAME,
                    self.lb.ssh,
                    ("lb", "ssh"),
                    check_source=check or net.lb_internal_address,
                    internal_address=net.lb_internal_address,
                    own_addresses=(*own,),
                ),
            )
        hosts = self.lb.hosts
        nodes = []
        for i, h in enumerate(hosts):
            peer = hosts[1 - i]
            pair_own: tuple[tuple[IPv4, str], ...] = (
                (h.external_address, f"lb.hosts[{i}].externalAddress"),
                (h.internal_address, f"lb.hosts[{i}].internalAddress"),
            )
            if h.check_address is not None:
                pair_own += ((h.check_address, f"lb.hosts[{i}].checkAddress"),)
            nodes.append(
                LbNode(
                    name=h.name,
                    ssh=h.ssh,
                    ssh_at=("lb", "hosts", i, "ssh"),
                    check_source=h.check_address or h.internal_address,
                    internal_address=h.internal_address,
                    own_addresses=pair_own,
                    external_address=h.external_address,
                    external_interface=h.external_interface,
                    internal_interface=h.internal_interface,
                    # The first host is preferred at the very start; with
                    # nopreempt a returning host never takes the VIPs back.
                    priority=150 if i == 0 else 100,
                    peer_external=peer.external_address,
                    peer_internal=peer.internal_address,
                )
            )
        return tuple(nodes)

    @property
    def check_sources(self) -> list[IPv4]:
        return [n.check_source for n in self.lb_nodes]

    @property
    def shared_check_sources(self) -> list[IPv4]:
        """Check sources that are also an LB host's internal address (no
        checkAddress): a relay on that host passes the NetworkPolicies too."""
        return [n.check_source for n in self.lb_nodes if n.check_source == n.internal_address]

    @property
    def exposed(self) -> tuple[Exposed, ...]:
        """Every service on the VIP, the apiserver's included, in fwmark order."""
        return exposed(self)

    @property
    def manages_workload(self) -> bool:
        """Whether the program declares Kubernetes objects (a workload service
        managed by keepsource); False in LB-only mode (managed elsewhere)."""
        return any(e.managed for e in self.exposed)

    @property
    def single(self) -> Workload:
        """The one workload of a stack written the seed's way (verify and the
        lab read it); a stack with ``services`` has none."""
        if self.workload is None:
            raise ValueError("this stack lists services: it has no single workload")
        return self.workload


def shared_check_warning(settings: Settings) -> str:
    """What a stack without a checkAddress admits, and the key that fixes it."""
    where = "lb.hosts[i].checkAddress" if settings.is_pair else "network.checkAddress"
    shared = ", ".join(str(a) for a in settings.shared_check_sources)
    return (
        f"keepsource:{where} is not set: the LB's health checks come from {shared}, its "
        "internal address, so the NetworkPolicies admit every connection the LB itself "
        "makes from it (a relay on the LB, ssh -L, a local proxy reaches the pods). Give "
        "the checks an address of their own on the LB and set it there."
    )
