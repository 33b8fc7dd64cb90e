"""Workload: Namespace, Deployment, Service and NetworkPolicy from the renderer's dicts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.apps.v1 import Deployment
from pulumi_kubernetes.core.v1 import Namespace, Service
from pulumi_kubernetes.networking.v1 import NetworkPolicy

from keepsource.render import kube
from keepsource.settings import Settings

TYPE = "keepsource:k8s:Workload"


@dataclass
class WorkloadArgs:
    settings: Settings
    """The validated stack settings: workload, nodePort, allowed clients, k8s provider."""

    check_source: pulumi.Input[str]
    """The LB's health-check source address: admitted on the pod's port."""


def _kubeconfig(value: str | None) -> str | None:
    if value is not None and value.startswith("~"):
        return os.path.expanduser(value)
    return value


class Workload(pulumi.ComponentResource):
    """The nginx workload behind the NodePort, guarded by an ipBlock NetworkPolicy."""

    provider: k8s.Provider
    """The explicit Kubernetes provider every object uses."""
    node_port: pulumi.Output[int]
    """The Service's nodePort, as the cluster reports it."""
    admitted_sources: pulumi.Output[list[str]]
    """CIDRs the NetworkPolicy admits (clients and the LB's check source)."""

    def __init__(
        self, name: str, args: WorkloadArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        settings = args.settings
        super().__init__(TYPE, name, {"namespace": settings.workload.namespace}, opts)
        kc = settings.kubernetes
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=_kubeconfig(kc.kubeconfig),
            context=kc.context,
            # Objects made by hand before (kubectl) are adopted, not a failed create.
            upsert_existing_objects=True,
            opts=pulumi.ResourceOptions(parent=self),
        )

        def child(*deps: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(
                parent=self, provider=self.provider, depends_on=list(deps)
            )

        def body(obj: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}

        ns = Namespace(f"{name}-ns", **body(kube.namespace(settings)), opts=child())
        self.deployment = Deployment(
            f"{name}-deployment", **body(kube.deployment(settings)), opts=child(ns)
        )
        self.service = Service(f"{name}-service", **body(kube.service(settings)), opts=child(ns))
        source = pulumi.Output.from_input(args.check_source)
        policy = source.apply(lambda s: kube.network_policy(settings, s))
        self.network_policy = NetworkPolicy(
            f"{name}-networkpolicy",
            metadata=policy["metadata"],
            spec=policy["spec"],
            opts=child(ns),
        )
        self.namespace = ns
        self.node_port = self.service.spec.apply(lambda spec: int(spec.ports[0].node_port))
        self.admitted_sources = source.apply(lambda s: kube.admitted_sources(settings, s))
        self.register_outputs(
            {
                "namespace": settings.workload.namespace,
                "nodePort": self.node_port,
                "admittedSources": self.admitted_sources,
            }
        )
