"""The Kubernetes model's types: label selectors, pods, Services and their
ports, NetworkPolicies with their rules and address blocks, the view of a
pod's ingress from outside, and routes to Services; with the helpers that
name a resource (its namespace and name).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from guard.base import Resource, Unknown, dig

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The namespace as a pod label, the way Calico and Cilium expose it to their selectors.
CNI_NAMESPACE_KEYS = ("projectcalico.org/namespace", "io.kubernetes.pod.namespace")

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
