"""The settings model: seed values, cross-field rules, one error naming every bad key."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from keepsource.settings import ConfigError, json_schema, parse
from keepsource.stackfile import PROJECT_ROOT, load, load_config
from tests.conftest import ALL_STACKS, dev_config

Mutation = Callable[[dict[str, Any]], None]


def test_every_stack_parses() -> None:
    assert {"dev", "lab3"} <= set(ALL_STACKS)
    for stack in ALL_STACKS:
        assert load(stack).workers


def test_dev_stack_holds_the_seed_lab() -> None:
    s = load("dev")
    assert str(s.network.vip) == "192.168.0.1"
    assert str(s.network.lb_internal_address) == "172.16.0.254"
    assert str(s.apiserver.address) == "172.16.0.1" and s.apiserver.port == 6443
    assert [(w.name, str(w.address)) for w in s.workers] == [
        ("worker01", "172.16.0.11"),
        ("worker02", "172.16.0.12"),
    ]
    assert [str(c) for c in s.allowed_clients] == ["192.168.0.10/32"]
    assert s.node_port == 30080
    assert (s.workload.namespace, s.workload.name, s.workload.replicas) == ("my-ns", "nginx", 1)
    # The seed values are written out, not left to defaults.
    raw = load_config("dev")
    assert raw["keepsource:nodePort"] == 30080 and raw["keepsource:apiserver"]["port"] == 6443


def test_second_stack_has_another_plan_and_three_workers() -> None:
    dev, other = load("dev"), load("lab3")
    assert len(other.workers) == 3
    assert not dev.network.external_subnet.overlaps(other.network.external_subnet)
    assert other.node_port != dev.node_port


def _set(path: str, value: Any) -> Mutation:
    def mutate(cfg: dict[str, Any]) -> None:
        keys = path.split(".")
        node: Any = cfg
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _del(path: str) -> Mutation:
    def mutate(cfg: dict[str, Any]) -> None:
        keys = path.split(".")
        node: Any = cfg
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        del node[keys[-1]]

    return mutate


def _dup_worker(cfg: dict[str, Any]) -> None:
    cfg["keepsource:workers"].append(dict(cfg["keepsource:workers"][0]))


# (case id, mutation, the key the error must name, a word of the reason)
BAD: list[tuple[str, Mutation, str, str]] = [
    ("malformed-vip", _set("keepsource:network.vip", "192.168.0.300"), "keepsource:network.vip", "IPv4"),
    ("vip-outside-subnet", _set("keepsource:network.vip", "10.0.0.1"), "keepsource:network.vip", "outside"),
    ("malformed-subnet", _set("keepsource:network.internalSubnet", "172.16.0.1/24"), "keepsource:network.internalSubnet", "IPv4 network"),
    ("overlapping-subnets", _set("keepsource:network.internalSubnet", "192.168.0.0/25"), "keepsource:network.internalSubnet", "overlaps"),
    ("lb-internal-outside", _set("keepsource:network.lbInternalAddress", "172.17.0.254"), "keepsource:network.lbInternalAddress", "outside"),
    ("master-outside", _set("keepsource:apiserver.address", "192.168.0.5"), "keepsource:apiserver.address", "outside"),
    ("worker-outside", _set("keepsource:workers.1.address", "10.9.9.9"), "keepsource:workers[1].address", "outside"),
    ("duplicate-worker", _dup_worker, "keepsource:workers[2].name", "duplicate"),
    ("duplicate-address", _set("keepsource:workers.1.address", "172.16.0.1"), "keepsource:workers[1].address", "duplicate"),
    ("no-workers", _set("keepsource:workers", []), "keepsource:workers", "at least 1"),
    ("nodeport-29999", _set("keepsource:nodePort", 29999), "keepsource:nodePort", "30000"),
    ("nodeport-32768", _set("keepsource:nodePort", 32768), "keepsource:nodePort", "32767"),
    ("apiserver-port-0", _set("keepsource:apiserver.port", 0), "keepsource:apiserver.port", "1"),
    ("world-open-v4", _set("keepsource:allowedClients", ["0.0.0.0/0"]), "keepsource:allowedClients[0]", "world"),
    ("world-open-v6", _set("keepsource:allowedClients", ["::/0"]), "keepsource:allowedClients[0]", "IPv4"),
    ("unknown-top-key", _set("keepsource:vipp", "192.168.0.1"), "keepsource:vipp", "unknown key"),
    ("unknown-nested-key", _set("keepsource:network.vipAddress", "192.168.0.1"), "keepsource:network.vipAddress", "unknown key"),
    ("missing-key", _del("keepsource:network.vip"), "keepsource:network.vip", "missing"),
    ("missing-section", _del("keepsource:workload"), "keepsource:workload", "missing"),
    ("image-latest", _set("keepsource:workload.image", "nginx:latest"), "keepsource:workload.image", "pin"),
    ("image-untagged", _set("keepsource:workload.image", "nginx"), "keepsource:workload.image", "pin"),
    ("bad-namespace", _set("keepsource:workload.namespace", "My_NS"), "keepsource:workload.namespace", "DNS label"),
    ("negative-replicas", _set("keepsource:workload.replicas", -1), "keepsource:workload.replicas", "0"),
    ("bad-jump-host", _set("keepsource:lb.ssh.jumpHost", "bastion"), "keepsource:lb.ssh.jumpHost", "user@host"),
    ("plain-private-key", _set("keepsource:lbPrivateKey", "-----BEGIN OPENSSH PRIVATE KEY-----"), "keepsource:lbPrivateKey", "--secret"),
    ("client-inside-internal", _set("keepsource:allowedClients", ["172.16.0.0/28"]), "keepsource:allowedClients[0]", "internalSubnet"),
    ("bad-timing", _set("keepsource:healthCheck.connectTimeout", 0), "keepsource:healthCheck.connectTimeout", "greater than 0"),
    ("denied-client-admitted", _set("keepsource:verify.deniedClient.address", "192.168.0.10"), "keepsource:verify.deniedClient.address", "admitted"),
]  # fmt: skip


@pytest.mark.parametrize("case,mutate,key,reason", BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_the_key(case: str, mutate: Mutation, key: str, reason: str) -> None:
    cfg = dev_config()
    mutate(cfg)
    with pytest.raises(ConfigError) as caught:
        parse(cfg)
    faults = caught.value.faults
    assert any(f.key == key and reason in f.reason for f in faults), faults
    assert key in str(caught.value)


def test_at_least_fifteen_bad_cases() -> None:
    assert len(BAD) >= 15


def test_one_error_lists_every_fault() -> None:
    cfg = dev_config()
    cfg["keepsource:nodePort"] = 1
    cfg["keepsource:network"]["vip"] = "nope"
    cfg["keepsource:extra"] = True
    with pytest.raises(ConfigError) as caught:
        parse(cfg)
    keys = {f.key for f in caught.value.faults}
    assert {"keepsource:nodePort", "keepsource:network.vip", "keepsource:extra"} <= keys


def test_cross_field_faults_are_all_listed() -> None:
    cfg = dev_config()
    cfg["keepsource:network"]["vip"] = "10.0.0.1"
    cfg["keepsource:workers"][0]["address"] = "10.0.0.2"
    with pytest.raises(ConfigError) as caught:
        parse(cfg)
    keys = {f.key for f in caught.value.faults}
    assert keys == {"keepsource:network.vip", "keepsource:workers[0].address"}


def test_private_key_accepted_only_as_secret() -> None:
    cfg = dev_config()
    cfg["keepsource:lbPrivateKey"] = {"secure": "v1:abc"}
    assert parse(cfg).lb.ssh.host
    cfg["keepsource:lbPrivateKey"] = "plain"
    assert parse(cfg, secret_keys=["keepsource:lbPrivateKey"]).lb.ssh.host


def test_pulumi_strings_are_decoded() -> None:
    """The engine hands every value over as a string (objects as JSON)."""
    cfg = {k: v if isinstance(v, str) else json.dumps(v) for k, v in dev_config().items()}
    assert parse(cfg) == load("dev")


def test_other_namespaces_are_left_alone() -> None:
    cfg = dev_config()
    cfg["kubernetes:context"] = "x"
    assert parse(cfg) == load("dev")


def test_committed_json_schema_is_in_sync() -> None:
    committed = json.loads((PROJECT_ROOT / "schema" / "stack-config.schema.json").read_text())
    assert committed == json_schema(), (
        "run: python -m keepsource schema > schema/stack-config.schema.json"
    )


def test_json_schema_accepts_every_stack_and_rejects_an_unknown_key() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema comes with check-jsonschema")
    import yaml

    schema = json_schema()
    for stack in ALL_STACKS:
        doc = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())
        jsonschema.validate(doc, schema)
    bad = {"config": {**load_config("dev"), "keepsource:vipp": 1}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
