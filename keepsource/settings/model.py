"""The whole stack: one typed record of every value a lab has."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator

from keepsource.settings.base import Model, Net4
from keepsource.settings.checks import HealthCheck, Verify
from keepsource.settings.lb import Lb
from keepsource.settings.network import Apiserver, Network, Worker
from keepsource.settings.workload import Kubernetes, Workload


def _client_cidr(value: Net4) -> Net4:
    if value.prefixlen == 0:
        raise ValueError("admits the whole world; name the clients")
    return value


class Settings(Model):
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

    @field_validator("verify", mode="before")
    @classmethod
    def _empty_verify(cls, value: Any) -> Any:
        """``{}`` (Pulumi.yaml's default for the key) means: no verify section."""
        return None if value == {} else value

    # -- derived facts, used by renderers and the policy ---------------------
    @property
    def worker_addresses(self) -> list[str]:
        return [str(w.address) for w in self.workers]

    @property
    def manages_workload(self) -> bool:
        """False in LB-only mode: the Kubernetes objects are managed elsewhere."""
        return self.workload.managed_by == "keepsource"
