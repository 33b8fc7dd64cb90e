"""The address plan: subnets, VIP, the LB's inside, the apiserver and the workers."""

from __future__ import annotations

from pydantic import Field

from keepsource.settings.base import DnsLabel, IPv4, Model, Net4, Port


class Network(Model):
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
    hairpin_source_config: IPv4 | None = Field(
        default=None,
        alias="hairpinSource",
        description="Address internal-subnet clients of a VIP service are SNATed to on "
        "the LB (hairpin); default: the VIP. Not the check source, not inside "
        "allowedClients.",
    )

    @property
    def hairpin_source(self) -> IPv4:
        """The hairpin SNAT source, resolved: ``hairpinSource`` or the VIP."""
        return self.hairpin_source_config or self.vip


class Apiserver(Model):
    """The Kubernetes apiserver behind VIP:port."""

    address: IPv4 = Field(description="The master's internal address.")
    port: Port = Field(default=6443, description="The apiserver's port.")


class Worker(Model):
    """A worker node behind VIP:nodePort."""

    name: DnsLabel = Field(description="Node name.")
    address: IPv4 = Field(description="The node's internal address.")
