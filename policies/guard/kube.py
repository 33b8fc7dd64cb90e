"""The Kubernetes model: pods, Services, NetworkPolicies, and what routes to Services.

NetworkPolicy semantics as Kubernetes defines them: a policy selects pods in
its own namespace by ``podSelector`` (matchLabels and matchExpressions; empty
selects all); a pod is isolated for ingress once any policy whose
``policyTypes`` include Ingress (the default when policyTypes is absent)
selects it; then the union of all those policies' ingress rules admits
traffic (policies add up). A rule without ``from`` admits every source, one
without ``ports`` every port; an ``ipBlock`` admits its CIDR minus ``except``;
pod/namespace selectors admit in-cluster pods only. Built once per stack with
indexes, so lookups do not grow with the stack.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guard.base import Malformed, Resource, Unknown, as_cidr, as_list, as_map, as_port, as_str, dig

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address

NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
NAMESPACE = "kubernetes:core/v1:Namespace"
#: The namespace as a pod label, the way Calico and Cilium expose it to their selectors.
CNI_NAMESPACE_KEYS = ("projectcalico.org/namespace", "io.kubernetes.pod.namespace")
SERVICE = "kubernetes:core/v1:Service"
NAMESPACE = "kubernetes:core/v1:Namespace"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"
HELM_V3 = "kubernetes:helm.sh/v3:Release"
INGRESS_TYPES = (
    "kubernetes:networking.k8s.io/v1:Ingress",
    "kubernetes:networking.k8s.io/v1beta1:Ingress",
    "kubernetes:extensions/v1beta1:Ingress",
)
WORKLOADS = {
    "kubernetes:apps/v1:Deployment": ("spec", "template"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template"),
    "kubernetes:batch/v1:Job": ("spec", "template"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template"),
    "kubernetes:core/v1:Pod": (),
}

Note = Callable[[Resource, str, Any, str], None]
Unk = Callable[[Resource, str, Unknown], None]


def namespace_of(res: Resource) -> str:
    ns = dig(res.props, "metadata", "namespace")
    return ns if isinstance(ns, str) and ns else "default"


def name_of(res: Resource) -> str:
    n = dig(res.props, "metadata", "name")
    return n if isinstance(n, str) and n else res.name


@dataclass(frozen=True)
class Selector:
    labels: tuple[tuple[str, str], ...]
    exprs: tuple[tuple[str, str, tuple[str, ...]], ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.labels):
            return False
        for key, op, values in self.exprs:
            has = key in labels
            if op == "In" and not (has and labels[key] in values):
                return False
            if op == "NotIn" and has and labels[key] in values:
                return False
            if op == "Exists" and not has:
                return False
            if op == "DoesNotExist" and has:
                return False
        return True

    def text(self) -> str:
        parts = [f"{k}={v}" for k, v in self.labels]
        parts += [f"{k} {op} ({','.join(v)})" if v else f"{k} {op}" for k, op, v in self.exprs]
        return "{" + ", ".join(parts) + "}" if parts else "{} (all pods)"


def selector(value: Any, field_: str) -> Selector | Unknown:
    m = as_map(value, field_)
    if isinstance(m, Unknown):
        return m
    ml = as_map(m.get("matchLabels"), f"{field_}.matchLabels")
    if isinstance(ml, Unknown):
        return ml
    labels = []
    for k, v in ml.items():
        if isinstance(v, Unknown):
            return v
        if not isinstance(v, str):
            raise Malformed(f"{field_}.matchLabels.{k}", v, "is not a string")
        labels.append((str(k), v))
    exprs = []
    me = as_list(m.get("matchExpressions"), f"{field_}.matchExpressions")
    if isinstance(me, Unknown):
        return me
    for i, e in enumerate(me):
        f = f"{field_}.matchExpressions[{i}]"
        if isinstance(e, Unknown):
            return e
        if not isinstance(e, Mapping):
            raise Malformed(f, e, "is not an object")
        key, op, vals = e.get("key"), e.get("operator"), as_list(e.get("values"), f"{f}.values")
        for x in (key, op, vals):
            if isinstance(x, Unknown):
                return x
        if not isinstance(key, str):
            raise Malformed(f"{f}.key", key, "is not a string")
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise Malformed(f"{f}.operator", op, "is not In, NotIn, Exists or DoesNotExist")
        assert not isinstance(vals, Unknown)
        exprs.append((key, str(op), tuple(str(v) for v in vals)))
    return Selector(tuple(sorted(labels)), tuple(exprs))


@dataclass
class Pods:
    res: Resource
    ns: str
    labels: dict[str, str]
    ports: dict[str, int]  # named container ports
    images: list[str]
    configmaps: list[tuple[str, str]]  # (configMap name, mountPath)
    args: list[list[str]]
    virtual: bool = False
    # containers whose arguments hold a value unknown at preview (their name)
    args_unknown: list[str] = field(default_factory=list)

    @property
    def scaled_to_zero(self) -> bool:
        """A workload whose ``spec.replicas`` is a literal 0 runs no pod
        (Deployment docs, "Scaling a Deployment"); an unknown count is not 0."""
        if self.virtual:
            return False
        replicas = dig(self.res.props, "spec", "replicas")
        return (
            isinstance(replicas, int | float) and not isinstance(replicas, bool) and replicas == 0
        )

    def label(self) -> str:
        if self.virtual:
            return f"pods {self.ns}/{{{', '.join(f'{k}={v}' for k, v in self.labels.items())}}} (no workload in the stack)"
        return f"{self.res.type.rsplit(':', 1)[-1]} {self.ns}/{name_of(self.res)}"


@dataclass(frozen=True)
class SvcPort:
    port: int
    target: int | str
    node_port: int | None
    name: str | None
    protocol: str = "TCP"


@dataclass
class Svc:
    res: Resource
    ns: str
    name: str
    type: str
    selector: dict[str, str] | None
    ports: list[SvcPort]
    external_ips: list[str]
    cluster_ip: str | None
    etp: str | Unknown | None
    unknowns: list[tuple[str, Unknown]] = field(default_factory=list)
    lb_ips: list[str] = field(default_factory=list)  # a LoadBalancer's addresses

    @property
    def external(self) -> bool:
        return self.type in ("NodePort", "LoadBalancer") or bool(self.external_ips)


@dataclass(frozen=True)
class Block:
    net: Net
    excepts: tuple[Net, ...]
    policy: str  # ns/name

    def admits(self, addr: Addr) -> bool:
        return (
            addr.version == self.net.version
            and addr in self.net
            and not any(e.version == addr.version and addr in e for e in self.excepts)
        )

    @property
    def world(self) -> bool:
        return self.net.prefixlen == 0 and not self.excepts


@dataclass
class Rule:
    ports: list[tuple[int | str, int | None]] | None  # None: every port
    peers: list[Block | str] | None  # None: every source; str: an in-cluster selector peer
    protocol: str | None = "TCP"  # the ports' protocol; None: every protocol


@dataclass
class Policy:
    res: Resource
    ns: str
    name: str
    select: Selector | Unknown
    ingress_type: bool
    rules: list[Rule]
    unknowns: list[tuple[str, Unknown]] = field(default_factory=list)
    kind: str = "NetworkPolicy"  # or a CNI's policy (guard_cni); ns "*": cluster-wide
    # A CNI's Deny rules (peers None: every source); they win over any Allow
    denies: list[Rule] = field(default_factory=list)

    @property
    def shown(self) -> str:
        """``ns/name``, or a cluster-wide policy's name."""
        return self.name if self.ns == "*" else f"{self.ns}/{self.name}"

    @property
    def label(self) -> str:
        return f"{self.kind} {self.shown}"


@dataclass
class View:
    """How a pod's ingress on one port looks from outside the cluster."""

    isolated: bool
    open_all: bool = False
    blocks: list[Block] = field(default_factory=list)
    selector_peers: bool = False
    policies: list[Policy] = field(default_factory=list)
    unknowns: list[tuple[Resource, str, Unknown]] = field(default_factory=list)

    @property
    def ipblock_restricted(self) -> bool:
        return self.isolated and not self.open_all and bool(self.blocks)

    def admits(self, addr: Addr) -> bool:
        return (not self.isolated) or self.open_all or any(b.admits(addr) for b in self.blocks)


@dataclass
class Route:
    """Something in the cluster that ends connections and sends them to a Service."""

    res: Resource
    label: str  # "Ingress my-ns/web (controller nginx)"
    service_ns: str
    service: str
    port: int | str | None
    fix: str
    detail: str = "its controller serves it with a proxy"


@dataclass
class Cluster:
    pods: list[Pods] = field(default_factory=list)
    services: list[Svc] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    configmaps: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    releases: list[Resource] = field(default_factory=list)
    # indexes
    pods_by_label: dict[tuple[str, str, str], list[Pods]] = field(
        default_factory=lambda: defaultdict(list)
    )
    pods_by_ns: dict[str, list[Pods]] = field(default_factory=lambda: defaultdict(list))
    svc_by_name: dict[tuple[str, str], Svc] = field(default_factory=dict)
    svc_by_node_port: dict[int, list[tuple[Svc, SvcPort]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    svc_by_external: dict[tuple[str, int], list[tuple[Svc, SvcPort]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    pol_by_label: dict[tuple[str, str, str], list[Policy]] = field(
        default_factory=lambda: defaultdict(list)
    )
    pol_scan: dict[str, list[Policy]] = field(default_factory=lambda: defaultdict(list))
    _views: dict[tuple[int, int | str, str], View] = field(default_factory=dict)

    # -- lookups --------------------------------------------------------------

    def pods_of(self, svc: Svc) -> list[Pods]:
        if not svc.selector:
            return []
        k, v = next(iter(sorted(svc.selector.items())))
        found = [
            p
            for p in self.pods_by_label.get((svc.ns, k, v), [])
            if all(p.labels.get(a) == b for a, b in svc.selector.items())
        ]
        if found:
            return found
        virtual = Pods(svc.res, svc.ns, dict(svc.selector), {}, [], [], [], virtual=True)
        return [virtual]

    def policies_of(self, pods: Pods) -> tuple[list[Policy], list[Policy]]:
        """(policies that select these pods, policies that may: selector unknown)."""
        cands: list[Policy] = list(self.pol_scan.get(pods.ns, []))
        for k, v in pods.labels.items():
            cands += self.pol_by_label.get((pods.ns, k, v), [])
        cands += self.pol_scan.get("*", [])  # cluster-wide CNI policies
        scoped = {**pods.labels, **{k: pods.ns for k in CNI_NAMESPACE_KEYS}}
        sure, maybe = [], []
        seen: set[int] = set()
        for p in cands:
            if id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(p.select, Unknown):
                maybe.append(p)
            elif p.select.matches(scoped if p.ns == "*" else pods.labels):
                sure.append(p)
        return sure, maybe

    def view(self, pods: Pods, port: int | str, protocol: str = "TCP") -> View:
        """How the pods' ingress on ``port``/``protocol`` looks from outside."""
        key = (id(pods), port, protocol)
        if key in self._views:
            return self._views[key]
        sure, maybe = self.policies_of(pods)
        v = View(isolated=False)
        for p in maybe:
            v.unknowns += [(p.res, f, u) for f, u in p.unknowns]
        ingress = [p for p in sure if p.ingress_type]
        for p in sure:
            v.unknowns += [(p.res, f, u) for f, u in p.unknowns]
        if ingress:
            v.isolated = True
            v.policies = ingress
            number = port if isinstance(port, int) else pods.ports.get(port)
            names = {n for n, num in pods.ports.items() if num == number}
            if isinstance(port, str):
                names.add(port)
            for p in ingress:
                for r in p.rules:
                    if r.protocol not in (None, protocol) or not _on_port(r, number, names):
                        continue
                    if r.peers is None:
                        v.open_all = True
                        continue
                    for peer in r.peers:
                        if isinstance(peer, Block):
                            if peer.world:
                                v.open_all = True
                            v.blocks.append(peer)
                        else:
                            v.selector_peers = True
            _deny(
                v,
                [
                    r
                    for p in ingress
                    for r in p.denies
                    if r.protocol in (None, protocol) and _on_port(r, number, names)
                ],
            )
        self._views[key] = v
        return v


def _on_port(r: Rule, number: int | None, names: set[str]) -> bool:
    return r.ports is None or any(
        (
            isinstance(rp, int)
            and number is not None
            and (rp == number or (end is not None and rp <= number <= end))
        )
        or (isinstance(rp, str) and rp in names)
        for rp, end in r.ports
    )


def _deny(v: View, denies: list[Rule]) -> None:
    """What a CNI's Deny rules on this port take from what the allows admit.

    A Deny of every source admits no one from outside; one of address blocks
    turns an allow of everyone into the world minus them (the pods are then
    filtered by address: a denylist) and narrows each admitted block.
    """
    if not denies:
        return
    if any(r.peers is None for r in denies):
        v.open_all, v.blocks = False, []
        return
    denied = [b for r in denies for b in r.peers or [] if isinstance(b, Block)]
    if not denied:
        return
    blocks = v.blocks
    if v.open_all:
        v.open_all = False
        pol = denied[0].policy
        blocks = [
            Block(ipaddress.ip_network("0.0.0.0/0" if ver == 4 else "::/0"), (), pol)
            for ver in sorted({d.net.version for d in denied})
        ]
    for d in denied:
        blocks = [part for b in blocks for part in _minus(b, d)]
    v.blocks = blocks


def _minus(b: Block, d: Block) -> list[Block]:
    """The addresses of ``b`` that the denied block ``d`` leaves admitted."""
    if b.net.version != d.net.version or not b.net.overlaps(d.net):
        return [b]
    covered = d.net.supernet_of(b.net)  # type: ignore[arg-type]
    out = [] if covered else [Block(b.net, (*b.excepts, d.net), b.policy)]
    for e in d.excepts:
        if e.version == b.net.version and e.overlaps(b.net):
            inner = e if b.net.supernet_of(e) else b.net  # type: ignore[arg-type]
            out.append(Block(inner, b.excepts, b.policy))
    return out


def _seq(value: Any) -> list[Any]:
    """A list value, or nothing (absent, unknown or not a list: the pod still counts)."""
    return list(value) if isinstance(value, list) else []


def _pods(res: Resource, path: tuple[str, ...]) -> Pods:
    tmpl = dig(res.props, *path) if path else res.props
    f = ".".join(path)
    labels_v = as_map(dig(tmpl, "metadata", "labels"), f"{f}.metadata.labels")
    labels = (
        {}
        if isinstance(labels_v, Unknown)
        else {str(k): v for k, v in labels_v.items() if isinstance(v, str)}
    )
    ports: dict[str, int] = {}
    images, args, cms = [], [], []
    unknown_args: list[str] = []
    containers = as_list(dig(tmpl, "spec", "containers"), f"{f}.spec.containers")
    for i, c in enumerate([] if isinstance(containers, Unknown) else containers):
        if not isinstance(c, Mapping):
            continue
        if isinstance(c.get("image"), str):
            images.append(c["image"])
        given = _seq(c.get("args")) + _seq(c.get("command"))
        args.append([a for a in given if isinstance(a, str)])
        if any(isinstance(a, Unknown) for a in given) or isinstance(c.get("args"), Unknown):
            unknown_args.append(str(c.get("name") or i))
        plist = as_list(c.get("ports"), f"{f}.spec.containers[{i}].ports")
        for j, p in enumerate([] if isinstance(plist, Unknown) else plist):
            if isinstance(p, Mapping) and isinstance(p.get("name"), str):
                num = as_port(
                    p.get("containerPort"), f"{f}.spec.containers[{i}].ports[{j}].containerPort"
                )
                if isinstance(num, int):
                    ports[p["name"]] = num
        for m in _seq(c.get("volumeMounts")):
            if isinstance(m, Mapping) and isinstance(m.get("name"), str):
                cms.append((m["name"], str(m.get("mountPath", ""))))
    vols = {}
    for v in _seq(dig(tmpl, "spec", "volumes")):
        if isinstance(v, Mapping) and isinstance(dig(v, "configMap", "name"), str):
            vols[v.get("name")] = dig(v, "configMap", "name")
    configmaps = [(vols[n], path) for n, path in cms if n in vols]
    return Pods(
        res, namespace_of(res), labels, ports, images, configmaps, args, args_unknown=unknown_args
    )


def _service(res: Resource, note: Note) -> Svc:
    spec = as_map(dig(res.props, "spec"), "spec")
    unknowns: list[tuple[str, Unknown]] = []
    if isinstance(spec, Unknown):
        return Svc(
            res,
            namespace_of(res),
            name_of(res),
            "ClusterIP",
            None,
            [],
            [],
            None,
            spec,
            [("spec", spec)],
        )
    typ = as_str(spec.get("type"), "spec.type")
    if isinstance(typ, Unknown):
        unknowns.append(("spec.type", typ))
        typ = "NodePort"  # the widest exposure until known
    sel = as_map(spec.get("selector"), "spec.selector")
    selector_: dict[str, str] | None
    if isinstance(sel, Unknown):
        unknowns.append(("spec.selector", sel))
        selector_ = None
    else:
        selector_ = {str(k): str(v) for k, v in sel.items() if not isinstance(v, Unknown)}
    ports = []
    plist = as_list(spec.get("ports"), "spec.ports")
    if isinstance(plist, Unknown):
        unknowns.append(("spec.ports", plist))
        plist = []
    for i, p in enumerate(plist):
        if not isinstance(p, Mapping):
            raise Malformed(f"spec.ports[{i}]", p, "is not an object")
        read: dict[str, int | str | Unknown | None] = {}
        bad = False
        for fld in ("port", "targetPort", "nodePort"):
            try:  # every bad field is named, not only the first
                read[fld] = as_port(p.get(fld), f"spec.ports[{i}].{fld}")
            except Malformed as err:
                note(res, err.field, err.value, err.reason)
                bad = True
        if bad:
            continue
        port, target, node = read["port"], read["targetPort"], read["nodePort"]
        for fld, val in (("port", port), ("targetPort", target), ("nodePort", node)):
            if isinstance(val, Unknown):
                unknowns.append((f"spec.ports[{i}].{fld}", val))
        if not isinstance(port, int):
            continue
        ports.append(
            SvcPort(
                port,
                target if isinstance(target, int | str) else port,
                node if isinstance(node, int) else None,
                p.get("name") if isinstance(p.get("name"), str) else None,
                str(p.get("protocol")).upper() if isinstance(p.get("protocol"), str) else "TCP",
            )
        )
    eips = as_list(spec.get("externalIPs"), "spec.externalIPs")
    if isinstance(eips, Unknown):
        unknowns.append(("spec.externalIPs", eips))
        eips = []
    etp = spec.get("externalTrafficPolicy")
    if isinstance(etp, Unknown):
        unknowns.append(("spec.externalTrafficPolicy", etp))
    elif etp is not None and etp not in ("Local", "Cluster"):
        raise Malformed("spec.externalTrafficPolicy", etp, "is not Local or Cluster")
    cip = spec.get("clusterIP")
    return Svc(
        res,
        namespace_of(res),
        name_of(res),
        str(typ or "ClusterIP"),
        selector_,
        ports,
        [str(e) for e in eips if isinstance(e, str)],
        cip if isinstance(cip, str) else None,
        etp,
        unknowns,
        _lb_ips(res, spec) if typ == "LoadBalancer" else [],
    )


#: Annotations that ask a bare-metal LB implementation for a Service's address
#: (MetalLB's "Requesting specific IPs", old and new group; kube-vip's).
LB_IP_ANNOTATIONS = (
    "metallb.universe.tf/loadBalancerIPs",
    "metallb.io/loadBalancerIPs",
    "kube-vip.io/loadbalancerIPs",
)


def _lb_ips(res: Resource, spec: Mapping[str, Any]) -> list[str]:
    """A LoadBalancer Service's addresses as the stack names them:
    ``spec.loadBalancerIP``, the address annotations, ``status.loadBalancer``."""
    found: list[str] = []
    lbip = spec.get("loadBalancerIP")
    if isinstance(lbip, str) and lbip:
        found.append(lbip)
    notes = dig(res.props, "metadata", "annotations")
    if isinstance(notes, Mapping):
        for key in LB_IP_ANNOTATIONS:
            value = notes.get(key)
            if isinstance(value, str):
                found += [a.strip() for a in value.split(",") if a.strip()]
    for ing in _seq(dig(res.props, "status", "loadBalancer", "ingress")):
        if isinstance(ing, Mapping) and isinstance(ing.get("ip"), str):
            found.append(ing["ip"])
    return list(dict.fromkeys(found))


def _policy(res: Resource, note: Note) -> Policy:
    spec = as_map(dig(res.props, "spec"), "spec")
    ns, name = namespace_of(res), name_of(res)
    if isinstance(spec, Unknown):
        return Policy(res, ns, name, spec, True, [], [("spec", spec)])
    unknowns: list[tuple[str, Unknown]] = []
    sel = selector(spec.get("podSelector"), "spec.podSelector")
    if isinstance(sel, Unknown):
        unknowns.append(("spec.podSelector", sel))
    types = as_list(spec.get("policyTypes"), "spec.policyTypes")
    if isinstance(types, Unknown):
        unknowns.append(("spec.policyTypes", types))
        ingress_type = True
    elif types:
        for t in types:
            if t not in ("Ingress", "Egress"):
                raise Malformed("spec.policyTypes", t, "is not Ingress or Egress")
        ingress_type = "Ingress" in types
    else:
        ingress_type = True  # Kubernetes: Ingress always, Egress when egress rules exist
    rules = []
    ing = as_list(spec.get("ingress"), "spec.ingress")
    if isinstance(ing, Unknown):
        unknowns.append(("spec.ingress", ing))
        ing = []
    for i, r in enumerate(ing):
        f = f"spec.ingress[{i}]"
        if isinstance(r, Unknown):
            unknowns.append((f, r))
            continue
        if not isinstance(r, Mapping):
            note(res, f, r, "is not an object")
            continue
        try:
            rules += _rules(r, f, f"{ns}/{name}", unknowns)
        except Malformed as err:
            note(res, err.field, err.value, err.reason)
    return Policy(res, ns, name, sel, ingress_type, rules, unknowns)


def _rules(
    r: Mapping[str, Any], f: str, pol: str, unknowns: list[tuple[str, Unknown]]
) -> list[Rule]:
    """A NetworkPolicy ingress rule: one Rule per protocol of its ports (TCP,
    UDP, SCTP; TCP when unset), all with its peers; one for every protocol
    when it names no port."""
    by_proto: dict[str, list[tuple[int | str, int | None]] | None] = {}
    plist = as_list(r.get("ports"), f"{f}.ports")
    if isinstance(plist, Unknown):
        unknowns.append((f"{f}.ports", plist))
        plist = []
        by_proto["TCP"] = []
    for j, p in enumerate(plist or []):
        if not isinstance(p, Mapping):
            raise Malformed(f"{f}.ports[{j}]", p, "is not an object")
        proto_v = p.get("protocol", "TCP")
        if isinstance(proto_v, Unknown):
            unknowns.append((f"{f}.ports[{j}].protocol", proto_v))
            proto_v = "TCP"
        proto = str(proto_v or "TCP").upper()
        port = as_port(p.get("port"), f"{f}.ports[{j}].port")
        end = as_port(p.get("endPort"), f"{f}.ports[{j}].endPort")
        if isinstance(port, Unknown) or isinstance(end, Unknown):
            unknowns.append((f"{f}.ports[{j}]", port if isinstance(port, Unknown) else end))  # type: ignore[arg-type]
            by_proto.setdefault(proto, [])
            continue
        have = by_proto.setdefault(proto, [])
        if port is None:
            by_proto[proto] = None  # a port entry without port: every port of that protocol
        elif have is not None:
            have.append((port, end if isinstance(end, int) else None))
    peers = _peers(r, f, pol, unknowns)
    if not by_proto:
        return [Rule(None, peers, None)]
    return [Rule(ports, peers, proto) for proto, ports in by_proto.items()]


def _peers(
    r: Mapping[str, Any], f: str, pol: str, unknowns: list[tuple[str, Unknown]]
) -> list[Block | str] | None:
    """The peers of a NetworkPolicy ingress rule (None: every source; its
    ports: :func:`_rules`)."""
    peers_v = r.get("from")
    if peers_v is None or peers_v == []:
        return None
    peers_l = as_list(peers_v, f"{f}.from")
    if isinstance(peers_l, Unknown):
        unknowns.append((f"{f}.from", peers_l))
        return []
    peers: list[Block | str] = []
    for k, peer in enumerate(peers_l):
        pf = f"{f}.from[{k}]"
        if isinstance(peer, Unknown):
            unknowns.append((pf, peer))
            continue
        if not isinstance(peer, Mapping):
            raise Malformed(pf, peer, "is not an object")
        if peer.get("ipBlock") is not None:
            cidr = as_cidr(dig(peer, "ipBlock", "cidr"), f"{pf}.ipBlock.cidr")
            if isinstance(cidr, Unknown):
                unknowns.append((f"{pf}.ipBlock.cidr", cidr))
                continue
            excepts = []
            ex = as_list(dig(peer, "ipBlock", "except"), f"{pf}.ipBlock.except")
            if isinstance(ex, Unknown):
                unknowns.append((f"{pf}.ipBlock.except", ex))
                ex = []
            for n, e in enumerate(ex):
                en = as_cidr(e, f"{pf}.ipBlock.except[{n}]")
                if isinstance(en, Unknown):
                    unknowns.append((f"{pf}.ipBlock.except[{n}]", en))
                else:
                    excepts.append(en)
            peers.append(Block(cidr, tuple(excepts), pol))
        else:
            for key in ("podSelector", "namespaceSelector"):
                if peer.get(key) is not None:
                    s = selector(peer.get(key), f"{pf}.{key}")
                    if isinstance(s, Unknown):
                        unknowns.append((f"{pf}.{key}", s))
            peers.append("selector")
    return peers


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


def build(resources: Sequence[Resource], note: Note, unknown: Unk) -> Cluster:
    from guard import cni as guard_cni  # imports this module's types

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
            if t in WORKLOADS:
                p = _pods(res, WORKLOADS[t])
                c.pods.append(p)
                c.pods_by_ns[p.ns].append(p)
                for k, v in p.labels.items():
                    c.pods_by_label[(p.ns, k, v)].append(p)
            elif t == SERVICE:
                s = _service(res, note)
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


def service_port(svc: Svc, port: Any) -> SvcPort | None:
    """The Service port a route names (number or name); the only port when not named."""
    if isinstance(port, float) and port.is_integer():
        port = int(port)
    for sp in svc.ports:
        if port is None or sp.port == port or (isinstance(port, str) and sp.name == port):
            return sp
    return None
