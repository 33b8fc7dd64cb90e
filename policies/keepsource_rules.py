"""keepsource's policy rules as plain functions over resource facts.

The rules guard against the fault keepsource fixes: something between the
client and the pod that ends the client's TCP connection (or kube-proxy's
masquerading) hides the client's address from an ``ipBlock`` NetworkPolicy.

Every rule takes the stack's resources (type, name, URN, props as the engine
sends them: wire names, numbers as floats; :data:`UNKNOWN` where a value is not
known at preview) and returns :class:`Finding`s. A finding is a ``violation``,
or ``unknown`` when a value the rule needs is not known: the pack reports
those as advisories, so no rule passes silently. This module imports neither
Pulumi nor pulumi-policy: the tests call it directly.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

# --------------------------------------------------------------------------
# Facts
# --------------------------------------------------------------------------


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()

NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
SERVICE = "kubernetes:core/v1:Service"
INGRESS_TYPES = (
    "kubernetes:networking.k8s.io/v1:Ingress",
    "kubernetes:networking.k8s.io/v1beta1:Ingress",
    "kubernetes:extensions/v1beta1:Ingress",
)
ROUTE_TYPE = re.compile(r"^kubernetes:gateway\.networking\.k8s\.io/v[0-9a-z]+:[A-Za-z]+Route$")
WORKLOAD_TYPE = re.compile(
    r"^kubernetes:(apps/v1:(Deployment|StatefulSet|DaemonSet|ReplicaSet)|core/v1:Pod|batch/v1:Job)$"
)
REMOTE_COMMAND = "command:remote:Command"
COPY_TO_REMOTE = "command:remote:CopyToRemote"
LOCAL_COMMAND = "command:local:Command"
KEEPSOURCE_LB = "keepsource:lb:LoadBalancerHost"
PROXIES = ("haproxy", "nginx", "envoy", "traefik")


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    urn: str
    props: dict[str, Any]


@dataclass(frozen=True)
class Finding:
    kind: Literal["violation", "unknown"]
    message: str
    urn: str | None = None


class _UnknownValue(Exception):  # noqa: N818 (internal control flow)
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def get(obj: Any, *path: str | int, default: Any = None) -> Any:
    """obj[path...]; ``default`` when absent; raises _UnknownValue when unknown."""
    cur = obj
    walked: list[str] = []
    for key in path:
        walked.append(str(key))
        if cur is UNKNOWN:
            raise _UnknownValue(".".join(walked))
        if isinstance(key, int):
            if not isinstance(cur, Sequence) or isinstance(cur, str) or key >= len(cur):
                return default
            cur = cur[key]
        else:
            if not isinstance(cur, Mapping) or key not in cur:
                return default
            cur = cur[key]
    if cur is UNKNOWN:
        raise _UnknownValue(".".join(walked))
    return cur


def _num(value: Any) -> int | str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value) if value.isdigit() else value
    return None


# --------------------------------------------------------------------------
# Kubernetes relations: which Services reach ipBlock-restricted pods
# --------------------------------------------------------------------------


def _namespace(res: Resource) -> str:
    return str(get(res.props, "metadata", "namespace") or "default")


def _labels_match(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _compatible(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(b.get(k, v) == v for k, v in a.items())


@dataclass(frozen=True)
class IpBlockPolicy:
    res: Resource
    namespace: str
    selector: Mapping[str, Any]
    # each ingress rule: (cidrs with their excepts, ports or None for all)
    rules: tuple[tuple[tuple[tuple[str, tuple[str, ...]], ...], tuple[Any, ...] | None], ...]


def ipblock_policies(resources: Iterable[Resource]) -> list[IpBlockPolicy]:
    """NetworkPolicies whose ingress admits by ipBlock."""
    found = []
    for res in resources:
        if res.type != NETPOL:
            continue
        ingress = get(res.props, "spec", "ingress") or []
        rules = []
        for rule in ingress:
            blocks = []
            for peer in get(rule, "from") or []:
                cidr = get(peer, "ipBlock", "cidr")
                if cidr is not None:
                    blocks.append((str(cidr), tuple(get(peer, "ipBlock", "except") or ())))
            ports = get(rule, "ports")
            port_list = None if not ports else tuple(_num(get(p, "port")) for p in ports)
            if blocks:
                rules.append((tuple(blocks), port_list))
        if rules:
            selector = get(res.props, "spec", "podSelector", "matchLabels") or {}
            found.append(IpBlockPolicy(res, _namespace(res), dict(selector), tuple(rules)))
    return found


def _pod_label_sets(resources: Iterable[Resource], namespace: str) -> list[Mapping[str, Any]]:
    sets = []
    for res in resources:
        if WORKLOAD_TYPE.match(res.type) and _namespace(res) == namespace:
            if res.type.endswith(":Pod"):
                labels = get(res.props, "metadata", "labels")
            else:
                labels = get(res.props, "spec", "template", "metadata", "labels")
            if isinstance(labels, Mapping):
                sets.append(labels)
    return sets


def policies_for(
    selector: Mapping[str, Any], namespace: str, resources: Sequence[Resource]
) -> list[IpBlockPolicy]:
    """ipBlock policies that restrict pods this Service selector reaches.

    With the workloads declared in the stack, a pod template's labels decide;
    without any, the selectors must merely agree (the conservative guess)."""
    if not selector:
        return []
    pods = [
        labels
        for labels in _pod_label_sets(resources, namespace)
        if _labels_match(selector, labels)
    ]
    result = []
    for pol in ipblock_policies(resources):
        if pol.namespace != namespace:
            continue
        if pods:
            if any(_labels_match(pol.selector, labels) for labels in pods):
                result.append(pol)
        elif _compatible(pol.selector, selector):
            result.append(pol)
    return result


@dataclass
class GuardedService:
    res: Resource
    namespace: str
    name: str
    type: str
    node_ports: list[int]
    target_ports: list[Any]
    policies: list[IpBlockPolicy] = field(default_factory=list)


def guarded_services(resources: Sequence[Resource]) -> tuple[list[GuardedService], list[Finding]]:
    """Services that select ipBlock-restricted pods."""
    guarded, unknown = [], []
    for res in resources:
        if res.type != SERVICE:
            continue
        try:
            selector = get(res.props, "spec", "selector") or {}
            ports = get(res.props, "spec", "ports") or []
            svc = GuardedService(
                res=res,
                namespace=_namespace(res),
                name=str(get(res.props, "metadata", "name") or res.name),
                type=str(get(res.props, "spec", "type") or "ClusterIP"),
                node_ports=[
                    p for p in (_num(get(x, "nodePort")) for x in ports) if isinstance(p, int)
                ],
                target_ports=[_num(get(x, "targetPort")) or _num(get(x, "port")) for x in ports],
            )
        except _UnknownValue as unk:
            unknown.append(
                Finding("unknown", f"Service {res.name}: {unk.path} is unknown", res.urn)
            )
            continue
        svc.policies = policies_for(selector, svc.namespace, resources)
        if svc.policies:
            guarded.append(svc)
    return guarded, unknown


# --------------------------------------------------------------------------
# Rule 2: client address lost by kube-proxy
# --------------------------------------------------------------------------


def client_address_lost(resources: Sequence[Resource]) -> list[Finding]:
    guarded, findings = guarded_services(resources)
    for svc in guarded:
        if svc.type not in ("NodePort", "LoadBalancer"):
            continue
        try:
            etp = get(svc.res.props, "spec", "externalTrafficPolicy")
        except _UnknownValue:
            findings.append(
                Finding(
                    "unknown", f"Service {svc.name}: externalTrafficPolicy is unknown", svc.res.urn
                )
            )
            continue
        if etp != "Local":
            names = ", ".join(p.res.name for p in svc.policies)
            findings.append(
                Finding(
                    "violation",
                    f"Service {svc.namespace}/{svc.name} (type {svc.type}) selects pods that the "
                    f"ipBlock NetworkPolicy {names} restricts, but externalTrafficPolicy is "
                    f"{etp or 'unset (Cluster)'}: kube-proxy masquerades the client, so the policy "
                    "never sees it. Set spec.externalTrafficPolicy: Local.",
                    svc.res.urn,
                )
            )
    return findings


# --------------------------------------------------------------------------
# Rule 1: terminating proxy ahead of an ipBlock policy
# --------------------------------------------------------------------------

_INSTALL = r"(?:apt(?:-get)?\s+(?:-\S+\s+)*install|yum\s+(?:-\S+\s+)*install|dnf\s+(?:-\S+\s+)*install|apk\s+add|pip3?\s+install|snap\s+install)\b[^\n;&|]*\b{p}\b"
_START = r"(?:systemctl\s+(?:--\S+\s+)*(?:enable|start|restart|reload)(?:\s+--\S+)*\s+[^\n;&|]*\b{p}\b|service\s+{p}\s+(?:start|restart|reload)\b|\b{p}d?\s+-(?:f|c|D)\b|docker\s+run\b[^\n;&|]*\b{p}\b)"


def _proxy_started(text: str, proxy: str) -> bool:
    return bool(
        re.search(_INSTALL.format(p=proxy), text) or re.search(_START.format(p=proxy), text)
    )


_HAPROXY_SERVER = re.compile(r"^\s*server\s+\S+\s+\[?([0-9A-Za-z.:_-]+?)\]?:(\d+)\b(.*)$", re.M)
_NGINX_TARGET = re.compile(r"\b(?:proxy_pass|grpc_pass)\s+(?:[a-z]+://)?([0-9A-Za-z._-]+):(\d+)")
_NGINX_UPSTREAM_SERVER = re.compile(
    r"(?:^|[{;])\s*server\s+([0-9A-Za-z._-]+):(\d+)\b[^;{}]*;", re.M
)


def _haproxy_transparent(text: str) -> bool:
    """``source ... usesrc clientip``: HAProxy connects with the client's address."""
    return bool(re.search(r"\bsource\s+\S+\s+usesrc\s+client(?:ip)?\b", text))


def proxy_backend_ports(text: str, proxy: str) -> set[int]:
    ports: set[int] = set()
    if proxy == "haproxy":
        ports |= {int(m.group(2)) for m in _HAPROXY_SERVER.finditer(text)}
    elif proxy == "nginx":
        ports |= {int(m.group(2)) for m in _NGINX_TARGET.finditer(text)}
        ports |= {int(m.group(2)) for m in _NGINX_UPSTREAM_SERVER.finditer(text)}
    else:  # envoy (port_value), traefik (url = "http://host:port")
        ports |= {int(p) for p in re.findall(r"port_value:\s*(\d+)", text)}
        ports |= {int(p) for p in re.findall(r"https?://[0-9A-Za-z._-]+:(\d+)", text)}
    return ports


def _command_text(res: Resource) -> str:
    parts = []
    for key in ("create", "update", "stdin"):
        value = get(res.props, key)
        if isinstance(value, str):
            parts.append(value)
    return "\n".join(parts)


def _host(res: Resource) -> str | None:
    conn = get(res.props, "connection")
    if isinstance(conn, Mapping) and isinstance(conn.get("value"), Mapping):
        conn = conn["value"]  # secret-wrapped
    host = get(conn, "host") if isinstance(conn, Mapping) else None
    return str(host) if host is not None else None


def _copied_text(resources: Sequence[Resource], host: str | None) -> str:
    """Text of files copied to that host (CopyToRemote with a text asset): a
    proxy's config often travels that way instead of in the command."""
    parts = []
    for res in resources:
        if res.type != COPY_TO_REMOTE or _host(res) != host:
            continue
        text = get(res.props, "source", "text")
        if isinstance(text, str):
            parts.append(f"# {get(res.props, 'remotePath')}\n{text}")
    return "\n".join(parts)


def _guarded_by_port(guarded: Sequence[GuardedService]) -> dict[int, GuardedService]:
    return {p: svc for svc in guarded for p in svc.node_ports}


def _services_by_name(guarded: Sequence[GuardedService]) -> dict[tuple[str, str], GuardedService]:
    return {(svc.namespace, svc.name): svc for svc in guarded}


def _lb_services(res: Resource) -> list[Mapping[str, Any]]:
    return list(get(res.props, "virtualServices") or [])


def terminating_proxy(resources: Sequence[Resource]) -> list[Finding]:
    guarded, findings = guarded_services(resources)
    if not guarded:
        return findings
    by_port = _guarded_by_port(guarded)
    by_name = _services_by_name(guarded)

    def fronted(svc: GuardedService) -> str:
        pols = ", ".join(f"{p.namespace}/{p.res.name}" for p in svc.policies)
        return f"Service {svc.namespace}/{svc.name} (nodePort {svc.node_ports}), whose pods the ipBlock NetworkPolicy {pols} restricts"

    for res in resources:
        try:
            if res.type == KEEPSOURCE_LB:
                findings += _check_lb(res, by_port, fronted)
            elif res.type in (REMOTE_COMMAND, LOCAL_COMMAND):
                copied = _copied_text(resources, _host(res)) if res.type == REMOTE_COMMAND else ""
                findings += _check_command(res, by_port, fronted, copied)
            elif res.type in INGRESS_TYPES:
                findings += _check_ingress(res, by_name, fronted)
            elif ROUTE_TYPE.match(res.type):
                findings += _check_route(res, by_name, fronted)
        except _UnknownValue as unk:
            findings.append(
                Finding(
                    "unknown",
                    f"{res.type} {res.name}: {unk.path} is unknown at preview; "
                    "cannot tell whether it ends client connections in front of ipBlock-restricted pods",
                    res.urn,
                )
            )
    return findings


def _fronted_services(
    services: Iterable[Mapping[str, Any]], by_port: Mapping[int, GuardedService]
) -> list[GuardedService]:
    """Guarded Services whose nodePort is the port of one of these virtual services."""
    ports = [_num(get(vs, "port")) for vs in services]
    return [by_port[p] for p in ports if isinstance(p, int) and p in by_port]


def _check_lb(res: Resource, by_port: Mapping[int, GuardedService], fronted: Any) -> list[Finding]:
    keeps = get(res.props, "preservesClientAddress")
    method = get(res.props, "forwardingMethod")
    if keeps is True:
        return []
    hits = _fronted_services(_lb_services(res), by_port)
    if not hits:
        return []
    return [
        Finding(
            "violation",
            f"LoadBalancerHost {res.name} forwards with {method!r}, which does not keep the client "
            f"address, in front of {fronted(hits[0])}. Use LVS NAT (or DR/TUN) so the pod sees the client.",
            res.urn,
        )
    ]


def _check_command(
    res: Resource, by_port: Mapping[int, GuardedService], fronted: Any, copied: str = ""
) -> list[Finding]:
    started = _command_text(res)
    text = f"{started}\n{copied}"
    findings = []
    for proxy in PROXIES:
        if not _proxy_started(started, proxy):
            continue
        if proxy == "haproxy" and _haproxy_transparent(text):
            continue
        ports = proxy_backend_ports(text, proxy)
        if not ports:
            findings.append(
                Finding(
                    "unknown",
                    f"Command {res.name} installs or starts {proxy}, but its backends "
                    "cannot be read from the command; if it fronts ipBlock-restricted pods it hides "
                    "the client address.",
                    res.urn,
                )
            )
            continue
        for port in sorted(ports & set(by_port)):
            mode = " (mode tcp terminates too)" if proxy == "haproxy" else ""
            findings.append(
                Finding(
                    "violation",
                    f"Command {res.name} installs or starts {proxy}{mode}, a proxy that ends the "
                    f"client's TCP connection, toward port {port} of {fronted(by_port[port])}: the pods "
                    "see the proxy's address, so the policy refuses the real clients. Use keepalived/LVS "
                    "NAT (L4, client address kept)"
                    + (
                        ", or HAProxy with `source 0.0.0.0 usesrc clientip`."
                        if proxy == "haproxy"
                        else "."
                    ),
                    res.urn,
                )
            )
    return findings


def _ingress_backends(res: Resource) -> Iterator[str]:
    default = get(res.props, "spec", "defaultBackend", "service", "name") or get(
        res.props, "spec", "backend", "serviceName"
    )
    if default:
        yield str(default)
    for rule in get(res.props, "spec", "rules") or []:
        for path in get(rule, "http", "paths") or []:
            name = get(path, "backend", "service", "name") or get(path, "backend", "serviceName")
            if name:
                yield str(name)


def _check_ingress(
    res: Resource, by_name: Mapping[tuple[str, str], GuardedService], fronted: Any
) -> list[Finding]:
    ns = _namespace(res)
    for name in _ingress_backends(res):
        svc = by_name.get((ns, name))
        if svc is not None:
            return [
                Finding(
                    "violation",
                    f"Ingress {ns}/{res.name} routes to {fronted(svc)}: an ingress controller ends the "
                    "client's connection, so the pods never see the client. Expose the Service through "
                    "an L4 LB that keeps the client address (keepalived/LVS NAT).",
                    res.urn,
                )
            ]
    return []


def _check_route(
    res: Resource, by_name: Mapping[tuple[str, str], GuardedService], fronted: Any
) -> list[Finding]:
    ns = _namespace(res)
    for rule in get(res.props, "spec", "rules") or []:
        for ref in get(rule, "backendRefs") or []:
            kind = get(ref, "kind") or "Service"
            if kind != "Service":
                continue
            svc = by_name.get((str(get(ref, "namespace") or ns), str(get(ref, "name"))))
            if svc is not None:
                return [
                    Finding(
                        "violation",
                        f"{res.type.rsplit(':', 1)[-1]} {ns}/{res.name} sends traffic through a Gateway to "
                        f"{fronted(svc)}: the gateway ends the client's connection. Use an L4 LB that "
                        "keeps the client address.",
                        res.urn,
                    )
                ]
    return []


# --------------------------------------------------------------------------
# Rule 3: the LB's health checks are admitted
# --------------------------------------------------------------------------


def _admits(pol: IpBlockPolicy, address: str, pod_ports: Sequence[Any]) -> bool:
    addr = ipaddress.ip_address(address)
    for blocks, ports in pol.rules:
        if ports is not None and not any(p in ports for p in pod_ports):
            continue
        for cidr, excepts in blocks:
            net = ipaddress.ip_network(cidr, strict=False)
            if (
                addr.version == net.version
                and addr in net
                and not any(addr in ipaddress.ip_network(e, strict=False) for e in excepts)
            ):
                return True
    return False


def health_checks_admitted(resources: Sequence[Resource]) -> list[Finding]:
    guarded, findings = guarded_services(resources)
    by_port = _guarded_by_port(guarded)
    for res in resources:
        if res.type != KEEPSOURCE_LB:
            continue
        try:
            source = get(res.props, "healthCheckSource")
            check_type = str(get(res.props, "healthCheckType") or "TCP")
            services = _lb_services(res)
            checked = _fronted_services(services, by_port)
        except _UnknownValue as unk:
            findings.append(
                Finding(
                    "unknown",
                    f"LoadBalancerHost {res.name}: {unk.path} is unknown at preview; "
                    "cannot check that its health checks are admitted",
                    res.urn,
                )
            )
            continue
        if check_type not in ("TCP", "HTTP", "HTTPS") or source is None:
            continue
        for svc in checked:
            for pol in svc.policies:
                if not _admits(pol, str(source), svc.target_ports):
                    findings.append(
                        Finding(
                            "violation",
                            f"LoadBalancerHost {res.name} checks {svc.namespace}/{svc.name} through the "
                            f"pod ({check_type} to nodePort {svc.node_ports}) from {source}, but the ipBlock "
                            f"NetworkPolicy {pol.namespace}/{pol.res.name} does not admit {source} on the "
                            f"pod's port {svc.target_ports}: every node would look dead. Add "
                            f"ipBlock {source}/32 to that policy's ingress on the pod's port.",
                            pol.res.urn,
                        )
                    )
    return findings


# --------------------------------------------------------------------------
# Rule 4: world-open ipBlock (advisory)
# --------------------------------------------------------------------------


def world_open_ipblock(resource: Resource) -> list[Finding]:
    if resource.type != NETPOL:
        return []
    findings = []
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for rule in get(resource.props, "spec", direction) or []:
            for peer in get(rule, peers_key) or []:
                cidr = get(peer, "ipBlock", "cidr")
                if cidr in ("0.0.0.0/0", "::/0") and not get(peer, "ipBlock", "except"):
                    findings.append(
                        Finding(
                            "violation",
                            f"NetworkPolicy {resource.name} allows {direction} {peers_key} {cidr} with no "
                            "`except`: the ipBlock admits the whole world. Name the client CIDRs.",
                            resource.urn,
                        )
                    )
    return findings


def safe(rule: Any, arg: Any) -> list[Finding]:
    """Run a rule; an unknown value it reads becomes an `unknown` finding."""
    try:
        result: list[Finding] = rule(arg)
        return result
    except _UnknownValue as unk:
        return [
            Finding("unknown", f"{rule.__name__}: {unk.path} is unknown at preview; not checked")
        ]
