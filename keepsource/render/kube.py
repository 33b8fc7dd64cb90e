"""The Kubernetes objects as plain dicts (API field names, camelCase).

The Workload component declares exactly these; ``render`` writes exactly these
to manifests.yaml, so what a reviewer reads offline is what gets applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from keepsource.settings import Settings

Obj = dict[str, Any]

#: On every object: keepsource's fields win over another field manager's
#: (kubectl's, when the seed's objects are adopted) on ``pulumi up`` as on
#: preview. The provider option ``enable_patch_force`` does this only from
#: pulumi-kubernetes v4.29 on (provider/pkg/await/await.go:1031-1037 at v4.32.0);
#: the provider built here (a commit after v4.25.0) reads only this annotation
#: or an environment variable (await.go:905-911 there). Under the real engine,
#: adopting the seed's Service failed ("conflict with kubectl-client-side-apply
#: using v1: .spec.externalTrafficPolicy") until it was set. Inert for any other
#: tool that applies manifests.yaml.
PATCH_FORCE = {"pulumi.com/patchForce": "true"}


def labels(settings: Settings) -> dict[str, str]:
    return {"app.kubernetes.io/name": settings.workload.name}


def _meta(settings: Settings, name: str | None = None) -> Obj:
    wl = settings.workload
    return {
        "name": name or wl.name,
        "namespace": wl.namespace,
        "labels": labels(settings),
        "annotations": dict(PATCH_FORCE),
    }


def namespace(settings: Settings) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": settings.workload.namespace, "annotations": dict(PATCH_FORCE)},
    }


def deployment(settings: Settings) -> Obj:
    wl = settings.workload
    port = wl.container_port
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(settings),
        "spec": {
            "replicas": wl.replicas,
            "selector": {"matchLabels": labels(settings)},
            "template": {
                "metadata": {"labels": labels(settings)},
                "spec": {
                    "containers": [
                        {
                            "name": wl.name,
                            "image": wl.image,
                            "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                            "readinessProbe": {
                                "tcpSocket": {"port": port},
                                "periodSeconds": 2,
                                "failureThreshold": 1,
                            },
                        }
                    ]
                },
            },
        },
    }


def service(settings: Settings) -> Obj:
    wl = settings.workload
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(settings),
        "spec": {
            "type": "NodePort",
            # Cluster would masquerade every NodePort packet: the pod would see a
            # node address, never the client. Local keeps the client address and
            # makes a node without a ready pod drop the traffic.
            "externalTrafficPolicy": "Local",
            "selector": labels(settings),
            "ports": [
                {
                    "name": "http",
                    "protocol": "TCP",
                    "port": wl.container_port,
                    "targetPort": wl.container_port,
                    "nodePort": settings.node_port,
                }
            ],
        },
    }


def admitted_sources(settings: Settings, check_source: str | Sequence[str]) -> list[str]:
    """CIDRs the NetworkPolicy admits: the allowed clients and the LB's check source(s)."""
    sources = [str(c) for c in settings.allowed_clients]
    for address in [check_source] if isinstance(check_source, str) else check_source:
        own = f"{address}/32"
        if own not in sources:
            sources.append(own)
    return sources


def check_sources(settings: Settings) -> list[str]:
    """The addresses the LB's health checks come from (plain values): each
    host's own internal address in a pair."""
    return [str(a) for a in settings.check_sources]


def network_policy(settings: Settings, check_source: str | Sequence[str]) -> Obj:
    wl = settings.workload
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(settings),
        "spec": {
            "podSelector": {"matchLabels": labels(settings)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"ipBlock": {"cidr": cidr}}
                        for cidr in admitted_sources(settings, check_source)
                    ],
                    # NetworkPolicy ports match the pod's port (after DNAT), not the NodePort.
                    "ports": [{"protocol": "TCP", "port": wl.container_port}],
                }
            ],
        },
    }


def objects(settings: Settings, check_source: str | None = None) -> list[Obj]:
    """Every object the program declares, in apply order."""
    source = check_source or check_sources(settings)
    return [
        namespace(settings),
        deployment(settings),
        service(settings),
        network_policy(settings, source),
    ]


def to_yaml(objs: list[Obj]) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False, default_flow_style=False)
