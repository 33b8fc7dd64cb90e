"""Workload: Namespace, Deployment, Service and NetworkPolicy from the renderer's dicts.

Adoption of objects that already exist (the seed's, made with kubectl), chosen
after reading pulumi-kubernetes (provider/pkg/await/await.go, at commit
94977969d; the 4.34.2 tag was not in the mirror) and the engine (pulumi/pulumi
pkg/resource/deploy/step.go, at commit 1b5949891):

* Forced server-side apply, not ``import`` and not Patch resources. The
  provider's create with ``upsertExistingObjects`` is a server-side apply
  (await.go:190-191) whose ``force`` comes from ``patchForce`` (await.go:1031-
  1040): forced on preview when there is no live state yet, not forced on
  ``up`` unless the ``pulumi.com/patchForce`` annotation or the provider's
  ``enablePatchForce`` says so. So a field kubectl owns passes preview and
  conflicts on ``up``. ``enable_patch_force=True`` makes ``up`` do what
  preview showed: keepsource's fields win (which is the fix: Local traffic
  policy, the check source admitted). ``import`` would need every object's ID
  up front and inputs equal to the live object (the fix changes them); Patch
  resources, when deleted, drop the fields they applied (a Service without
  ports, a NetworkPolicy without its ingress rule: deny-all).
* ``retain_on_delete=True`` on every Kubernetes object, not ``protect``. A
  retained resource's delete is a no-op for the engine (step.go:661-662), so
  ``pulumi destroy``, a rename of ``workload.namespace`` (a replacement) or of
  the resource itself never deletes an object keepsource may not have created
  (the Namespace above all, with everything in it). ``protect`` would make
  ``destroy`` fail outright (step.go:645-647) and block every replacement; the
  engine reads the flag from the state (``s.old``), so it is set from the
  first ``up``. The pinned SDK names the hazard retain answers: with upsert,
  a renamed resource's create updates the existing object and the delete
  that follows removes it (pulumi_kubernetes 4.34.2 provider.py:99-101,
  ``upsert_existing_objects``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.apps.v1 import Deployment
from pulumi_kubernetes.core.v1 import Namespace, Service
from pulumi_kubernetes.networking.v1 import NetworkPolicy

from keepsource.render import kube
from keepsource.settings import Settings
from keepsource.settings.services import Exposed

TYPE = "keepsource:k8s:Workload"


@dataclass
class WorkloadArgs:
    settings: Settings
    """The validated stack settings: workload, nodePort, allowed clients, k8s context."""

    check_sources: Sequence[str]
    """The LB's health-check source addresses (plain values from the settings):
    admitted on the pod's port."""

    kubeconfig: pulumi.Input[str]
    """Kubeconfig path or contents for the explicit provider: a secret Output."""

    context: pulumi.Input[str] | None = None
    """The kubeconfig context (a secret Output when the stack set it secret)."""


class Workload(pulumi.ComponentResource):
    """The nginx workload behind the NodePort, guarded by an ipBlock NetworkPolicy."""

    provider: k8s.Provider
    """The explicit Kubernetes provider every object uses."""
    namespace: Namespace
    deployment: Deployment
    """The Deployment: the LB's cut-over waits for it."""
    service: Service
    network_policy: NetworkPolicy
    """The NetworkPolicy: the LB's cut-over waits for it (the check source admitted)."""
    namespace_objects: dict[str, Namespace]
    """Every namespace of the services, by name."""
    parts: dict[str, tuple[Deployment, Service, NetworkPolicy]]
    """Each service's Deployment, Service and NetworkPolicy (the LB's cut-over waits for them)."""
    node_port: pulumi.Output[int]
    """The Service's nodePort, as the cluster reports it."""
    admitted_sources: pulumi.Output[list[str]]
    """CIDRs the NetworkPolicy admits (clients and the LB's check sources)."""

    def __init__(
        self, name: str, args: WorkloadArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        settings = args.settings
        services = kube.managed(settings)
        namespaces = kube.namespaces(settings)
        legacy = settings.services is None
        props: dict[str, Any] = (
            {"namespace": namespaces[0]} if legacy else {"namespaces": namespaces}
        )
        super().__init__(TYPE, name, props, opts)
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=pulumi.Output.secret(args.kubeconfig),
            context=args.context,
            # Objects made by hand before (kubectl) are adopted by a forced
            # server-side apply, on up as on preview (see the module docstring).
            upsert_existing_objects=True,
            enable_server_side_apply=True,
            enable_patch_force=True,
            opts=pulumi.ResourceOptions(parent=self),
        )

        self._declare(name, services, namespaces, list(args.check_sources), legacy)
        first = services[0]
        self.namespace = self.namespace_objects[kube.namespace_of(first)]
        self.deployment, self.service, self.network_policy = self.parts[first.name]
        # Unknown at preview when the cluster allocates it; the LB follows it.
        self.node_port = self.service.spec.apply(lambda spec: int(spec.ports[0].node_port))
        sources = list(args.check_sources)
        self.admitted_sources = pulumi.Output.from_input(kube.admitted_sources(first, sources))
        if not legacy:
            self.register_outputs(
                {
                    "namespaces": namespaces,
                    "admittedSources": {
                        ex.name: kube.admitted_sources(ex, sources) for ex in services
                    },
                }
            )
            return
        self.register_outputs(
            {
                "namespace": namespaces[0],
                "nodePort": self.node_port,
                "admittedSources": self.admitted_sources,
            }
        )

    def _child(self, *deps: pulumi.Resource, was: str | None = None) -> pulumi.ResourceOptions:
        """``was``: the resource's name in the seed's layout, when a stack moved
        to the ``services`` list may still hold it (see :meth:`_declare`)."""
        return pulumi.ResourceOptions(
            parent=self,
            provider=self.provider,
            depends_on=list(deps),
            # Never delete what keepsource may not have created (see above).
            retain_on_delete=True,
            aliases=[pulumi.Alias(name=was)] if was is not None else None,
        )

    def _declare(
        self,
        name: str,
        services: Sequence[Exposed],
        namespaces: Sequence[str],
        sources: list[str],
        legacy: bool,
    ) -> None:
        """The namespaces once each, then each service's three objects. The
        seed's single workload keeps its resource names (and so its URNs). In a
        ``services`` list, the first workload service's objects and their
        namespace carry aliases to the seed's names: a stack moved to the list
        (its old workload listed first) renames them in the state and changes
        nothing in the cluster, rather than a create (an adoption) and a
        retained delete under new names. An alias that names nothing in the
        state is ignored by the engine, so a list written from scratch is not
        touched by it."""

        def body(obj: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}

        moved = None if legacy or not services else services[0]
        first_ns = kube.namespace_of(moved) if moved is not None else None
        self.namespace_objects = {
            ns: Namespace(
                f"{name}-ns" if legacy else f"{name}-ns-{ns}",
                **body(kube.namespace(ns)),
                opts=self._child(was=f"{name}-ns" if ns == first_ns else None),
            )
            for ns in namespaces
        }
        self.parts = {}
        for ex in services:
            ns = self.namespace_objects[kube.namespace_of(ex)]
            prefix = name if legacy else f"{name}-{ex.name}"

            def opts(kind: str, ex: Exposed = ex, ns: Namespace = ns) -> pulumi.ResourceOptions:
                return self._child(ns, was=f"{name}-{kind}" if ex is moved else None)

            self.parts[ex.name] = (
                Deployment(
                    f"{prefix}-deployment", **body(kube.deployment(ex)), opts=opts("deployment")
                ),
                Service(f"{prefix}-service", **body(kube.service(ex)), opts=opts("service")),
                NetworkPolicy(
                    f"{prefix}-networkpolicy",
                    **body(kube.network_policy(ex, sources)),
                    opts=opts("networkpolicy"),
                ),
            )
