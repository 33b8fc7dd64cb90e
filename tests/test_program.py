"""The whole Pulumi program under the SDK's mocks, for every stack file.

Every assertion runs on values collected after the program returned.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pulumi
import pytest
import yaml

import mockrun
from keepsource.artifacts import artifacts
from keepsource.render.keepalived import render_keepalived
from keepsource.render.scripts import steps
from keepsource.settings import ConfigError
from keepsource.stackfile import load, load_config
from tests.conftest import ALL_STACKS, dev_config

LB = "keepsource:lb:LoadBalancerHost"
WORKLOAD = "keepsource:k8s:Workload"
CMD = "command:remote:Command"
K8S = {
    "kubernetes:core/v1:Namespace",
    "kubernetes:apps/v1:Deployment",
    "kubernetes:core/v1:Service",
    "kubernetes:networking.k8s.io/v1:NetworkPolicy",
}
ORDER = ["packages", "gateway", "keepalived-config", "cutover"]


def _ints(value: Any) -> Any:
    """Numbers cross the wire as floats: compare them as the renderer wrote them."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def _commands(run: mockrun.Run) -> dict[str, mockrun.Registered]:
    return {r.name.removeprefix("lb-"): r for r in run.of_type(CMD)}


@pytest.fixture(scope="module", params=ALL_STACKS)
def stack_run(request: pytest.FixtureRequest) -> tuple[str, mockrun.Run]:
    return request.param, mockrun.run_stack(request.param)


def test_resource_types_and_parents(stack_run: tuple[str, mockrun.Run]) -> None:
    _, run = stack_run
    types = sorted(r.type for r in run.resources)
    assert types.count(CMD) == len(ORDER)
    assert {LB, WORKLOAD, "pulumi:providers:kubernetes"} | K8S <= set(types)
    lb, wl = run.one(LB), run.one(WORKLOAD)
    assert lb.parent == run.stack_urn and wl.parent == run.stack_urn
    for r in run.of_type(CMD):
        assert r.parent == lb.urn
    provider = run.one("pulumi:providers:kubernetes")
    assert provider.parent == wl.urn
    for r in run.resources:
        if r.type in K8S:
            assert r.parent == wl.urn
            assert r.provider.startswith(provider.urn + "::"), r.provider


def test_component_outputs_are_registered(stack_run: tuple[str, mockrun.Run]) -> None:
    stack, run = stack_run
    s = load(stack)
    lb = run.one(LB)
    assert lb.outputs["forwardingMethod"] == "NAT"
    assert lb.outputs["preservesClientAddress"] is True
    assert lb.outputs["healthCheckSource"] == str(s.network.lb_internal_address)
    assert lb.outputs["commands"] == ORDER
    wl = run.one(WORKLOAD)
    assert _ints(wl.outputs["nodePort"]) == s.node_port


def test_command_order(stack_run: tuple[str, mockrun.Run]) -> None:
    _, run = stack_run
    cmds = _commands(run)
    assert set(cmds) == set(ORDER)
    urn = {name: r.urn for name, r in cmds.items()}

    def deps(name: str) -> set[str]:
        return {u for u in cmds[name].dependencies if u in urn.values()}

    assert deps("packages") == set()
    assert deps("gateway") == {urn["packages"]}
    assert deps("keepalived-config") == {urn["packages"]}
    assert deps("cutover") == {urn["keepalived-config"], urn["gateway"]}
    # The config waits for the Service whose nodePort it uses; the host steps
    # wait for nothing of Kubernetes.
    k8s = {r.urn for r in run.resources if r.type in K8S}
    if k8s:
        service = run.one("kubernetes:core/v1:Service")
        assert service.urn in cmds["keepalived-config"].dependencies
    for name in ("packages", "gateway"):
        assert not set(cmds[name].dependencies) & k8s


def test_commands_carry_the_rendered_steps(stack_run: tuple[str, mockrun.Run]) -> None:
    stack, run = stack_run
    s = load(stack)
    cmds = _commands(run)
    conf = render_keepalived(s, s.node_port)
    for step in steps(s, s.node_port):
        r = cmds[step.name]
        assert r.inputs["create"] == step.command(s.lb.ssh.user)
        assert r.inputs["update"] == r.inputs["create"]
        stdin = conf if step.stdin_artifact else None
        assert r.inputs.get("stdin") == stdin
        assert r.inputs["triggers"] == [step.digest(stdin)]
        assert r.inputs["logging"] == "none"
        sudo = r.inputs["create"].startswith("sudo -n ")
        assert sudo == (s.lb.ssh.user != "root")


def test_exports(stack_run: tuple[str, mockrun.Run]) -> None:
    stack, run = stack_run
    s = load(stack)
    assert run.exports["vipUrl"] == f"http://{s.network.vip}:{s.node_port}/"
    assert run.exports["keepalivedConf"] == render_keepalived(s, s.node_port)
    assert run.exports["admittedSources"] == [str(c) for c in s.allowed_clients] + [
        f"{s.network.lb_internal_address}/32"
    ]
    services = _ints(run.exports["virtualServices"])
    assert [(v["vip"], v["port"]) for v in services] == [
        (str(s.network.vip), s.apiserver.port),
        (str(s.network.vip), s.node_port),
    ]
    assert [rs["address"] for rs in services[1]["realServers"]] == s.worker_addresses


def test_workload_declares_what_render_writes(stack_run: tuple[str, mockrun.Run]) -> None:
    stack, run = stack_run
    written = list(yaml.safe_load_all(artifacts(load(stack))["manifests.yaml"]))
    declared = {}
    for r in run.resources:
        if r.type in K8S:
            obj = {k: _ints(r.inputs[k]) for k in ("apiVersion", "kind", "metadata", "spec")
                   if k in r.inputs}  # fmt: skip
            declared[obj["kind"]] = obj
    for obj in written:
        assert declared[obj["kind"]] == obj


def _trigger_map(run: mockrun.Run) -> dict[str, Any]:
    return {name: r.inputs["triggers"] for name, r in _commands(run).items()}


def test_worker_change_reruns_only_the_config_step() -> None:
    base = mockrun.run_program(dev_config())
    cfg = dev_config()
    cfg["keepsource:workers"][1]["address"] = "172.16.0.13"
    changed = mockrun.run_program(cfg)
    assert "172.16.0.13" in changed.exports["keepalivedConf"]
    assert "172.16.0.13" not in base.exports["keepalivedConf"]
    before, after = _trigger_map(base), _trigger_map(changed)
    assert {n for n in ORDER if before[n] != after[n]} == {"keepalived-config", "cutover"}


def test_lb_follows_the_services_node_port_output() -> None:
    """The cluster's nodePort (not the config's) reaches keepalived.conf."""
    base = mockrun.run_program(dev_config())
    moved = mockrun.run_program(dev_config(), allocated_node_port=31999)
    assert "192.168.0.1:31999/tcp" in moved.exports["keepalivedConf"]
    assert "real_server 172.16.0.11 31999 {" in moved.exports["keepalivedConf"]
    cutover = _commands(moved)["cutover"].inputs["create"]
    assert "--dport 31999 -j MARK" in cutover and "--dport 30080 " not in cutover
    before, after = _trigger_map(base), _trigger_map(moved)
    assert {n for n in ORDER if before[n] != after[n]} == {"keepalived-config", "cutover"}


def test_internal_subnet_change_reruns_the_gateway_step() -> None:
    base = mockrun.run_program(dev_config())
    cfg = dev_config()
    cfg["keepsource:network"]["internalSubnet"] = "172.16.0.0/23"
    changed = mockrun.run_program(cfg)
    before, after = _trigger_map(base), _trigger_map(changed)
    assert {n for n in ORDER if before[n] != after[n]} == {"gateway"}


def test_policy_admits_the_lbs_check_source() -> None:
    run = mockrun.run_program(dev_config())
    lb = run.one(LB)
    policy = run.one("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    cidrs = [p["ipBlock"]["cidr"] for p in policy.inputs["spec"]["ingress"][0]["from"]]
    assert f"{lb.outputs['healthCheckSource']}/32" in cidrs


def test_private_key_stays_secret() -> None:
    marker = "PRIVATEKEYMARKER-0123456789"
    key = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{marker}\n-----END OPENSSH PRIVATE KEY-----\n"
    cfg = dev_config()
    cfg["keepsource:lbPrivateKey"] = key
    run = mockrun.run_program(cfg, secret_keys=["keepsource:lbPrivateKey"])
    for r in run.resources:
        for name, value in r.wire.items():
            text = json.dumps(value)
            if r.type == CMD and name == "connection":
                # Wrapped as a secret on the wire, and only there.
                assert marker in text
                assert "4dabf18193072939515e22adb298388d" in value
                continue
            assert marker not in text, (r.name, name)
        assert marker not in json.dumps(r.outputs, default=str)
    for r in run.of_type(CMD):
        assert r.inputs["logging"] == "none"
        assert marker not in r.inputs["create"]
        assert "environment" not in r.inputs
        assert r.inputs["connection"]["value"]["privateKey"] == key
    assert marker not in json.dumps(run.exports, default=str)


def test_config_errors_reach_the_cli_as_plain_messages() -> None:
    cfg = dev_config()
    cfg["keepsource:nodePort"] = 1
    with pytest.raises(pulumi.RunError, match=r"keepsource:nodePort: .*30000"):
        mockrun.run_program(cfg)


def test_plain_private_key_is_refused_before_any_resource() -> None:
    cfg = dev_config()
    cfg["keepsource:lbPrivateKey"] = "plain text key"
    with pytest.raises(ConfigError, match="keepsource:lbPrivateKey"):
        mockrun.run_program(cfg)


@pytest.mark.parametrize(
    "key,value",
    [
        ("keepsource:nodePort", 29999),
        ("keepsource:typo", 1),
        ("keepsource:allowedClients", ["0.0.0.0/0"]),
    ],
)
def test_bad_config_declares_nothing(key: str, value: Any) -> None:
    cfg = copy.deepcopy(load_config("dev"))
    cfg[key] = value
    recorded: list[mockrun.Run] = []
    with pytest.raises(ConfigError) as caught:
        recorded.append(mockrun.run_program(cfg))
    assert key in str(caught.value)
    assert recorded == []
    # And nothing was registered on the way: run a good program right after and
    # compare counts, so a half-declared stack would show up.
    assert len(mockrun.run_program(dev_config()).resources) == 7 + len(ORDER)


def test_preview_keeps_the_policy_facts_known() -> None:
    run = mockrun.run_program(dev_config(), preview=True)
    lb = run.one(LB)
    for key in ("forwardingMethod", "preservesClientAddress", "healthCheckSource"):
        assert lb.inputs[key] is not None
