"""Routers and their routes: the resources that end connections in the cluster
and send them to a Service (Ingress, Gateway API routes, Istio
VirtualServices, OpenShift Routes, IngressRoute-style CRDs, ingress-nginx's
stream ConfigMaps), the Services they name, and how each is labelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from guard.base import Resource, Unknown, dig
from guard.kube.model import Route, name_of, namespace_of

INGRESS_TYPES = (
    "kubernetes:networking.k8s.io/v1:Ingress",
    "kubernetes:networking.k8s.io/v1beta1:Ingress",
    "kubernetes:extensions/v1beta1:Ingress",
)


def _backend_refs(res: Resource) -> Iterable[tuple[str, str | None, Any]]:
    """(service name, namespace or None, port) for each backend of a router resource."""
    t = res.type
    spec = dig(res.props, "spec")
    if t in INGRESS_TYPES:
        for b in [dig(spec, "defaultBackend"), dig(spec, "backend")]:
            if isinstance(b, Mapping):
                yield from _ingress_backend(b)
        for rule in dig(spec, "rules") or []:
            for p in dig(rule, "http", "paths") or []:
                b = dig(p, "backend")
                if isinstance(b, Mapping):
                    yield from _ingress_backend(b)
    elif ":gateway.networking.k8s.io/" in t and t.endswith("Route"):
        for rule in dig(spec, "rules") or []:
            for ref in dig(rule, "backendRefs") or []:
                if (
                    isinstance(ref, Mapping)
                    and ref.get("kind", "Service") == "Service"
                    and ref.get("group", "") in ("", None)
                ):
                    yield str(ref.get("name")), ref.get("namespace"), ref.get("port")
    elif crd_kind(res) == ("networking.istio.io", "VirtualService"):
        for section in ("http", "tcp", "tls"):
            for rule in dig(spec, section) or []:
                for route in dig(rule, "route") or []:
                    host = dig(route, "destination", "host")
                    port = dig(route, "destination", "port", "number")
                    if isinstance(host, Unknown):
                        yield host, None, port  # type: ignore[misc]
                    elif isinstance(host, str):
                        labels = host.rstrip(".").split(".")
                        yield labels[0], labels[1] if len(labels) > 1 else None, port
    elif crd_kind(res) == ("route.openshift.io", "Route"):
        port = dig(spec, "port", "targetPort")
        for to in [dig(spec, "to"), *(dig(spec, "alternateBackends") or [])]:
            if isinstance(to, Mapping) and to.get("kind", "Service") == "Service":
                yield str(to.get("name")), None, port
    else:  # Traefik IngressRoute(TCP), Contour HTTPProxy and alike: spec.routes[].services[]
        routes = list(dig(spec, "routes") or [])
        if isinstance(dig(spec, "tcpproxy"), Mapping):
            routes.append(dig(spec, "tcpproxy"))
        for route in routes:
            for s in dig(route, "services") or []:
                if isinstance(s, Mapping) and s.get("kind", "Service") == "Service":
                    yield str(s.get("name")), s.get("namespace"), s.get("port")


def _nginx_stream_routes(res: Resource, data: Mapping[str, Any]) -> list[Route]:
    """ingress-nginx's ``tcp-services``/``udp-services`` ConfigMap: each key a
    port of the controller, each value ``NAMESPACE/SERVICE:PORT[:PROXY[:PROXY]]``
    (ingress-nginx docs, "Exposing TCP and UDP services"): its nginx stream
    proxy ends every connection (PROXY protocol only puts the address in the
    payload)."""
    routes = []
    for key, value in data.items():
        if not isinstance(value, str) or "/" not in value:
            continue
        ns, _, rest = value.partition("/")
        name, _, port = rest.partition(":")
        routes.append(
            Route(
                res,
                f"ingress-nginx {name_of(res)} ConfigMap {namespace_of(res)}/{name_of(res)} (port {key})",
                ns,
                name,
                int(p) if (p := port.split(":", 1)[0]).isdigit() else (p or None),
                "expose the Service through an L4 LB that keeps the client address (keepalived/LVS, or a Service with externalTrafficPolicy: Local)",
                "the ingress-nginx controller's stream proxy ends the client's connection",
            )
        )
    return routes


def _ingress_backend(b: Mapping[str, Any]) -> Iterable[tuple[str, str | None, Any]]:
    if isinstance(b.get("service"), Mapping):
        s = b["service"]
        port = dig(s, "port", "number") or dig(s, "port", "name")
        name = s.get("name")
        yield (name if isinstance(name, Unknown) else str(name)), None, port  # type: ignore[misc]
    elif b.get("serviceName"):
        yield str(b["serviceName"]), None, b.get("servicePort")


ROUTER_KINDS = ("IngressRoute", "IngressRouteTCP", "HTTPProxy", "VirtualServer", "TransportServer")


def _route_label(res: Resource) -> tuple[str, str, str]:
    """(label, why it ends the connection, fix)."""
    kind = res.type.rsplit(":", 1)[-1]
    ns, name = namespace_of(res), name_of(res)
    if res.type in INGRESS_TYPES:
        cls = dig(res.props, "spec", "ingressClassName") or dig(
            res.props, "metadata", "annotations", "kubernetes.io/ingress.class"
        )
        return (
            f"Ingress {ns}/{name}" + (f" (class {cls})" if isinstance(cls, str) else ""),
            "its ingress controller is a proxy",
            "expose the Service through an L4 LB that keeps the client address (keepalived/LVS NAT or DR, or a Service with externalTrafficPolicy: Local)",
        )
    group, ckind = crd_kind(res)
    if group == "gateway.networking.k8s.io":
        return (
            f"{ckind} {ns}/{name} (through its Gateway)",
            "its Gateway's data plane is a proxy (for TLS passthrough and TCPRoute too)",
            "use an L4 LB that keeps the client address",
        )
    if group == "networking.istio.io":
        return (
            f"VirtualService {ns}/{name} (through Istio gateway {', '.join(_istio_gateways(res))})",
            "the Istio ingress gateway (Envoy) ends the client's connection",
            "use an L4 LB that keeps the client address in front of the pods (or admit the gateway's pods and filter on the gateway)",
        )
    if group == "route.openshift.io":
        tls = dig(res.props, "spec", "tls", "termination")
        return (
            f"Route {ns}/{name} (OpenShift router"
            + (f", TLS {tls})" if isinstance(tls, str) else ")"),
            "the OpenShift router (HAProxy) ends the client's connection, passthrough routes too",
            "expose the Service through an L4 LB that keeps the client address (a Service with externalTrafficPolicy: Local)",
        )
    return (
        f"{ckind or kind} {ns}/{name}",
        f"{ckind or kind} is served by a proxy (Traefik, Contour, NGINX)",
        "use an L4 LB that keeps the client address",
    )


def crd_kind(res: Resource) -> tuple[str, str]:
    """(API group, kind) of a custom resource, from its props or its type token."""
    api, kind = dig(res.props, "apiVersion"), dig(res.props, "kind")
    if isinstance(api, str) and isinstance(kind, str):
        return api.split("/", 1)[0], kind
    token = res.type.split(":")
    return (token[1].split("/", 1)[0], token[2]) if len(token) == 3 else ("", "")


def _istio_gateways(res: Resource) -> list[str]:
    """The gateways a VirtualService is bound to (``mesh``: the sidecars only)."""
    gws = dig(res.props, "spec", "gateways")
    return [g for g in gws if isinstance(g, str) and g != "mesh"] if isinstance(gws, list) else []


def is_router(res: Resource) -> bool:
    t = res.type
    if t in INGRESS_TYPES:
        return True
    group, kind = crd_kind(res)
    if group == "networking.istio.io" and kind == "VirtualService":
        return bool(_istio_gateways(res))
    if group == "route.openshift.io" and kind == "Route":
        return True
    # a typed resource or the same object declared as an apiextensions CustomResource
    if group == "gateway.networking.k8s.io" and kind.endswith("Route"):
        return True
    return t.startswith("kubernetes:") and (
        t.rsplit(":", 1)[-1] in ROUTER_KINDS or kind in ROUTER_KINDS
    )
