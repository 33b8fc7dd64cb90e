"""Reading Kubernetes resources into the model: label selectors, a workload's
pods (labels, named ports, images, arguments, mounted ConfigMaps), a
Service (type, selector, ports, external and LoadBalancer addresses), and a
NetworkPolicy (its pod selector, policy types and ingress rules with their
ports and peers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guard.base import (
    Malformed,
    Resource,
    Unknown,
    as_cidr,
    as_list,
    as_map,
    as_port,
    as_str,
    dig,
    known_cidrs,
    known_list,
)
from guard.kube.model import (
    Block,
    Note,
    Pods,
    Policy,
    Rule,
    Selector,
    Svc,
    SvcPort,
    name_of,
    namespace_of,
)


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
    ports = _service_ports(res, spec, note, unknowns)
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


def _service_ports(
    res: Resource, spec: Mapping[str, Any], note: Note, unknowns: list[tuple[str, Unknown]]
) -> list[SvcPort]:
    """A Service's ``spec.ports`` (of :func:`_service`): a port with a bad field is
    left out, each bad field noted; one not known at preview is left out too."""
    ports = []
    for i, p in enumerate(known_list(spec.get("ports"), "spec.ports", unknowns)):
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
    return ports


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
    for i, r in enumerate(known_list(spec.get("ingress"), "spec.ingress", unknowns)):
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
            excepts = known_cidrs(dig(peer, "ipBlock", "except"), f"{pf}.ipBlock.except", unknowns)
            peers.append(Block(cidr, tuple(excepts), pol))
        else:
            for key in ("podSelector", "namespaceSelector"):
                if peer.get(key) is not None:
                    s = selector(peer.get(key), f"{pf}.{key}")
                    if isinstance(s, Unknown):
                        unknowns.append((f"{pf}.{key}", s))
            peers.append("selector")
    return peers
