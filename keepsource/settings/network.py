"""The address plan: subnets, VIP, the LB's inside, the apiserver and the workers."""

from __future__ import annotations

from pydantic import Field, field_validator

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
        "gateway (and the health checks' source when there is no checkAddress)."
    )
    check_address: IPv4 | None = Field(
        default=None,
        description="One LB: an address of the LB's own on the internal subnet that its "
        "health checks come from and nothing else; the NetworkPolicies admit exactly it "
        "(a relay on the LB, which leaves from lbInternalAddress, is not admitted). "
        "Configure it on the LB host as you do the VIP; a pair sets it per host.",
    )
    hairpin_source_config: IPv4 | None = Field(
        default=None,
        alias="hairpinSource",
        description="Address internal-subnet clients of a VIP service are SNATed to on "
        "the LB (hairpin); default: the VIP. Not the check source, not inside "
        "allowedClients.",
    )

    @field_validator("hairpin_source_config")
    @classmethod
    def _routable(cls, value: IPv4 | None) -> IPv4 | None:
        """An SNAT source the workers can answer: 127.0.0.1 would cut the
        kubelets off VIP:6443 without any check failing."""
        if value is not None and (
            value.is_loopback
            or value.is_unspecified
            or value.is_multicast
            or value.is_link_local
            or value == IPv4("255.255.255.255")
        ):
            raise ValueError(
                "must be an address the workers can answer (not loopback, 0.0.0.0, "
                "multicast, link-local or broadcast)"
            )
        return value

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
