"""The Kubernetes model's NetworkPolicy semantics, the pulumi-policy adapter, and
robustness: no value, however malformed, makes the guard raise."""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from guard import kube, verdicts
from guard import pack as keepsource_pack
from guard.base import (
    MALFORMED,
    TERMINATING,
    WORLD,
    Asset,
    Finding,
    Malformed,
    Resource,
    Unknown,
    as_port,
    normalize,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import unknown_checking_proxy

from tests.guard_harness import UNKNOWN_WIRE

POLICIES = Path(__file__).resolve().parent.parent / "policies"
CORPUS = Path(__file__).resolve().parent / "guard_corpus"


def res(type_: str, name: str, props: dict[str, Any], ns: str = "ns") -> Resource:
    props = {"metadata": {"name": name, "namespace": ns}, **props}
    return Resource(type_, name, f"urn:t::{type_}::{name}", normalize(props))


def pods(labels: dict[str, str], name: str = "app", ns: str = "ns") -> Resource:
    return res(
        "kubernetes:apps/v1:Deployment",
        name,
        {
            "spec": {
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {"name": "c", "ports": [{"name": "web", "containerPort": 8080.0}]}
                        ]
                    },
                }
            }
        },
        ns,
    )


def policy(name: str, spec: dict[str, Any], ns: str = "ns") -> Resource:
    return res("kubernetes:networking.k8s.io/v1:NetworkPolicy", name, {"spec": spec}, ns)


def view(resources: list[Resource], port: int | str = 8080) -> kube.View:
    notes: list[Any] = []
    cluster = kube.build(resources, lambda *a: notes.append(a), lambda *a: notes.append(a))
    assert notes == []
    return cluster.view(cluster.pods[0], port)


APP = {"app": "a", "tier": "web"}
BLOCK = {"from": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.128/25"]}}]}


@pytest.mark.parametrize(
    ("selector", "selected"),
    [
        ({}, True),
        ({"matchLabels": {"app": "a"}}, True),
        ({"matchLabels": {"app": "b"}}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "x"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, False),
        (
            {
                "matchLabels": {"app": "a"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}],
            },
            False,
        ),
    ],
)
def test_pod_selector_semantics(selector: dict[str, Any], selected: bool) -> None:
    v = view([pods(APP), policy("p", {"podSelector": selector, "ingress": [BLOCK]})])
    assert v.isolated is selected
    assert v.ipblock_restricted is selected


def test_except_and_port_matching_by_number_name_and_range() -> None:
    by_name = {**BLOCK, "ports": [{"port": "web"}]}
    v = view([pods(APP), policy("p", {"podSelector": {}, "ingress": [by_name]})])
    assert v.admits(ipaddress.ip_address("10.0.0.5"))
    assert not v.admits(ipaddress.ip_address("10.0.0.200"))  # in the except
    ranged = {**BLOCK, "ports": [{"port": 8000.0, "endPort": 8100.0}]}
    assert view(
        [pods(APP), policy("p", {"podSelector": {}, "ingress": [ranged]})]
    ).ipblock_restricted
    other = {**BLOCK, "ports": [{"port": 9090.0}]}
    v = view([pods(APP), policy("p", {"podSelector": {}, "ingress": [other]})])
    assert (
        v.isolated and not v.ipblock_restricted and not v.admits(ipaddress.ip_address("10.0.0.5"))
    )


def test_policy_types_namespaces_and_additive_policies() -> None:
    egress_only = {"podSelector": {}, "policyTypes": ["Egress"], "ingress": [BLOCK]}
    assert not view([pods(APP), policy("p", egress_only)]).isolated
    elsewhere = policy("p", {"podSelector": {}, "ingress": [BLOCK]}, ns="other")
    assert not view([pods(APP), elsewhere]).isolated
    restricted = policy("p", {"podSelector": {}, "ingress": [BLOCK]})
    open_rule = policy("q", {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{}]})
    v = view([pods(APP), restricted, open_rule])
    assert v.isolated and v.open_all and not v.ipblock_restricted
    selector_peer = policy("q", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})
    v = view([pods(APP), selector_peer])
    assert v.isolated and v.selector_peers and not v.ipblock_restricted


def test_world_open_block_is_no_restriction_but_with_except_it_is() -> None:
    world = {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}
    assert not view(
        [pods(APP), policy("p", {"podSelector": {}, "ingress": [world]})]
    ).ipblock_restricted
    world_except = {"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}
    assert view(
        [pods(APP), policy("p", {"podSelector": {}, "ingress": [world_except]})]
    ).ipblock_restricted


def test_services_without_workloads_use_their_selector_as_the_pods_labels() -> None:
    svc = res(
        "kubernetes:core/v1:Service",
        "s",
        {"spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80.0}]}},
    )
    pol = policy("p", {"podSelector": {"matchLabels": {"app": "x"}}, "ingress": [BLOCK]})
    found = verdicts.judge([svc, pol])
    assert [f.policy for f in found] == ["client-address-kept-by-kube-proxy"]
    assert "(no workload in the stack)" in found[0].message


# -- the adapter: pulumi-policy's public API, never its sentinels ---------------------------


def proxied(props: dict[str, Any]) -> Any:
    """Props as pulumi-policy hands them to a policy (deserialized, unknown-checking)."""
    return unknown_checking_proxy(deserialize_properties(props))


def test_adapter_reads_unknowns_assets_and_secrets_through_the_public_api() -> None:
    wire = {
        "spec": {"externalTrafficPolicy": UNKNOWN_WIRE, "ports": [{"port": 80.0}, UNKNOWN_WIRE]},
        "source": {
            "4dabf18193072939515e22adb298388d": "c44067f5952c0a294b673a41bacd8c17",
            "text": "cfg",
        },
        "connection": {
            "4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270",
            "value": {"host": "10.0.0.1"},
        },
    }
    plain = keepsource_pack.plain(proxied(wire))
    assert plain["spec"]["externalTrafficPolicy"] == Unknown("spec.externalTrafficPolicy", "string")
    assert plain["spec"]["ports"][1] == Unknown("spec.ports[1]", "string")
    assert plain["source"] == Asset(text="cfg")
    assert plain["connection"] == {"host": "10.0.0.1"}


def test_the_pack_never_reads_pulumi_policys_private_sentinels() -> None:
    sentinel = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    for path in POLICIES.glob("*.py"):
        text = path.read_text()
        assert not sentinel.search(text), path
        assert "_DictProxy" not in text and "__target" not in text, path


# -- robustness: every leaf of real stacks replaced by junk -----------------------------------


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))
    else:
        yield path


def _replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(obj)
    cur = out
    for key in path[:-1]:
        cur = cur[key]
    cur[path[-1]] = value
    return out


JUNK = [None, 1.5, "", "not a cidr/99", ["x"], {"k": "v"}, True, Unknown("x")]


DEEP = [
    "01-haproxy-seed-stdin-fail",
    "56-incluster-haproxy-configmap-fail",
    "31-lb-pair-one-check-source-missing-fail",
]
SHALLOW = [p.stem for p in sorted(CORPUS.glob("*.yaml")) if p.stem not in DEEP]


@pytest.mark.parametrize(
    ("case", "junk"),
    [(c, JUNK) for c in DEEP] + [(c, [None, ["x"]]) for c in SHALLOW],
    ids=[*DEEP, *SHALLOW],
)
def test_no_value_makes_the_guard_raise(case: str, junk: list[Any]) -> None:
    """Every leaf of a corpus stack, one at a time, replaced by a wrong value:
    the guard returns findings, never raises (three stacks with every kind of
    junk, the others with two)."""
    data = yaml.safe_load((CORPUS / f"{case}.yaml").read_text())
    raw: list[dict[str, Any]] = []
    for inc in data.get("include") or []:
        raw += yaml.safe_load((CORPUS / "_base" / inc).read_text())
    raw += data["resources"]
    checked = 0
    for i, item in enumerate(raw):
        for leaf in _leaves(item["props"]):
            for value in junk:
                resources = [
                    Resource(r["type"], r["name"], f"urn:t::{r['name']}", normalize(r["props"]))
                    for r in raw
                ]
                broken = _replace(raw[i]["props"], leaf, value)
                resources[i] = Resource(
                    item["type"], item["name"], f"urn:t::{item['name']}", normalize(broken)
                )
                found = verdicts.judge(resources)
                assert all(isinstance(f, Finding) for f in found)
                checked += 1
    assert checked > 20


def test_the_benchmarks_stacks_are_judged_path_by_path() -> None:
    """bench/guard_scale.py's synthetic apps pass, and each one's path is really
    judged: move the LB checks' source and every app fails on its own."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_guard_scale", POLICIES.parent / "bench" / "guard_scale.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    synthetic = bench.synthetic

    def judged(bindto: str) -> list[Finding]:
        resources = []
        for r in synthetic(20):
            props = dict(r.props)
            if "create" in props:
                props["create"] = props["create"].replace("bindto 172.16.0.254", f"bindto {bindto}")
            resources.append(Resource(r.type, r.name, r.urn, normalize(props)))
        return verdicts.judge(resources)

    assert judged("172.16.0.254") == []
    moved = judged("172.16.0.253")
    assert [f.policy for f in moved] == ["lb-health-checks-admitted"] * 20
    assert len({f.urn for f in moved}) == 20


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (float("nan"), "is not a number (NaN)"),
        (float("inf"), "is infinite"),
        (-float("inf"), "is infinite"),
        (1e308, "is out of the port range"),
        (65536.0, "is out of the port range"),
        (0.0, "is out of the port range"),
        (80.5, "is not a whole port number"),
        ("NaN", "is neither a port number"),
        ("Infinity", "is neither a port number"),
        ("1.0e308", "is neither a port number"),
        ("http--alt", "is neither a port number"),
        ("a-very-long-port-name", "is neither a port number"),
        ("", "is neither a port number"),
        (True, "is not a port"),
    ],
)
def test_ports_that_are_no_ports_are_named(value: Any, reason: str) -> None:
    with pytest.raises(Malformed, match=re.escape(reason)) as err:
        as_port(value, "spec.ports[0].port")
    assert err.value.field == "spec.ports[0].port"


def test_valid_ports_and_port_names() -> None:
    assert [as_port(v, "f") for v in (80.0, 65535, "8080", "http", "h2c-1")] == [
        80,
        65535,
        8080,
        "http",
        "h2c-1",
    ]


def test_router_messages_say_once_that_the_connection_ends() -> None:
    for case in ("48-ingress-fail.yaml", "51-gateway-httproute-fail.yaml"):
        spec = yaml.safe_load((CORPUS / case).read_text())
        raw = []
        for inc in spec.get("include") or []:
            raw += yaml.safe_load((CORPUS / "_base" / inc).read_text())
        raw += spec["resources"]
        found = verdicts.judge(
            [
                Resource(r["type"], r["name"], f"urn:x::{r['name']}", normalize(r["props"]))
                for r in raw
            ]
        )
        assert [f.policy for f in found] == ["no-terminating-proxy-before-ipblock"]
        assert found[0].message.count("ends the client") == 1, found[0].message


def test_a_fault_of_the_guard_is_reported_not_raised() -> None:
    args = type("Args", (), {"resources": []})()

    def boom(_: Any) -> verdicts.Stack:
        raise RuntimeError("model bug")

    found = keepsource_pack._PerRequest(build=boom).findings(MALFORMED, args)  # type: ignore[arg-type]
    assert [(f.policy, f.level) for f in found] == [(MALFORMED, "violation")]
    assert "RuntimeError: model bug" in found[0].message
    assert "no path was checked" in found[0].message

    def unreadable(resources: Any) -> verdicts.Stack:
        """A model one verdict trips over: only that policy says so."""
        s = verdicts.model(resources)
        s.model.paths = None  # type: ignore[assignment]
        return s

    request = keepsource_pack._PerRequest(build=unreadable)
    found = request.findings(TERMINATING, args)  # type: ignore[arg-type]
    assert [(f.policy, f.level) for f in found] == [(TERMINATING, "violation")]
    assert f"the policy {TERMINATING} was not checked" in found[0].message
    assert request.findings(WORLD, args) == []  # type: ignore[arg-type]
