"""The pulumi-policy adapter: engine values in, the guard's findings out.

Only pulumi-policy's public API is used (cited from pulumi/pulumi-policy at the
1.21 sources, sdk/python/lib/pulumi_policy/). Props arrive wrapped in its
unknown-checking proxy, a read-only Mapping/Sequence whose item access raises
the public ``UnknownValueError`` (proxy.py:55; item access proxy.py:88 and
proxy.py:102): the adapter reads every key through that interface and records
an unknown as :class:`guard_base.Unknown` naming its path, so one unknown value
only affects the paths it sits on. Secrets arrive unwrapped
(deserialize.py:65-72) and assets as ``pulumi.Asset`` objects
(deserialize.py:77): both become plain values here.

Config: every policy declares a config schema (``PolicyConfigSchema``,
policy.py:168) with ``exemptions``; the CLI's ``--policy-pack-config`` file
reaches ``Configure`` (policy.py:1275) for each stack, and a policy's
enforcement level set there overrides the default (``_get_enforcement_level``,
policy.py:1322). The pack's version is the one in PulumiPolicy.yaml: the Python
SDK reports 0.0.1 and the CLI uses the file's (policy.py:113-116).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pulumi
from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

from guard import base, secrets, verdicts
from guard import wire as guard_wire
from guard.base import Asset, Finding, Resource, Unknown

PACK_NAME = "keepsource-guard"
secrets.install()
guard_wire.install()
PACK_VERSION = "0.2.0"  # keep equal to PulumiPolicy.yaml's version
OPAQUE = verdicts.OPAQUE


def plain(value: Any, path: str = "") -> Any:
    """A proxied value as plain data; unknowns as Unknown(path)."""
    if isinstance(value, pulumi.Asset):
        return Asset(
            text=getattr(value, "text", None),
            path=getattr(value, "path", None),
            uri=getattr(value, "uri", None),
        )
    if isinstance(value, pulumi.Archive):
        return Asset()
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key in value:
            sub = f"{path}.{key}" if path else str(key)
            try:
                item = value[key]
            except UnknownValueError as err:
                out[str(key)] = Unknown(sub, err.message.split(" value at", 1)[0])
                continue
            out[str(key)] = plain(item, sub)
        return out
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items: list[Any] = []
        for i in range(len(value)):
            sub = f"{path}[{i}]"
            try:
                item = value[i]
            except UnknownValueError as err:
                items.append(Unknown(sub, err.message.split(" value at", 1)[0]))
                continue
            items.append(plain(item, sub))
        return items
    return value


def facts(resources: Sequence[PolicyResource]) -> list[Resource]:
    found = []
    for r in resources:
        parent = getattr(r, "parent", None)
        deps = getattr(r, "dependencies", None) or []
        found.append(
            Resource(
                r.resource_type,
                r.name,
                r.urn,
                plain(r.props),
                parent.urn if parent is not None else getattr(r.opts, "parent", None),
                tuple(d.urn for d in deps),
            )
        )
    return found


class _PerRequest:
    """The stack's model, built once per AnalyzeStack request; each policy
    judges it with its own verdict function.

    pulumi-policy runs a request's stack policies one after another, in the
    order the pack lists them, each with its own deserialized copy of the same
    resources (policy.py:1031-1078: the loop over the pack's policies). The
    first policy of a request builds the model; the later ones reuse it. A
    policy that does not come after the last one served starts a new request
    (whichever policies are enabled); a change in the resources' URNs does too.
    """

    def __init__(self, build: Callable[[Sequence[Resource]], verdicts.Stack] = verdicts.model):
        self.build = build
        self.urns: tuple[str, ...] | None = None
        self.last = -1
        self.stack: verdicts.Stack | Finding | None = None

    def findings(self, policy: str, args: StackValidationArgs) -> list[Finding]:
        position = list(POLICIES).index(policy)
        urns = tuple(r.urn for r in args.resources)
        if urns != self.urns or position <= self.last or self.stack is None:
            secrets.begin()
            self.stack = self._build_safely(args)
            self.urns = urns
        else:
            secrets.absorb()
        self.last = position
        if isinstance(self.stack, Finding):
            return [self.stack]
        try:
            return verdicts.VERDICTS[policy](self.stack)
        except Exception as err:  # reported, not swallowed
            return [_fault(err, policy)]

    def _build_safely(self, args: StackValidationArgs) -> verdicts.Stack | Finding:
        try:
            return self.build(facts(args.resources))
        except Exception as err:  # reported, not swallowed
            return _fault(err, None)


def _fault(err: Exception, policy: str | None) -> Finding:
    """The last net under "never a crash": a fault of the guard itself becomes a
    violation that says so, instead of an AnalyzeStack error."""
    what = "no path was checked" if policy is None else f"the policy {policy} was not checked"
    return Finding(
        policy or base.MALFORMED,
        "violation",
        f"keepsource-guard could not judge this stack ({type(err).__name__}: {err}); "
        f"{what}. This is a fault of the pack: please report it.",
    )


_REQUEST = _PerRequest()


def _exempt(finding: Finding, exemptions: Sequence[str]) -> bool:
    urn = finding.urn or ""
    return any(urn == e or urn.endswith("::" + e) for e in exemptions)


def _validate(policy: str) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        config = args.get_config() or {}
        exemptions = [str(e) for e in config.get("exemptions") or []]
        for f in _REQUEST.findings(policy, args):
            if f.policy == policy and not _exempt(f, exemptions):
                report_violation(secrets.scrub(f.message), f.urn)

    return validate


SCHEMA = PolicyConfigSchema(
    properties={
        "exemptions": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Resource names (or URNs) whose findings this stack accepts, for example a "
            "proxy known to be transparent by means the pack cannot read.",
        }
    }
)

POLICIES: dict[str, tuple[EnforcementLevel, str]] = {
    base.TERMINATING: (
        EnforcementLevel.MANDATORY,
        "No hop that ends the client's TCP connection (HAProxy without `usesrc clientip`, nginx without "
        "`proxy_bind ... transparent`, Envoy without original_src, Traefik, Caddy, socat, an Ingress, a Gateway "
        "route, an IngressRoute, an in-cluster proxy, an LB that does not keep the client address) in front of "
        "pods whose ingress on that port an ipBlock restricts.",
    ),
    base.SNAT: (
        EnforcementLevel.MANDATORY,
        "A NodePort, LoadBalancer or externalIPs Service in front of ipBlock-restricted pods must set "
        "externalTrafficPolicy: Local; with Cluster, kube-proxy masquerades the client.",
    ),
    base.HEALTH: (
        EnforcementLevel.MANDATORY,
        "An L4 LB whose health checks go through the pod must have every check source admitted by the "
        "policies on those pods, on the pod's port.",
    ),
    base.MALFORMED: (
        EnforcementLevel.MANDATORY,
        "Every value the guard reads (CIDRs, ports, selectors, proxy configs) must be readable; a bad one is "
        "named by resource and field instead of being skipped silently.",
    ),
    base.WORLD: (
        EnforcementLevel.ADVISORY,
        "An ipBlock of 0.0.0.0/0 or ::/0 without `except` admits the whole world.",
    ),
    OPAQUE: (
        EnforcementLevel.ADVISORY,
        "Hops the pack cannot see into (a proxy whose config is not in the stack, a Helm v3 Release, a backend named by "
        "a host name it cannot resolve, an "
        "LB whose check source is not named), reported where ipBlock-restricted pods exist.",
    ),
    base.UNKNOWN_POLICY: (
        EnforcementLevel.ADVISORY,
        "Values unknown at preview, each named, only where they can change a path's verdict.",
    ),
}


def policies() -> list[Any]:
    return [
        StackValidationPolicy(
            name=name,
            description=description,
            enforcement_level=level,
            validate=_validate(name),
            config_schema=SCHEMA,
        )
        for name, (level, description) in POLICIES.items()
    ]
