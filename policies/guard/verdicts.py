"""Verdicts over the path model, with messages a reviewer can act on.

Mandatory (violation): a terminating hop ahead of pods whose ingress on that
port is restricted by ipBlock; an externally reachable Service with
externalTrafficPolicy Cluster (kube-proxy SNAT) ahead of such pods; an L4 LB
whose health-check source the policies on those pods do not admit; any value
the guard cannot read (named by resource and field). Advisory: a value unknown
at preview, only where it can change a path's verdict (known violations stay
mandatory); a hop the pack cannot see into; a world-open ipBlock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from guard import kube, paths
from guard.base import (
    HEALTH,
    MALFORMED,
    SNAT,
    TERMINATING,
    UNKNOWN_POLICY,
    WORLD,
    Finding,
    Resource,
    Unknown,
    describe,
)

OPAQUE = "opaque-hops"


def _blocks(view: kube.View) -> str:
    nets = []
    for b in view.blocks:
        t = str(b.net) + (f" except {', '.join(map(str, b.excepts))}" if b.excepts else "")
        if t not in nets:
            nets.append(t)
    return ", ".join(nets[:5]) + (" ..." if len(nets) > 5 else "") or "(no ipBlock)"


def _policies(view: kube.View) -> str:
    """The policies on a path: Kubernetes' under one "NetworkPolicy", then a
    CNI's each with its kind."""
    k8s = [p.shown for p in view.policies if p.kind == "NetworkPolicy"]
    parts = [f"NetworkPolicy {', '.join(k8s)}"] if k8s else []
    return ", ".join(parts + [p.label for p in view.policies if p.kind != "NetworkPolicy"])


def _path_text(p: paths.Path) -> str:
    return (
        f"clients {_blocks(p.view)} -> {p.entry.label} -> Service {p.svc.ns}/{p.svc.name} ({p.via}) -> "
        f"{p.pods.label()} port {p.sp.target} -> {_policies(p.view)}"
    )


@dataclass
class Stack:
    """The model of one stack, built once and read by every verdict: the
    cluster, the paths through it, and what the build could not read."""

    cluster: kube.Cluster
    model: paths.Model
    #: (resource, field, value, reason) of each value the guard cannot read
    malformed: list[tuple[Resource, str, Any, str]]
    #: a hop's own values unknown at preview, in the order first seen
    hop_unknowns: list[tuple[Resource, str]]
    unknowns: dict[tuple[str, str], tuple[Resource, Unknown]]
    _restricted: set[str] | None = None

    @property
    def restricted_ns(self) -> set[str]:
        """Namespaces with ipBlock-restricted pods ("*": a cluster-wide policy)."""
        if self._restricted is None:
            self._restricted = _restricted_ns(self.cluster)
        return self._restricted


def model(resources: Sequence[Resource]) -> Stack:
    """The stack's model: what every verdict reads (pure, no findings)."""
    malformed: list[tuple[Resource, str, Any, str]] = []
    unknowns: dict[tuple[str, str], tuple[Resource, Unknown]] = {}
    hop_unknowns: list[tuple[Resource, str]] = []

    def note(res: Resource, field: str, value: Any, reason: str) -> None:
        malformed.append((res, field, value, reason))

    def unknown(res: Resource, field: str, u: Unknown) -> None:
        """A hop's own value unknown at preview (an LB's virtual services, a
        Command's script or host, a Release's values)."""
        if (res.urn, field) not in unknowns:
            hop_unknowns.append((res, field))
        unknowns.setdefault((res.urn, field), (res, u))

    cluster = kube.build(resources, note, unknown)
    built = paths.build(resources, note, unknown, cluster)
    for p in built.paths:
        e, v = p.entry, p.view
        if e.checks and v.isolated and e.check_unknown:
            built.opaque.append(
                paths.Opaque(
                    e.res,
                    f"{e.label}: its health checks reach {p.pods.label()} (port {p.sp.target}, isolated by "
                    f"{_policies(v)}) from the LB's own address on that network, which the config does not name. Set "
                    f"`bindto` in the check and admit that address in the policy.",
                )
            )
    return Stack(cluster, built, malformed, hop_unknowns, unknowns)


def _restricted_ns(cluster: kube.Cluster) -> set[str]:
    restricted = {
        pods.ns
        for pods in cluster.pods
        if any(cluster.view(pods, port).ipblock_restricted for port in pods.ports.values())
    }
    for svc in cluster.services:
        for sp in svc.ports:
            for pods in cluster.pods_of(svc):
                if cluster.view(pods, sp.target, sp.protocol).ipblock_restricted:
                    restricted.add(svc.ns)
    # A policy that filters by address where the stack declares no pods it
    # selects (a Helm v3 Release's, a chart's): its pods may be behind the hop.
    for pol in cluster.policies:
        blocks = [b for r in pol.rules for b in r.peers or [] if isinstance(b, kube.Block)]
        if pol.ingress_type and (any(not b.world for b in blocks) or pol.denies):
            restricted.add(pol.ns)
    return restricted


# -- one verdict per policy -----------------------------------------------------


def terminating(s: Stack) -> list[Finding]:
    """A hop that ends the client's connection ahead of ipBlock-restricted pods."""
    found = []
    for p in s.model.paths:
        e, v = p.entry, p.view
        if e.mode == "terminating" and v.ipblock_restricted:
            breaks = f"{e.label}: {e.detail}; {e.why}"
            refused = f"the policy, which admits only {_blocks(v)}, refuses the real clients"
            message = f"path: {_path_text(p)}. Breaks at: {breaks}, and {refused}. Fix: {e.fix}."
            found.append(Finding(TERMINATING, "violation", message, e.res.urn))
    return _dedupe(found)


def health(s: Stack) -> list[Finding]:
    """An L4 LB whose check source the policies on the pods do not admit."""
    found = []
    for p in s.model.paths:
        e, v = p.entry, p.view
        if not (e.checks and v.isolated):
            continue
        for src in e.check_sources:
            if v.admits(ipaddress.ip_address(src)):
                continue
            target = v.policies[0]
            port = f"{p.sp.target}" + (f"/{p.sp.protocol}" if p.sp.protocol != "TCP" else "")
            found.append(
                Finding(
                    HEALTH,
                    "violation",
                    f"path: check source {src} -> {e.label} -> Service {p.svc.ns}/{p.svc.name} ({p.via}) -> {p.pods.label()} "
                    f"port {port} -> {_policies(v)}. Breaks at: {_policies(v)}: "
                    f"it does not admit the LB's health-check source {src} on the pod's port {port}, so every node "
                    f"looks dead to the LB. Fix: admit the check source: add ipBlock {src}/32 on port {port} to "
                    f"{target.label} (or to a policy of its own selecting these pods).",
                    target.res.urn,
                )
            )
    return _dedupe(found)


def _exposed(s: Stack) -> Iterator[tuple[kube.Svc, kube.SvcPort, kube.Pods, kube.View]]:
    """Each externally reachable Service's port and the pods behind it."""
    for svc in s.cluster.services:
        if not (svc.external or any(f == "spec.type" for f, _ in svc.unknowns)):
            continue
        for sp in svc.ports:
            for pods in s.cluster.pods_of(svc):
                yield svc, sp, pods, s.cluster.view(pods, sp.target, sp.protocol)


def _exposure(svc: kube.Svc, sp: kube.SvcPort) -> str:
    if svc.type not in ("NodePort", "LoadBalancer"):
        return f"externalIPs {', '.join(svc.external_ips)} port {sp.port}"
    if sp.node_port is None:
        return f"{svc.type} port {sp.port}, on a nodePort the cluster picks"
    return f"{svc.type} port {sp.port}, nodePort {sp.node_port}"


def snat(s: Stack) -> list[Finding]:
    """An external Service with externalTrafficPolicy Cluster ahead of
    ipBlock-restricted pods: kube-proxy masquerades the clients."""
    found = []
    for svc, sp, pods, v in _exposed(s):
        if not v.ipblock_restricted or isinstance(svc.etp, Unknown) or svc.etp == "Local":
            continue
        found.append(
            Finding(
                SNAT,
                "violation",
                f"path: clients {_blocks(v)} -> Service {svc.ns}/{svc.name} ({_exposure(svc, sp)}) -> {pods.label()} port "
                f"{sp.target} -> {_policies(v)}. Breaks at: Service {svc.ns}/{svc.name}: "
                f"externalTrafficPolicy is {svc.etp or 'unset (Cluster)'}, so kube-proxy masquerades (SNATs) "
                f"every external client to a node address, which the policy (admitting only {_blocks(v)}) refuses. "
                f"Fix: set spec.externalTrafficPolicy: Local on Service {svc.ns}/{svc.name}.",
                svc.res.urn,
            )
        )
    return _dedupe(found)


def opaque(s: Stack) -> list[Finding]:
    """Hops the pack cannot see into, where ipBlock-restricted pods exist."""
    restricted = s.restricted_ns
    anywhere = "*" in restricted  # a cluster-wide policy
    return _dedupe(
        [
            Finding(OPAQUE, "advisory", op.message, op.res.urn)
            for op in s.model.opaque
            if (op.namespace is None and restricted)
            or op.namespace in restricted
            or (anywhere and op.namespace is not None)
        ]
    )


def world(s: Stack) -> list[Finding]:
    """An ipBlock (or a CNI policy's peer) that admits the whole world."""
    found = []
    for pol in s.cluster.policies:
        found += _world_cni(pol) if pol.kind != "NetworkPolicy" else _world_k8s(pol)
    return _dedupe(found)


def _world_cni(pol: kube.Policy) -> list[Finding]:
    """A CNI's policy: its rules as read."""
    return [
        Finding(
            WORLD,
            "advisory",
            f"{pol.label}: ingress rule {i} admits {peer.net} without an "
            f"exception: the whole world on those ports (the pods are not "
            f"address-restricted there). Name the client CIDRs.",
            pol.res.urn,
        )
        for i, r in enumerate(pol.rules)
        for peer in r.peers or []
        if isinstance(peer, kube.Block) and peer.world
    ]


def _world_k8s(pol: kube.Policy) -> list[Finding]:
    found = []
    spec = pol.res.props.get("spec")
    for direction, key in (("ingress", "from"), ("egress", "to")):
        rules = spec.get(direction) if isinstance(spec, dict) else None
        for i, rule in enumerate(rules if isinstance(rules, list) else []):
            peers = rule.get(key) if isinstance(rule, dict) else None
            for j, peer in enumerate(peers if isinstance(peers, list) else []):
                blk = peer.get("ipBlock") if isinstance(peer, dict) else None
                if not (
                    isinstance(blk, dict)
                    and blk.get("cidr") in ("0.0.0.0/0", "::/0")
                    and not blk.get("except")
                ):
                    continue
                found.append(
                    Finding(
                        WORLD,
                        "advisory",
                        f"NetworkPolicy {pol.ns}/{pol.name}: spec.{direction}[{i}].{key}[{j}].ipBlock.cidr "
                        f"{blk['cidr']} without `except` admits the whole world on those ports (the pods are not "
                        f"address-restricted there). Name the client CIDRs.",
                        pol.res.urn,
                    )
                )
    return found


def malformed(s: Stack) -> list[Finding]:
    """Every value the guard cannot read, named by resource and field."""
    found = []
    for res, fld, value, reason in s.malformed:
        shown = "" if value is None else f" = {value!r}"
        found.append(
            Finding(
                MALFORMED,
                "violation",
                f"{describe(res)}: {fld}{shown} {reason}; the guard ignored that part, so a path through it is not judged. "
                "Fix the value.",
                res.urn,
            )
        )
    return _dedupe(found)


class _Advice:
    """What each unknown value decides, keyed by (urn, field)."""

    def __init__(self, s: Stack) -> None:
        self.unknowns = dict(s.unknowns)
        self.advised: dict[tuple[str, str], set[str]] = {}

    def __call__(self, res: Resource, field: str, what: str) -> None:
        self.advised.setdefault((res.urn, field), set()).add(what)
        self.unknowns.setdefault((res.urn, field), (res, Unknown(field)))


def _path_advice(s: Stack, advise: _Advice) -> None:
    for p in s.model.paths:
        e, v = p.entry, p.view
        if e.mode == "terminating" and not v.ipblock_restricted:
            for res, f, _u in v.unknowns:
                advise(res, f, f"whether the pods behind {e.label} are ipBlock-restricted")
            for f, _u in p.svc.unknowns:
                advise(p.svc.res, f, f"the path {e.label} -> Service {p.svc.ns}/{p.svc.name}")
        if e.checks and v.isolated and not v.open_all:
            for res, f, _u in v.unknowns:
                advise(res, f, f"whether {e.label}'s health checks are admitted")


def _service_advice(s: Stack, advise: _Advice) -> None:
    etp = "spec.externalTrafficPolicy"
    for svc, _sp, pods, v in _exposed(s):
        masquerade = f"whether kube-proxy masquerades clients of {pods.label()}"
        if v.ipblock_restricted:
            if isinstance(svc.etp, Unknown):
                advise(svc.res, etp, masquerade)
            for f, _u in svc.unknowns:
                if f != etp:
                    advise(svc.res, f, f"the exposure of {pods.label()}")
        else:
            for res, f, _u in v.unknowns:
                advise(res, f, f"whether Service {svc.ns}/{svc.name} must keep the client address")
            if isinstance(svc.etp, Unknown) and v.isolated and not v.open_all:
                advise(svc.res, etp, masquerade)
    policy_ns = {p.ns for p in s.cluster.policies}
    for svc in s.cluster.services:
        if (svc.external or any(f == "spec.type" for f, _ in svc.unknowns)) and (
            svc.selector is None and svc.unknowns and svc.ns in policy_ns
        ):
            for f, _u in svc.unknowns:
                advise(svc.res, f, f"which pods Service {svc.ns}/{svc.name} exposes")


def unknown_values(s: Stack) -> list[Finding]:
    """Values unknown at preview, each named, only where they decide a verdict."""
    advise = _Advice(s)
    _path_advice(s, advise)
    _service_advice(s, advise)
    if s.restricted_ns:
        for res, fld in s.hop_unknowns:
            advise(
                res,
                fld,
                "which Services this hop reaches, and so whether it hides clients from "
                f"ipBlock-restricted pods (in {', '.join(sorted(s.restricted_ns))})",
            )
    found = []
    for key, whats in advise.advised.items():
        res, _u = advise.unknowns[key]
        found.append(
            Finding(
                UNKNOWN_POLICY,
                "advisory",
                f"{describe(res)}: {key[1]} is unknown at preview; it decides {'; '.join(sorted(whats))}. "
                "The verdict for that path is made at `pulumi up`.",
                res.urn,
            )
        )
    return _dedupe(found)


#: Each policy's verdict over the stack's model, in the pack's order.
VERDICTS: dict[str, Callable[[Stack], list[Finding]]] = {
    TERMINATING: terminating,
    SNAT: snat,
    HEALTH: health,
    MALFORMED: malformed,
    WORLD: world,
    OPAQUE: opaque,
    UNKNOWN_POLICY: unknown_values,
}


def judge(resources: Sequence[Resource]) -> list[Finding]:
    """Every policy's findings over one stack (tests and benchmarks; the pack
    asks each policy's verdict of a model it builds once per stack)."""
    s = model(resources)
    return [f for verdict in VERDICTS.values() for f in verdict(s)]


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str, str | None]] = set()
    out = []
    for f in findings:
        key = (f.policy, f.message, f.urn)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
