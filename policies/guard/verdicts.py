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
from collections.abc import Sequence
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


def judge(resources: Sequence[Resource]) -> list[Finding]:
    findings: list[Finding] = []
    malformed: list[tuple[Resource, str, Any, str]] = []
    unknowns: dict[tuple[str, str], tuple[Resource, Unknown]] = {}

    def note(res: Resource, field: str, value: Any, reason: str) -> None:
        malformed.append((res, field, value, reason))

    hop_unknowns: list[tuple[Resource, str]] = []

    def unknown(res: Resource, field: str, u: Unknown) -> None:
        """A hop's own value unknown at preview (an LB's virtual services, a
        Command's script or host, a Release's values)."""
        if (res.urn, field) not in unknowns:
            hop_unknowns.append((res, field))
        unknowns.setdefault((res.urn, field), (res, u))

    cluster = kube.build(resources, note, unknown)
    model = paths.build(resources, note, unknown, cluster)
    advised: dict[tuple[str, str], set[str]] = {}

    def advise(res: Resource, field: str, what: str) -> None:
        advised.setdefault((res.urn, field), set()).add(what)
        unknowns.setdefault((res.urn, field), (res, Unknown(field)))

    # -- terminating hops and health checks, per path -------------------------
    for p in model.paths:
        e, v = p.entry, p.view
        if e.mode == "terminating":
            if v.ipblock_restricted:
                findings.append(
                    Finding(
                        TERMINATING,
                        "violation",
                        f"path: {_path_text(p)}. Breaks at: {e.label}: {e.detail}; {e.why}, "
                        f"and the policy, which admits only {_blocks(v)}, refuses the real clients. "
                        f"Fix: {e.fix}.",
                        e.res.urn,
                    )
                )
            else:
                for res, f, _u in v.unknowns:
                    advise(res, f, f"whether the pods behind {e.label} are ipBlock-restricted")
                for f, _u in p.svc.unknowns:
                    advise(p.svc.res, f, f"the path {e.label} -> Service {p.svc.ns}/{p.svc.name}")
        if e.checks and v.isolated:
            for src in e.check_sources:
                addr = ipaddress.ip_address(src)
                if not v.admits(addr):
                    target = v.policies[0]
                    port = f"{p.sp.target}" + (
                        f"/{p.sp.protocol}" if p.sp.protocol != "TCP" else ""
                    )
                    findings.append(
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
            if not v.open_all:
                for res, f, _u in v.unknowns:
                    advise(res, f, f"whether {e.label}'s health checks are admitted")
            if e.check_unknown:
                model.opaque.append(
                    paths.Opaque(
                        e.res,
                        f"{e.label}: its health checks reach {p.pods.label()} (port {p.sp.target}, isolated by "
                        f"{_policies(v)}) from the LB's own address on that network, which the config does not name. Set "
                        f"`bindto` in the check and admit that address in the policy.",
                    )
                )

    policy_ns = {p.ns for p in cluster.policies}

    # -- kube-proxy SNAT, per Service -------------------------------------------
    for svc in cluster.services:
        if not (svc.external or any(f == "spec.type" for f, _ in svc.unknowns)):
            continue
        for sp in svc.ports:
            for pods in cluster.pods_of(svc):
                v = cluster.view(pods, sp.target, sp.protocol)
                if svc.type not in ("NodePort", "LoadBalancer"):
                    exposure = f"externalIPs {', '.join(svc.external_ips)} port {sp.port}"
                elif sp.node_port is None:
                    exposure = f"{svc.type} port {sp.port}, on a nodePort the cluster picks"
                else:
                    exposure = f"{svc.type} port {sp.port}, nodePort {sp.node_port}"
                if v.ipblock_restricted:
                    if isinstance(svc.etp, Unknown):
                        advise(
                            svc.res,
                            "spec.externalTrafficPolicy",
                            f"whether kube-proxy masquerades clients of {pods.label()}",
                        )
                    elif svc.etp != "Local":
                        findings.append(
                            Finding(
                                SNAT,
                                "violation",
                                f"path: clients {_blocks(v)} -> Service {svc.ns}/{svc.name} ({exposure}) -> {pods.label()} port "
                                f"{sp.target} -> {_policies(v)}. Breaks at: Service {svc.ns}/{svc.name}: "
                                f"externalTrafficPolicy is {svc.etp or 'unset (Cluster)'}, so kube-proxy masquerades (SNATs) "
                                f"every external client to a node address, which the policy (admitting only {_blocks(v)}) refuses. "
                                f"Fix: set spec.externalTrafficPolicy: Local on Service {svc.ns}/{svc.name}.",
                                svc.res.urn,
                            )
                        )
                    for f, _u in svc.unknowns:
                        if f != "spec.externalTrafficPolicy":
                            advise(svc.res, f, f"the exposure of {pods.label()}")
                else:
                    for res, f, _u in v.unknowns:
                        advise(
                            res,
                            f,
                            f"whether Service {svc.ns}/{svc.name} must keep the client address",
                        )
                    if isinstance(svc.etp, Unknown) and v.isolated and not v.open_all:
                        advise(
                            svc.res,
                            "spec.externalTrafficPolicy",
                            f"whether kube-proxy masquerades clients of {pods.label()}",
                        )
        if svc.selector is None and svc.unknowns and svc.ns in policy_ns:
            for f, _u in svc.unknowns:
                advise(svc.res, f, f"which pods Service {svc.ns}/{svc.name} exposes")

    # -- opaque hops (only where ipBlock-restricted pods exist) ----------------------
    restricted_ns = {
        pods.ns
        for pods in cluster.pods
        if any(cluster.view(pods, port).ipblock_restricted for port in pods.ports.values())
    }
    for svc in cluster.services:
        for sp in svc.ports:
            for pods in cluster.pods_of(svc):
                if cluster.view(pods, sp.target, sp.protocol).ipblock_restricted:
                    restricted_ns.add(svc.ns)
    # A policy that filters by address where the stack declares no pods it
    # selects (a Helm v3 Release's, a chart's): its pods may be behind the hop.
    for pol in cluster.policies:
        blocks = [b for r in pol.rules for b in r.peers or [] if isinstance(b, kube.Block)]
        if pol.ingress_type and (any(not b.world for b in blocks) or pol.denies):
            restricted_ns.add(pol.ns)
    anywhere = "*" in restricted_ns  # a cluster-wide policy
    for op in model.opaque:
        if (
            (op.namespace is None and restricted_ns)
            or op.namespace in restricted_ns
            or (anywhere and op.namespace is not None)
        ):
            findings.append(Finding(OPAQUE, "advisory", op.message, op.res.urn))

    # -- world-open blocks --------------------------------------------------------
    for pol in cluster.policies:
        if pol.kind != "NetworkPolicy":  # a CNI's policy: its rules as read
            for i, r in enumerate(pol.rules):
                for peer in r.peers or []:
                    if isinstance(peer, kube.Block) and peer.world:
                        findings.append(
                            Finding(
                                WORLD,
                                "advisory",
                                f"{pol.label}: ingress rule {i} admits {peer.net} without an "
                                f"exception: the whole world on those ports (the pods are not "
                                f"address-restricted there). Name the client CIDRs.",
                                pol.res.urn,
                            )
                        )
            continue
        for direction, key in (("ingress", "from"), ("egress", "to")):
            rules = (
                pol.res.props.get("spec", {}).get(direction)
                if isinstance(pol.res.props.get("spec"), dict)
                else None
            )
            for i, rule in enumerate(rules if isinstance(rules, list) else []):
                peers = rule.get(key) if isinstance(rule, dict) else None
                for j, peer in enumerate(peers if isinstance(peers, list) else []):
                    blk = peer.get("ipBlock") if isinstance(peer, dict) else None
                    if (
                        isinstance(blk, dict)
                        and blk.get("cidr") in ("0.0.0.0/0", "::/0")
                        and not blk.get("except")
                    ):
                        findings.append(
                            Finding(
                                WORLD,
                                "advisory",
                                f"NetworkPolicy {pol.ns}/{pol.name}: spec.{direction}[{i}].{key}[{j}].ipBlock.cidr "
                                f"{blk['cidr']} without `except` admits the whole world on those ports (the pods are not "
                                f"address-restricted there). Name the client CIDRs.",
                                pol.res.urn,
                            )
                        )

    # -- malformed and unknown values -----------------------------------------------
    for res, fld, value, reason in malformed:
        shown = "" if value is None else f" = {value!r}"
        findings.append(
            Finding(
                MALFORMED,
                "violation",
                f"{describe(res)}: {fld}{shown} {reason}; the guard ignored that part, so a path through it is not judged. "
                "Fix the value.",
                res.urn,
            )
        )
    if restricted_ns:
        for res, fld in hop_unknowns:
            advise(
                res,
                fld,
                "which Services this hop reaches, and so whether it hides clients from "
                f"ipBlock-restricted pods (in {', '.join(sorted(restricted_ns))})",
            )
    for (_urn, fld), whats in advised.items():
        res, _u = unknowns[(_urn, fld)]
        findings.append(
            Finding(
                UNKNOWN_POLICY,
                "advisory",
                f"{describe(res)}: {fld} is unknown at preview; it decides {'; '.join(sorted(whats))}. "
                "The verdict for that path is made at `pulumi up`.",
                res.urn,
            )
        )
    return _dedupe(findings)


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str, str | None]] = set()
    out = []
    for f in findings:
        key = (f.policy, f.message, f.urn)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
