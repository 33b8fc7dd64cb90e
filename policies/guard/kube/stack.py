"""Building the ``Cluster`` from a stack's resources: each Kubernetes resource
read by its type (workloads, Services, NetworkPolicies, ConfigMaps, Helm v3
Releases, routers) into the cluster's lists and indexes, then the CNIs'
policies (guard_cni), which may select by the Namespaces' labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from guard.base import Malformed, Resource, Unknown, as_port, dig
from guard.kube.cluster import Cluster
from guard.kube.model import Note, Route, Selector, Svc, Unk, name_of, namespace_of
from guard.kube.read import _pods, _policy, _service
from guard.kube.routes import _backend_refs, _nginx_stream_routes, _route_label, is_router

NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
NAMESPACE = "kubernetes:core/v1:Namespace"
SERVICE = "kubernetes:core/v1:Service"
NAMESPACE = "kubernetes:core/v1:Namespace"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"
HELM_V3 = "kubernetes:helm.sh/v3:Release"
WORKLOADS = {
    "kubernetes:apps/v1:Deployment": ("spec", "template"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template"),
    "kubernetes:batch/v1:Job": ("spec", "template"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template"),
    "kubernetes:core/v1:Pod": (),
}


def build(resources: Sequence[Resource], note: Note, unknown: Unk) -> Cluster:
    from guard import cni as guard_cni  # imports this package's types

    c = Cluster()
    cni: list[tuple[Resource, str]] = []
    ns_labels: dict[str, dict[str, str]] = {}
    for res in resources:
        t = res.type
        if not t.startswith("kubernetes:"):
            continue
        if t == NAMESPACE:
            labels = dig(res.props, "metadata", "labels")
            ns_labels[name_of(res)] = (
                {str(k): v for k, v in labels.items() if isinstance(v, str)}
                if isinstance(labels, Mapping)
                else {}
            )
            continue
        kind = guard_cni.kind_of(res)
        if kind is not None:
            cni.append((res, kind))
            continue
        try:
            _read(c, res, note, unknown)
        except Malformed as err:
            note(res, err.field, err.value, err.reason)
        except (TypeError, ValueError, AttributeError, KeyError) as err:
            note(res, "(resource)", None, f"could not be read: {err}")
    for res, kind in cni:
        try:
            for pol in guard_cni.policies(res, kind, ns_labels, note):
                c.policies.append(pol)
                c.pol_scan[pol.ns].append(pol)
        except Malformed as err:
            note(res, err.field, err.value, err.reason)
        except (TypeError, ValueError, AttributeError, KeyError) as err:
            note(res, "(resource)", None, f"could not be read: {err}")
    return c


def _read(c: Cluster, res: Resource, note: Note, unknown: Unk) -> None:
    """One Kubernetes resource (not a Namespace nor a CNI's policy) into ``c``'s
    lists and indexes, by its type (of :func:`build`, which notes what it raises)."""
    t = res.type
    if t in WORKLOADS:
        p = _pods(res, WORKLOADS[t])
        c.pods.append(p)
        c.pods_by_ns[p.ns].append(p)
        for k, v in p.labels.items():
            c.pods_by_label[(p.ns, k, v)].append(p)
    elif t == SERVICE:
        _add_service(c, _service(res, note))
    elif t == NETPOL:
        pol = _policy(res, note)
        c.policies.append(pol)
        if isinstance(pol.select, Selector) and pol.select.labels:
            k, v = pol.select.labels[0]
            c.pol_by_label[(pol.ns, k, v)].append(pol)
        else:
            c.pol_scan[pol.ns].append(pol)
    elif t == CONFIGMAP:
        data = dig(res.props, "data")
        if isinstance(data, Mapping):
            c.configmaps[(namespace_of(res), name_of(res))] = data
            if name_of(res) in ("tcp-services", "udp-services"):
                c.routes += _nginx_stream_routes(res, data)
    elif t == HELM_V3:
        c.releases.append(res)
    elif is_router(res):
        _add_routes(c, res, note, unknown)


def _add_service(c: Cluster, s: Svc) -> None:
    """A Service into ``c``, indexed by name and by each address and port it is
    reached on (nodePort, externalIPs, clusterIP, LoadBalancer addresses)."""
    c.services.append(s)
    c.svc_by_name[(s.ns, s.name)] = s
    for sp in s.ports:
        if sp.node_port is not None and s.type in ("NodePort", "LoadBalancer"):
            c.svc_by_node_port[sp.node_port].append((s, sp))
        for ip in s.external_ips:
            c.svc_by_external[(ip, sp.port)].append((s, sp))
        if s.cluster_ip:
            c.svc_by_external[(s.cluster_ip, sp.port)].append((s, sp))
        for ip in s.lb_ips:
            c.svc_by_external[(ip, sp.port)].append((s, sp))


def _add_routes(c: Cluster, res: Resource, note: Note, unknown: Unk) -> None:
    """A router's routes into ``c``, one for each backend Service it names."""
    label, detail, fix = _route_label(res)
    for svc, ns, port in _backend_refs(res):
        if isinstance(svc, Unknown):
            unknown(res, "a route's destination host", svc)
            continue
        if not isinstance(port, Unknown):
            try:
                port = as_port(port, f"the port of its backend Service {svc}")
            except Malformed as err:
                note(res, err.field, err.value, err.reason)
                continue
        c.routes.append(
            Route(
                res,
                label,
                ns if isinstance(ns, str) else namespace_of(res),
                svc,
                port,
                fix,
                detail,
            )
        )
