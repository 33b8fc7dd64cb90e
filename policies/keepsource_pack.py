"""The pack's policies: thin pulumi-policy adapters around keepsource_rules."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keepsource_rules as rules
from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

PACK_NAME = "keepsource-guard"

# The unknown sentinels pulumi-policy puts where a value is unknown at preview.
_UNKNOWN_SENTINELS = {
    "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7",
    "3eeb2bf0-c639-47a8-9e75-3b44932eb421",
    "04da6b54-80e4-46f7-96ec-b56ff0331ba9",
    "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2",
    "030794c1-ac77-496b-92df-f27374a8bd58",
    "e48ece36-62e2-4504-bad9-02848725956a",
    "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",
}


def plain(value: Any) -> Any:
    """Props as plain data, unknowns as keepsource_rules.UNKNOWN (pulumi-policy's
    proxies raise on an unknown value; the rules want to say so instead)."""
    if type(value).__name__ in ("_DictProxy", "_ListProxy"):
        value = value["__target"]
    if isinstance(value, str):
        return rules.UNKNOWN if value in _UNKNOWN_SENTINELS else value
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def facts(args: StackValidationArgs) -> list[rules.Resource]:
    return [rules.Resource(r.resource_type, r.name, r.urn, plain(r.props)) for r in args.resources]


StackRule = Callable[[Sequence[rules.Resource]], list[rules.Finding]]


def _stack_validate(rule: StackRule) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        for finding in rules.safe(rule, facts(args)):
            if finding.kind == "violation":
                report_violation(finding.message, finding.urn)

    return validate


def _unknowns(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    resources = facts(args)
    for rule in STACK_RULES.values():
        for finding in rules.safe(rule, resources):
            if finding.kind == "unknown":
                report_violation(f"[{rule.__name__}] not checked: {finding.message}", finding.urn)


def _world_open(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    res = rules.Resource(args.resource_type, args.name, args.urn, plain(args.props))
    for finding in rules.safe(rules.world_open_ipblock, res):
        report_violation(finding.message, finding.urn)


STACK_RULES: dict[str, StackRule] = {
    "no-terminating-proxy-before-ipblock": rules.terminating_proxy,
    "client-address-kept-by-kube-proxy": rules.client_address_lost,
    "lb-health-checks-admitted": rules.health_checks_admitted,
}

DESCRIPTIONS = {
    "no-terminating-proxy-before-ipblock": "No proxy that ends the client's TCP connection (HAProxy in any mode "
    "without `usesrc clientip`, nginx, envoy, traefik, an Ingress or a Gateway route, an LB that does not keep "
    "the client address) may stand in front of pods that an ipBlock NetworkPolicy restricts.",
    "client-address-kept-by-kube-proxy": "A NodePort or LoadBalancer Service that selects ipBlock-restricted "
    "pods must set externalTrafficPolicy: Local; with Cluster, kube-proxy masquerades the client.",
    "lb-health-checks-admitted": "An LB that health-checks nodes through the pod (TCP/HTTP to the nodePort) "
    "must have its check source admitted by the pod's ipBlock policy on the pod's port.",
    "world-open-ipblock": "An ipBlock of 0.0.0.0/0 or ::/0 without `except` admits the whole world.",
    "unknown-at-preview": "Reports every check that a value unknown at preview kept a rule from making.",
}


def policies() -> list[Any]:
    built: list[Any] = [
        StackValidationPolicy(
            name=name,
            description=DESCRIPTIONS[name],
            enforcement_level=EnforcementLevel.MANDATORY,
            validate=_stack_validate(rule),
        )
        for name, rule in STACK_RULES.items()
    ]
    built.append(
        ResourceValidationPolicy(
            name="world-open-ipblock",
            description=DESCRIPTIONS["world-open-ipblock"],
            enforcement_level=EnforcementLevel.ADVISORY,
            validate=_world_open,
        )
    )
    built.append(
        StackValidationPolicy(
            name="unknown-at-preview",
            description=DESCRIPTIONS["unknown-at-preview"],
            enforcement_level=EnforcementLevel.ADVISORY,
            validate=_unknowns,
        )
    )
    return built
