"""The ``Cluster`` index: what a stack declares, indexed once so lookups do
not grow with the stack; a Service's pods, the policies that select pods,
and how a pod's ingress on one port looks from outside (a CNI's Deny rules
taken from what the allows admit); and the Service port a route names.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from guard.base import Resource, Unknown
from guard.kube.model import (
    CNI_NAMESPACE_KEYS,
    Block,
    Pods,
    Policy,
    Route,
    Rule,
    Svc,
    SvcPort,
    View,
)


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


def service_port(svc: Svc, port: Any) -> SvcPort | None:
    """The Service port a route names (number or name); the only port when not named."""
    if isinstance(port, float) and port.is_integer():
        port = int(port)
    for sp in svc.ports:
        if port is None or sp.port == port or (isinstance(port, str) and sp.name == port):
            return sp
    return None
