"""Cloud load balancers as hops: AWS ELBv2 resources and Services' LB annotations.

A load balancer in front of address-filtered pods breaks the filter the way a
proxy does when it does not keep the client's address. What AWS documents:

- An Application Load Balancer (``loadBalancerType: application``, the
  provider's default; target groups of protocol HTTP/HTTPS) ends every client
  connection; the address reaches the target only in ``X-Forwarded-For``.
- A Network Load Balancer keeps the client's address for instance targets
  (always) and for IP targets when ``preserveClientIp`` is true; for IP
  targets over TCP/TLS it is false by default ("Client IP preservation",
  Elastic Load Balancing, Network Load Balancers). PROXY protocol v2 puts the
  address in the payload, which a NetworkPolicy never reads.
- A Service ``type: LoadBalancer`` on AWS: the in-tree controller makes a
  Classic ELB unless ``service.beta.kubernetes.io/aws-load-balancer-type`` is
  ``nlb``; a Classic ELB proxies (TCP or HTTP, ``...-backend-protocol``), so
  its backends see its address. The AWS Load Balancer Controller
  (``...-type: external``) makes an NLB: instance targets keep the address,
  IP targets only with ``preserve_client_ip.enabled=true`` in
  ``...-target-group-attributes``. GKE and Azure Service load balancers pass
  traffic through (the client address kept), so their annotations are no hop.

A target group's targets reach a Service by nodePort (node addresses or
instances at the group's or attachment's port). ELBv2 resources are linked the
way the engine links them, by their dependencies (a listener depends on its
load balancer and target group; an attachment on its target group), since the
ARNs are unknown at preview.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from guard.base import Malformed, Resource, Unknown, as_port, dig, is_ip
from guard.kube import Svc
from guard.proxies.base import Backend

LB = "aws:lb/loadBalancer:LoadBalancer"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
LISTENER = "aws:lb/listener:Listener"
ATTACHMENT = "aws:lb/targetGroupAttachment:TargetGroupAttachment"
ALIASES = {
    "aws:alb/loadBalancer:LoadBalancer": LB,
    "aws:alb/targetGroup:TargetGroup": TARGET_GROUP,
    "aws:alb/listener:Listener": LISTENER,
    "aws:alb/targetGroupAttachment:TargetGroupAttachment": ATTACHMENT,
    "aws:elb/loadBalancer:LoadBalancer": "classic",
}
AWS = "service.beta.kubernetes.io/aws-load-balancer-"
FIX = (
    "use a Network Load Balancer that keeps the client address (instance targets, or "
    "IP targets with preserveClientIp: true) and externalTrafficPolicy: Local"
)

Found = tuple[Resource, str, str, tuple[Backend, ...], str]  # res, label, detail, backends, fix
Unk = Callable[[Resource, str, Unknown], None]
Note = Callable[[Resource, str, Any, str], None]


def _type(res: Resource) -> str:
    return ALIASES.get(res.type, res.type)


def _flag(value: Any) -> bool | Unknown | None:
    """preserveClientIp is a string in the provider ("true"/"false")."""
    if isinstance(value, Unknown) or value is None:
        return value
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text == "true" else False if text == "false" else None


def _port(res: Resource, field: str, note: Note) -> int | None:
    try:
        port = as_port(dig(res.props, field), field)
    except Malformed as err:
        note(res, err.field, err.value, err.reason)
        return None
    return port if isinstance(port, int) else None


def elbv2(resources: Sequence[Resource], note: Note, unknown: Unk) -> list[Found]:
    """One hop per target group whose load balancer does not keep the client's address."""
    by_urn = {r.urn: r for r in resources}
    groups = [r for r in resources if _type(r) == TARGET_GROUP]
    listeners = [r for r in resources if _type(r) == LISTENER]
    attachments = [r for r in resources if _type(r) == ATTACHMENT]
    found: list[Found] = []
    for tg in groups:
        protocol = str(dig(tg.props, "protocol") or "").upper()
        target_type = dig(tg.props, "targetType") or "instance"
        lbs = [
            by_urn[d]
            for lis in listeners
            if tg.urn in lis.dependencies
            for d in lis.dependencies
            if d in by_urn and _type(by_urn[d]) == LB
        ]
        kinds = {str(dig(lb.props, "loadBalancerType") or "application") for lb in lbs}
        if not kinds:
            kinds = {"application" if protocol in ("HTTP", "HTTPS") else "network"}
        name = dig(tg.props, "name")
        label = f"AWS target group {name if isinstance(name, str) else tg.name}"
        if lbs:
            label += " of " + ", ".join(
                f"{dig(lb.props, 'loadBalancerType') or 'application'} load balancer {lb.name}"
                for lb in lbs
            )
        detail = ""
        if "application" in kinds:
            detail = (
                "an Application Load Balancer ends every client connection; the client address "
                "reaches the targets only in X-Forwarded-For, which a NetworkPolicy never reads"
            )
        elif target_type == "ip":
            keep = _flag(dig(tg.props, "preserveClientIp"))
            if isinstance(keep, Unknown):
                unknown(tg, "preserveClientIp", keep)
                continue
            if keep is None and protocol in ("UDP", "TCP_UDP"):
                keep = True  # AWS: preserved by default for UDP with IP targets
            if keep:
                continue
            detail = (
                "a Network Load Balancer with IP targets and client IP preservation off (the "
                "default for TCP and TLS) sends the targets its own address"
            )
            if dig(tg.props, "proxyProtocolV2") is True:
                detail += "; PROXY protocol v2 carries the client address in the payload only"
        else:
            continue  # an NLB to instance targets keeps the client address
        port = _port(tg, "port", note)
        backends: list[Backend] = []
        for att in attachments:
            if tg.urn not in att.dependencies:
                continue
            target = dig(att.props, "targetId")
            at = _port(att, "port", note) or port
            if at is None:
                continue
            host = target if isinstance(target, str) and is_ip(target) else ""
            backends.append(Backend(host, at))
        if not backends and port is not None:
            backends.append(Backend("", port))
        found.append((tg, label, detail, tuple(dict.fromkeys(backends)), FIX))
    return found


def service_lb(svc: Svc) -> tuple[str, str] | None:
    """(label, detail) when a LoadBalancer Service's own cloud load balancer
    hides the client's address, from its annotations; None when it keeps it
    or the annotations say nothing about AWS."""
    if svc.type != "LoadBalancer":
        return None
    notes = dig(svc.res.props, "metadata", "annotations")
    if not isinstance(notes, Mapping):
        return None
    aws = {str(k)[len(AWS) :]: v for k, v in notes.items() if str(k).startswith(AWS)}
    if not aws:
        return None
    lb_type = str(aws.get("type", "")).lower()
    label = f"the AWS load balancer of Service {svc.ns}/{svc.name}"
    if lb_type == "nlb":
        return None  # in-tree NLB: instance targets keep the client address
    if lb_type == "external":
        if str(aws.get("nlb-target-type", "instance")).lower() != "ip":
            return None
        attrs = str(aws.get("target-group-attributes", "")).replace(" ", "").lower()
        if "preserve_client_ip.enabled=true" in attrs:
            return None
        return (
            label + " (AWS Load Balancer Controller, NLB with IP targets)",
            "an NLB with IP targets and client IP preservation off (the default for TCP) sends "
            "the pods its own address (`aws-load-balancer-target-group-attributes: "
            "preserve_client_ip.enabled=true` keeps it)",
        )
    backend = str(aws.get("backend-protocol", "tcp")).lower()
    return (
        label + f" (Classic ELB, backend protocol {backend})",
        "a Classic ELB proxies every connection (TCP or HTTP), so the pods see its address; "
        "`aws-load-balancer-type: nlb` or the AWS Load Balancer Controller's NLB keeps the client's",
    )
