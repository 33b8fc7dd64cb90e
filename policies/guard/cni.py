"""Address filters of CNIs as guards of pods, beside Kubernetes' NetworkPolicy.

Calico (``projectcalico.org/v3`` and its CRD group ``crd.projectcalico.org/v1``)
``NetworkPolicy`` and ``GlobalNetworkPolicy``; Cilium (``cilium.io/v2``)
``CiliumNetworkPolicy`` and ``CiliumClusterwideNetworkPolicy``. Each becomes
the same :class:`guard_kube.Policy` a NetworkPolicy does (a pod selector,
ingress rules of ports and peers), so a path is judged the same whichever
object filters its pods. What is read:

- Calico: ``spec.selector`` (Calico's selector language: ``==``, ``!=``,
  ``in {..}``, ``not in {..}``, ``has()``, ``!``, ``&&``, ``||``, ``all()``,
  parentheses, ``starts with``, ``ends with``, ``contains``), ``types``,
  ``ingress`` rules with ``action: Allow`` (``source.nets`` as admitted
  blocks, ``source.notNets`` as the world minus them, ``source.selector`` /
  ``namespaceSelector`` as in-cluster peers, ``destination.ports``), and
  ``action: Deny`` rules of address blocks or of every source, which win over
  the allows (Calico evaluates rules in order, and a denylist comes first; a
  Deny placed after an Allow of the same addresses is taken as winning too,
  the strict side). Log and Pass rules, and Denies of in-cluster peers only,
  are not modelled.
  A GlobalNetworkPolicy applies in every namespace (its ``namespaceSelector``
  matched against the Namespace's labels as the stack declares them, plus
  ``projectcalico.org/name``).
- Cilium: ``endpointSelector`` (a label selector; ``k8s:``/``any:`` key
  prefixes dropped), ``ingress`` rules: ``fromCIDR``, ``fromCIDRSet``
  (``cidr`` with ``except``), ``fromEntities`` (``world``/``all`` admit
  everyone), ``fromEndpoints`` as in-cluster peers, ``toPorts``; ``ingressDeny``
  the same way, winning over any allow as Cilium defines it; ``spec`` and
  ``specs``. A clusterwide policy applies in every namespace
  (``io.kubernetes.pod.namespace`` in its selector).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from guard import base
from guard.base import Malformed, Resource, Unknown, as_list, as_map, as_port, dig
from guard.kube import Block, Policy, Rule, Selector, name_of, namespace_of, selector

CALICO_GROUPS = ("projectcalico.org/v3", "crd.projectcalico.org/v1")
CILIUM_GROUPS = ("cilium.io/v2",)
KINDS = {
    ("calico", "NetworkPolicy"): "Calico NetworkPolicy",
    ("calico", "GlobalNetworkPolicy"): "Calico GlobalNetworkPolicy",
    ("cilium", "CiliumNetworkPolicy"): "CiliumNetworkPolicy",
    ("cilium", "CiliumClusterwideNetworkPolicy"): "CiliumClusterwideNetworkPolicy",
}
CLUSTER_WIDE = ("Calico GlobalNetworkPolicy", "CiliumClusterwideNetworkPolicy")
#: The namespace as a label, the way each CNI exposes it to its selectors.
NAMESPACE_KEYS = ("projectcalico.org/namespace", "io.kubernetes.pod.namespace")


def kind_of(res: Resource) -> str | None:
    """Which CNI policy a Kubernetes resource is (by apiVersion and kind), or None."""
    if not res.type.startswith("kubernetes:"):
        return None
    api, kind = dig(res.props, "apiVersion"), dig(res.props, "kind")
    if not isinstance(api, str) or not isinstance(kind, str):
        # crd2pulumi types carry their group in the type token
        token = res.type.split(":")
        api, kind = (token[1], token[2]) if len(token) == 3 else ("", "")
    family = "calico" if api in CALICO_GROUPS else "cilium" if api in CILIUM_GROUPS else None
    return KINDS.get((family, kind)) if family else None


# -- Calico's selector language ----------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'[^']*'|\"[^\"]*\")|(?P<op>==|!=|&&|\|\||[!(){},])"
    r"|(?P<word>[A-Za-z0-9_./\-]+))"
)

Labels = Mapping[str, str]
Pred = Callable[[Labels], bool]


def _tokens(text: str) -> list[str]:
    out, at = [], 0
    text = text.rstrip()
    while at < len(text):
        m = _TOKEN.match(text, at)
        if not m or m.end() == at:
            raise ValueError(f"cannot read {text[at : at + 20]!r}")
        out.append(m.group(0).strip())
        at = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, n: int = 0) -> str | None:
        return self.toks[self.i + n] if self.i + n < len(self.toks) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise ValueError(f"expected {want or 'more'}, found {tok or 'the end'}")
        self.i += 1
        return tok

    def parse(self) -> Pred:
        if not self.toks:
            return lambda labels: True
        pred = self.or_()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()!r}")
        return pred

    def _chain(self, op: str, operand: Callable[[], Pred], any_: bool) -> Pred:
        """``operand (op operand)*``, left to right: any (``||``) or all (``&&``)."""
        preds = [operand()]
        while self.peek() == op:
            self.take()
            preds.append(operand())
        if len(preds) == 1:
            return preds[0]
        if any_:
            return lambda labels: any(p(labels) for p in preds)
        return lambda labels: all(p(labels) for p in preds)

    def or_(self) -> Pred:
        return self._chain("||", self.and_, any_=True)

    def and_(self) -> Pred:
        return self._chain("&&", self.unary, any_=False)

    def unary(self) -> Pred:
        if self.peek() == "!":
            self.take()
            inner = self.unary()
            return lambda labels: not inner(labels)
        if self.peek() == "(":
            self.take()
            inner = self.or_()
            self.take(")")
            return inner
        return self.term()

    @staticmethod
    def _value(tok: str) -> str:
        if len(tok) >= 2 and tok[0] == tok[-1] and tok[0] in "'\"":
            return tok[1:-1]
        raise ValueError(f"expected a quoted value, found {tok!r}")

    def term(self) -> Pred:
        word = self.take()
        if word in ("all", "global") and self.peek() == "(":
            self.take("(")
            self.take(")")
            return lambda labels: True
        if word == "has" and self.peek() == "(":
            self.take("(")
            key = self.take()
            self.take(")")
            return lambda labels: key in labels
        key = word
        op = self.take()
        if op in ("==", "!="):
            value = self._value(self.take())
            if op == "==":
                return lambda labels: labels.get(key) == value
            return lambda labels: labels.get(key) != value
        if op == "not" and self.peek() == "in":
            self.take()
            values = self._set()
            return lambda labels: labels.get(key) not in values
        if op == "in":
            values = self._set()
            return lambda labels: labels.get(key) in values
        if op in ("starts", "ends") and self.peek() == "with":
            self.take()
            value = self._value(self.take())
            if op == "starts":
                return lambda labels: labels.get(key, "\0").startswith(value)
            return lambda labels: (labels.get(key) or "\0").endswith(value)
        if op == "contains":
            value = self._value(self.take())
            return lambda labels: value in labels.get(key, "\0")
        raise ValueError(f"unknown operator {op!r}")

    def _set(self) -> frozenset[str]:
        self.take("{")
        values = set()
        while self.peek() != "}":
            values.add(self._value(self.take()))
            if self.peek() == ",":
                self.take()
        self.take("}")
        return frozenset(values)


@dataclass(frozen=True)
class CalicoSelector(Selector):
    """A Calico selector expression as a pod selector."""

    expression: str = ""
    pred: Pred = lambda labels: True

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.pred(labels)

    def text(self) -> str:
        return f"'{self.expression}'" if self.expression.strip() else "all()"


def calico_selector(value: Any, field: str) -> Selector | Unknown:
    if isinstance(value, Unknown):
        return value
    if value is None:
        return CalicoSelector((), (), "", lambda labels: True)
    if not isinstance(value, str):
        raise Malformed(field, value, "is not a Calico selector string")
    try:
        pred = _Parser(value).parse()
    except ValueError as err:
        raise Malformed(
            field, value, f"is not a Calico selector the guard can read: {err}"
        ) from None
    return CalicoSelector((), (), value, pred)


@dataclass(frozen=True)
class ScopedSelector(Selector):
    """A cluster-wide policy's selectors: pods by label, namespaces by theirs."""

    pods: Selector | None = None
    namespaces: Selector | None = None
    ns_labels: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.pods is not None and not self.pods.matches(labels):
            return False
        if self.namespaces is None:
            return True
        ns = next((labels[k] for k in NAMESPACE_KEYS if k in labels), None)
        declared = dict(dict(self.ns_labels).get(ns or "", ()))
        return self.namespaces.matches(
            {
                **declared,
                "projectcalico.org/name": ns or "",
                "kubernetes.io/metadata.name": ns or "",
            }
        )

    def text(self) -> str:
        parts = [self.pods.text() if self.pods else "all()"]
        if self.namespaces is not None:
            parts.append(f"namespaces {self.namespaces.text()}")
        return " in ".join(parts)


# -- rules ------------------------------------------------------------------------------


def _ports(
    value: Any, f: str, unknowns: list[tuple[str, Unknown]]
) -> list[tuple[int | str, int | None]] | None:
    """Calico ``destination.ports`` (numbers, "N:M" ranges, names); None: every port."""
    plist = as_list(value, f)
    if isinstance(plist, Unknown):
        unknowns.append((f, plist))
        return []
    if not plist:
        return None
    out: list[tuple[int | str, int | None]] = []
    for j, p in enumerate(plist):
        if isinstance(p, str) and re.fullmatch(r"\d+:\d+", p):
            lo, hi = (as_port(int(x), f"{f}[{j}]") for x in p.split(":"))
            if isinstance(lo, int) and isinstance(hi, int):
                out.append((lo, hi))
            continue
        port = as_port(p, f"{f}[{j}]")
        if isinstance(port, Unknown):
            unknowns.append((f"{f}[{j}]", port))
        elif port is not None:
            out.append((port, None))
    return out


def _blocks(values: Any, f: str, unknowns: list[tuple[str, Unknown]]) -> list[Any]:
    return list(base.known_cidrs(values, f, unknowns))


def _world(version: int) -> Any:
    import ipaddress

    return ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0")


def _calico_rule(
    r: Mapping[str, Any], f: str, pol: str, unknowns: list[tuple[str, Unknown]]
) -> Rule | None:
    action = r.get("action", "Allow")
    if action not in ("Allow", "Deny"):
        return None  # Log and Pass (to the next tier) are not modelled
    proto_v = r.get("protocol")
    proto: str | None = None  # no protocol: the rule matches every protocol
    if isinstance(proto_v, Unknown):
        unknowns.append((f"{f}.protocol", proto_v))
        proto = "TCP"
    elif proto_v is not None:
        proto = {"6": "TCP", "17": "UDP", "132": "SCTP"}.get(str(proto_v), str(proto_v).upper())
    ports = _ports(dig(r, "destination", "ports"), f"{f}.destination.ports", unknowns)
    source = r.get("source")
    if not isinstance(source, Mapping) or not source:
        return Rule(ports, None, proto)
    peers: list[Block | str] = []
    nets = _blocks(source.get("nets"), f"{f}.source.nets", unknowns)
    not_nets = _blocks(source.get("notNets"), f"{f}.source.notNets", unknowns)
    peers += [Block(n, (), pol) for n in nets]
    if not_nets and not nets:
        for version in sorted({n.version for n in not_nets}):
            peers.append(
                Block(_world(version), tuple(x for x in not_nets if x.version == version), pol)
            )
    elif not_nets:
        peers = [
            Block(b.net, tuple(x for x in not_nets if x.version == b.net.version), pol)
            for b in peers
            if isinstance(b, Block)
        ]
    in_cluster = source.get("selector") is not None or source.get("namespaceSelector") is not None
    if in_cluster and not nets and not not_nets:
        peers.append("selector")
    if not peers:
        return Rule(ports, None, proto)
    return Rule(ports, peers, proto)


def _cilium_rule(
    r: Mapping[str, Any], f: str, pol: str, unknowns: list[tuple[str, Unknown]]
) -> Rule:
    ports: list[tuple[int | str, int | None]] | None = None
    protos: set[str] = set()
    to = as_list(r.get("toPorts"), f"{f}.toPorts")
    if isinstance(to, Unknown):
        unknowns.append((f"{f}.toPorts", to))
        ports = []
    elif to:
        ports = []
        for i, tp in enumerate(to):
            plist = as_list(dig(tp, "ports"), f"{f}.toPorts[{i}].ports")
            for j, p in enumerate([] if isinstance(plist, Unknown) else plist):
                if isinstance(p, Unknown) or not isinstance(p, Mapping):
                    continue
                proto = p.get("protocol", "ANY")
                protos.add(proto.upper() if isinstance(proto, str) else "ANY")
                port = as_port(p.get("port"), f"{f}.toPorts[{i}].ports[{j}].port")
                if isinstance(port, Unknown):
                    unknowns.append((f"{f}.toPorts[{i}].ports[{j}].port", port))
                elif port is None or port == 0:
                    ports = None
                    break
                else:
                    end = as_port(p.get("endPort"), f"{f}.toPorts[{i}].ports[{j}].endPort")
                    ports.append((port, end if isinstance(end, int) else None))
            if ports is None:
                break
    peers: list[Block | str] = []
    for cidr in _blocks(r.get("fromCIDR"), f"{f}.fromCIDR", unknowns):
        peers.append(Block(cidr, (), pol))
    sets = as_list(r.get("fromCIDRSet"), f"{f}.fromCIDRSet")
    if isinstance(sets, Unknown):
        unknowns.append((f"{f}.fromCIDRSet", sets))
        sets = []
    for k, entry in enumerate(sets):
        if not isinstance(entry, Mapping):
            raise Malformed(f"{f}.fromCIDRSet[{k}]", entry, "is not an object")
        cidr = base.as_cidr(entry.get("cidr"), f"{f}.fromCIDRSet[{k}].cidr")
        if isinstance(cidr, Unknown):
            unknowns.append((f"{f}.fromCIDRSet[{k}].cidr", cidr))
            continue
        if cidr is None:
            continue  # a cidrGroupRef: in-cluster objects the stack may not hold
        excepts = _blocks(entry.get("except"), f"{f}.fromCIDRSet[{k}].except", unknowns)
        peers.append(Block(cidr, tuple(excepts), pol))
    entities = as_list(r.get("fromEntities"), f"{f}.fromEntities")
    if isinstance(entities, Unknown):
        unknowns.append((f"{f}.fromEntities", entities))
        entities = []
    if any(e in ("world", "all") for e in entities):
        return Rule(ports, None, _cilium_protocol(protos))
    if entities or r.get("fromEndpoints") is not None or r.get("fromRequires") is not None:
        peers.append("selector")
    if not peers:
        # an ingress rule with only toPorts admits every source on those ports
        return Rule(ports, None, _cilium_protocol(protos))
    return Rule(ports, peers, _cilium_protocol(protos))


def _cilium_protocol(protos: set[str]) -> str | None:
    """The protocol of a Cilium rule's ports when they share one (TCP, UDP);
    None (every protocol) for ANY, none given or a mix (the lenient side)."""
    return next(iter(protos)) if len(protos) == 1 and protos != {"ANY"} else None


def _cilium_rules(
    res: Resource,
    spec: Mapping[str, Any],
    key: str,
    where: str,
    pol: str,
    unknowns: list[tuple[str, Unknown]],
    note: Callable[[Resource, str, Any, str], None],
) -> list[Rule]:
    """One Cilium rule list of ``spec`` (``ingress``, ``ingressDeny``)."""
    found = []
    items = as_list(spec.get(key), f"{where}.{key}")
    if isinstance(items, Unknown):
        unknowns.append((f"{where}.{key}", items))
        items = []
    for i, r in enumerate(items):
        if isinstance(r, Mapping):
            try:
                found.append(_cilium_rule(r, f"{where}.{key}[{i}]", pol, unknowns))
            except Malformed as err:
                note(res, err.field, err.value, err.reason)
    return found


def _modelled_deny(rule: Rule) -> bool:
    """A Deny of every source or of address blocks (one of in-cluster peers
    only is not modelled)."""
    return rule.peers is None or any(isinstance(b, Block) for b in rule.peers)


def _strip_prefix(sel: Any) -> Any:
    """Cilium's label sources (``k8s:app``, ``any:app``) as plain keys."""
    if not isinstance(sel, Mapping):
        return sel
    out = dict(sel)
    ml = sel.get("matchLabels")
    if isinstance(ml, Mapping):
        out["matchLabels"] = {re.sub(r"^(k8s|any):", "", str(k)): v for k, v in ml.items()}
    me = sel.get("matchExpressions")
    if isinstance(me, list):
        out["matchExpressions"] = [
            {**e, "key": re.sub(r"^(k8s|any):", "", str(e.get("key")))}
            if isinstance(e, Mapping)
            else e
            for e in me
        ]
    return out


def policies(
    res: Resource,
    kind: str,
    ns_labels: Mapping[str, Mapping[str, str]],
    note: Callable[[Resource, str, Any, str], None],
) -> list[Policy]:
    """The Policy (or, for Cilium's ``specs``, Policies) a CNI object makes."""
    ns = "*" if kind in CLUSTER_WIDE else namespace_of(res)
    name = name_of(res)
    frozen_ns = tuple((k, tuple(sorted(v.items()))) for k, v in ns_labels.items())
    src = _Source(res, kind, ns, name, frozen_ns, note)
    return [_calico_policy(src)] if kind.startswith("Calico") else _cilium_policies(src)


_FrozenNs = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


@dataclass(frozen=True)
class _Source:
    """One CNI policy object as :func:`policies` read it."""

    res: Resource
    kind: str
    ns: str
    name: str
    frozen_ns: _FrozenNs
    note: Callable[[Resource, str, Any, str], None]


def _calico_policy(src: _Source) -> Policy:
    """A Calico NetworkPolicy or GlobalNetworkPolicy (of :func:`policies`)."""
    res, kind, ns, name, frozen_ns, note = (
        src.res, src.kind, src.ns, src.name, src.frozen_ns, src.note
    )  # fmt: skip
    unknowns: list[tuple[str, Unknown]] = []
    spec = as_map(dig(res.props, "spec"), "spec")
    if isinstance(spec, Unknown):
        return Policy(res, ns, name, spec, True, [], [("spec", spec)], kind=kind)
    sel = calico_selector(spec.get("selector"), "spec.selector")
    if ns == "*" and not isinstance(sel, Unknown):
        nsel = spec.get("namespaceSelector")
        nss = calico_selector(nsel, "spec.namespaceSelector") if nsel is not None else None
        if isinstance(nss, Unknown):
            unknowns.append(("spec.namespaceSelector", nss))
            nss = None
        sel = ScopedSelector((), (), sel, nss, frozen_ns)
    if isinstance(sel, Unknown):
        unknowns.append(("spec.selector", sel))
    types = spec.get("types")
    ingress_v = spec.get("ingress")
    if isinstance(types, list):
        ingress_type = "Ingress" in types
    else:
        ingress_type = ingress_v is not None or spec.get("egress") is None
    rules: list[Rule] = []
    denies: list[Rule] = []
    ing = as_list(ingress_v, "spec.ingress")
    if isinstance(ing, Unknown):
        unknowns.append(("spec.ingress", ing))
        ing = []
    for i, r in enumerate(ing):
        if isinstance(r, Unknown):
            unknowns.append((f"spec.ingress[{i}]", r))
        elif not isinstance(r, Mapping):
            note(res, f"spec.ingress[{i}]", r, "is not an object")
        else:
            try:
                rule = _calico_rule(r, f"spec.ingress[{i}]", f"{ns}/{name}", unknowns)
            except Malformed as err:
                note(res, err.field, err.value, err.reason)
                continue
            if rule is None:
                continue
            if r.get("action") == "Deny":
                if _modelled_deny(rule):
                    denies.append(rule)
            else:
                rules.append(rule)
    return Policy(res, ns, name, sel, ingress_type, rules, unknowns, kind=kind, denies=denies)


def _cilium_policies(src: _Source) -> list[Policy]:
    """A CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy: one Policy for its
    ``spec`` and one for each of its ``specs`` (of :func:`policies`)."""
    res, kind, ns, name, frozen_ns, note = (
        src.res, src.kind, src.ns, src.name, src.frozen_ns, src.note
    )  # fmt: skip
    found: list[Policy] = []
    specs: list[tuple[str, Any]] = []
    if dig(res.props, "spec") is not None:
        specs.append(("spec", dig(res.props, "spec")))
    many = as_list(dig(res.props, "specs"), "specs")
    for i, one in enumerate([] if isinstance(many, Unknown) else many):
        specs.append((f"specs[{i}]", one))
    for where, spec in specs:
        if isinstance(spec, Unknown):
            found.append(Policy(res, ns, name, spec, True, [], [(where, spec)], kind=kind))
            continue
        if not isinstance(spec, Mapping):
            note(res, where, spec, "is not an object")
            continue
        punk: list[tuple[str, Unknown]] = []
        sel = selector(
            _strip_prefix(spec.get("endpointSelector") or {}), f"{where}.endpointSelector"
        )
        if isinstance(sel, Unknown):
            punk.append((f"{where}.endpointSelector", sel))
        elif ns == "*":
            sel = ScopedSelector((), (), sel, None, frozen_ns)
        pol = f"{ns}/{name}"
        rules = _cilium_rules(res, spec, "ingress", where, pol, punk, note)
        deny = _cilium_rules(res, spec, "ingressDeny", where, pol, punk, note)
        cdenies = [r for r in deny if _modelled_deny(r)]
        ingress_type = spec.get("ingress") is not None or spec.get("ingressDeny") is not None
        found.append(
            Policy(res, ns, name, sel, ingress_type, rules, punk, kind=kind, denies=cdenies)
        )
    return found
