"""The Kubernetes objects as plain dicts (API field names, camelCase).

The Workload component declares exactly these; ``render`` writes exactly these
to manifests.yaml, so what a reviewer reads offline is what gets applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from keepsource.settings import Settings, Workload
from keepsource.settings.services import Exposed

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


def _single(settings: Settings | Exposed) -> Exposed:
    """A service as given, or the workload service of a stack written the
    seed's way (or the first)."""
    if isinstance(settings, Exposed):
        return settings
    return next(e for e in settings.exposed if e.workload is not None)


def _wl(ex: Exposed) -> Workload:
    assert ex.workload is not None, f"{ex.name} has no workload"
    return ex.workload


def labels(settings: Settings | Exposed) -> dict[str, str]:
    ex = _single(settings)
    return {"app.kubernetes.io/name": ex.name}


def _meta(ex: Exposed) -> Obj:
    return {
        "name": ex.name,
        "namespace": _wl(ex).namespace,
        "labels": labels(ex),
        "annotations": dict(PATCH_FORCE),
    }


def _object(api_version: str, kind: str, ex: Exposed, spec: Obj) -> Obj:
    """One of the exposed service's namespaced objects (its name, labels and
    keepsource's annotations)."""
    return {"apiVersion": api_version, "kind": kind, "metadata": _meta(ex), "spec": spec}


def namespace(settings: Settings | str) -> Obj:
    name = settings if isinstance(settings, str) else _wl(_single(settings)).namespace
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "annotations": dict(PATCH_FORCE)},
    }


def _pod_ports(ex: Exposed) -> list[tuple[str, str, int]]:
    """(name, protocol, port) of the pod, once each."""
    seen: dict[tuple[str, int], str] = {}
    for p in ex.ports:
        seen.setdefault((p.protocol, p.target_port), p.name)
    return [(name, proto, port) for (proto, port), name in seen.items()]


def deployment(settings: Settings | Exposed) -> Obj:
    ex = _single(settings)
    wl = _wl(ex)
    container: Obj = {
        "name": ex.name,
        "image": wl.image,
        "ports": [
            {"name": name, "containerPort": port, "protocol": proto}
            for name, proto, port in _pod_ports(ex)
        ],
    }
    tcp = [port for _, proto, port in _pod_ports(ex) if proto == "TCP"]
    if tcp:
        container["readinessProbe"] = {
            "tcpSocket": {"port": tcp[0]},
            "periodSeconds": 2,
            "failureThreshold": 1,
        }
    spec = {
        "replicas": wl.replicas,
        "selector": {"matchLabels": labels(ex)},
        "template": {"metadata": {"labels": labels(ex)}, "spec": {"containers": [container]}},
    }
    return _object("apps/v1", "Deployment", ex, spec)


def service(settings: Settings | Exposed) -> Obj:
    ex = _single(settings)
    spec = {
        "type": "NodePort",
        # Cluster would masquerade every NodePort packet: the pod would see a
        # node address, never the client. Local keeps the client address and
        # makes a node without a ready pod drop the traffic.
        "externalTrafficPolicy": "Local",
        "selector": labels(ex),
        "ports": [
            {
                "name": p.name,
                "protocol": p.protocol,
                "port": p.target_port,
                "targetPort": p.target_port,
                "nodePort": p.backend_port,
            }
            for p in ex.ports
        ],
    }
    return _object("v1", "Service", ex, spec)


def admitted_sources(settings: Settings | Exposed, check_source: str | Sequence[str]) -> list[str]:
    """CIDRs a NetworkPolicy admits: the service's allowed clients and the LB's check source(s)."""
    ex = _single(settings)
    sources = [str(c) for c in ex.allowed_clients]
    for address in [check_source] if isinstance(check_source, str) else check_source:
        own = f"{address}/32"
        if own not in sources:
            sources.append(own)
    return sources


def check_sources(settings: Settings) -> list[str]:
    """The addresses the LB's health checks come from (plain values): each
    host's own internal address in a pair."""
    return [str(a) for a in settings.check_sources]


def network_policy(settings: Settings | Exposed, check_source: str | Sequence[str]) -> Obj:
    ex = _single(settings)
    ingress = {
        "from": [{"ipBlock": {"cidr": cidr}} for cidr in admitted_sources(ex, check_source)],
        # NetworkPolicy ports match the pod's port (after DNAT), not the NodePort.
        "ports": [{"protocol": proto, "port": port} for _, proto, port in _pod_ports(ex)],
    }
    spec = {
        "podSelector": {"matchLabels": labels(ex)},
        "policyTypes": ["Ingress"],
        "ingress": [ingress],
    }
    return _object("networking.k8s.io/v1", "NetworkPolicy", ex, spec)


def namespace_of(ex: Exposed) -> str:
    return _wl(ex).namespace


def managed(settings: Settings) -> list[Exposed]:
    """The services whose Kubernetes objects keepsource declares."""
    return [e for e in settings.exposed if e.managed]


def workloads(settings: Settings) -> list[Exposed]:
    """Every service with a workload, keepsource's or managed elsewhere."""
    return [e for e in settings.exposed if e.workload is not None]


def namespaces(settings: Settings, among: list[Exposed] | None = None) -> list[str]:
    """The namespaces of these services (default: keepsource's), once each, in order."""
    return list(dict.fromkeys(_wl(e).namespace for e in among or managed(settings)))


def objects(settings: Settings, check_source: str | None = None) -> list[Obj]:
    """Every workload's objects, in apply order: the namespaces, then each
    service's Deployment, Service and NetworkPolicy. The program declares
    those of keepsource's workloads; for a workload managed elsewhere they are
    what that manager should apply (render writes them all)."""
    source = check_source or check_sources(settings)
    among = workloads(settings)
    objs = [namespace(ns) for ns in namespaces(settings, among)]
    for ex in among:
        objs += [deployment(ex), service(ex), network_policy(ex, source)]
    return objs


def to_yaml(objs: list[Obj]) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False, default_flow_style=False)
