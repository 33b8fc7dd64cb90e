"""The whole Pulumi program under the SDK's mocks, for every stack file.

Every assertion runs on values collected after the program returned.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.output import Unknown
from pulumi.runtime import rpc

import mockrun
from keepsource.artifacts import artifacts
from keepsource.host import lb_host
from keepsource.render import kube
from keepsource.settings import ConfigError
from keepsource.stackfile import PROJECT_ROOT, load, load_config
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
ORDER = ["gateway", "packages", "keepalived-config", "cutover"]


def _ints(value: Any) -> Any:
    """Numbers cross the wire as floats: compare them as the renderer wrote them."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def _commands(run: mockrun.Run, lb: str = "lb") -> dict[str, mockrun.Registered]:
    """One LB host's commands by step name."""
    return {
        r.name.removeprefix(f"{lb}-"): r for r in run.of_type(CMD) if r.name.startswith(f"{lb}-")
    }


def run_cutovers(run: mockrun.Run) -> list[str]:
    """Every LB host's cut-over command (a pair's second waits for the first)."""
    return [r.urn for r in run.of_type(CMD) if r.name.endswith("-cutover")]


def _lbs(run: mockrun.Run) -> dict[str, mockrun.Registered]:
    return {r.name: r for r in run.of_type(LB)}


@pytest.fixture(scope="module", params=ALL_STACKS)
def stack_run(request: pytest.FixtureRequest) -> tuple[str, mockrun.Run]:
    return request.param, mockrun.run_stack(request.param)


def test_resource_types_and_parents(stack_run: tuple[str, mockrun.Run]) -> None:
    stack, run = stack_run
    types = sorted(r.type for r in run.resources)
    s = load(stack)
    lbs = _lbs(run)
    assert sorted(lbs) == sorted(n.name for n in s.lb_nodes)
    assert types.count(CMD) == len(_order(s)) * len(lbs)
    for name, lb in lbs.items():
        assert lb.parent == run.stack_urn
        assert {r.parent for r in run.of_type(CMD) if r.name.startswith(f"{name}-")} == {lb.urn}
    if not load(stack).manages_workload:
        # LB only: no Kubernetes provider, no Kubernetes object.
        assert set(types) == {LB, CMD}
        return
    assert {LB, WORKLOAD, "pulumi:providers:kubernetes"} | K8S <= set(types)
    wl = run.one(WORKLOAD)
    assert wl.parent == run.stack_urn
    provider = run.one("pulumi:providers:kubernetes")
    assert provider.parent == wl.urn
    for r in run.resources:
        if r.type in K8S:
            assert r.parent == wl.urn
            assert r.provider.startswith(provider.urn + "::"), r.provider


def test_component_outputs_are_registered(stack_run: tuple[str, mockrun.Run]) -> None:
    stack, run = stack_run
    s = load(stack)
    lbs = _lbs(run)
    for node in s.lb_nodes:
        lb = lbs[node.name]
        assert lb.outputs["forwardingMethod"] == "NAT"
        assert lb.outputs["preservesClientAddress"] is True
        assert lb.outputs["healthCheckSource"] == str(node.check_source)
        assert lb.outputs["healthCheckSources"] == [str(n.check_source) for n in s.lb_nodes]
        assert lb.outputs["commands"] == _order(s)
    if not s.is_pair:
        own = s.network.check_address or s.network.lb_internal_address
        assert s.lb_nodes[0].check_source == own
    if s.manages_workload and s.services is None:
        wl = run.one(WORKLOAD)
        assert _ints(wl.outputs["nodePort"]) == s.node_port
    elif s.manages_workload:
        wl = run.one(WORKLOAD)
        assert wl.outputs["namespaces"] == kube.namespaces(s)
        assert set(wl.outputs["admittedSources"]) == {e.name for e in kube.managed(s)}


def test_command_order(stack_run: tuple[str, mockrun.Run]) -> None:
    stack, run = stack_run
    nodes = load(stack).lb_nodes
    for node in nodes:
        _one_lbs_order(stack, run, _commands(run, node.name))
        if load(stack).metrics is not None:  # after the gateway's filter chain and the packages
            cmds = _commands(run, node.name)
            got = {u for u in cmds["metrics"].dependencies if u.endswith(("-packages", "-gateway"))}
            assert got == {cmds["packages"].urn, cmds["gateway"].urn}
    if len(nodes) == 2:
        # The second host's cut-over waits for the first's (which held the VIPs).
        first, second = (_commands(run, n.name) for n in nodes)
        assert first["cutover"].urn in second["cutover"].dependencies
        assert second["cutover"].urn not in first["cutover"].dependencies


def _order(s: Any) -> list[str]:
    """The steps in order: the metrics step only with ``keepsource:metrics``."""
    return [*ORDER[:2], "metrics", *ORDER[2:]] if s.metrics is not None else ORDER


def _one_lbs_order(stack: str, run: mockrun.Run, cmds: dict[str, mockrun.Registered]) -> None:
    assert set(cmds) == set(_order(load(stack)))
    urn = {name: r.urn for name, r in cmds.items()}

    def deps(name: str) -> set[str]:
        return {u for u in cmds[name].dependencies if u in urn.values()}

    assert deps("gateway") == set()
    # With metrics the node exporter starts in the packages step: after the
    # gateway's filter chain that admits only the scrapers.
    want = {urn["gateway"]} if load(stack).metrics is not None else set()
    assert deps("packages") == want
    # A pair's keepalived.conf names the metrics step's VRRP notify script.
    config_after = {"packages", "metrics"} if load(stack).metrics is not None else {"packages"}
    assert deps("keepalived-config") == {urn[n] for n in config_after}
    assert deps("cutover") - set(run_cutovers(run)) == {urn["keepalived-config"], urn["gateway"]}
    k8s = {r.urn for r in run.resources if r.type in K8S}
    # Only the cut-over waits for Kubernetes: the Deployment, the Service and
    # the NetworkPolicy.
    for name in ("packages", "gateway", "keepalived-config"):
        assert not k8s & set(cmds[name].dependencies)
    # Every service's objects, when keepsource manages them.
    kinds = ("apps/v1:Deployment", "core/v1:Service", "networking.k8s.io/v1:NetworkPolicy")
    objs = [r for r in run.resources if r.type in {f"kubernetes:{k}" for k in kinds}]
    assert len(objs) == 3 * len(kube.managed(load(stack)))
    for r in objs:
        assert r.urn in cmds["cutover"].dependencies


def test_commands_carry_the_rendered_steps(stack_run: tuple[str, mockrun.Run]) -> None:
    stack, run = stack_run
    s = load(stack)
    for node in s.lb_nodes:
        cmds = _commands(run, node.name)
        conf = lb_host(s, node).keepalived_conf
        for step in lb_host(s, node).steps:
            r = cmds[step.name]
            assert r.inputs["create"] == step.command(node.ssh.user)
            assert r.inputs["update"] == r.inputs["create"]
            stdin = conf if step.stdin_artifact else None
            assert r.inputs.get("stdin") == stdin
            assert r.inputs["triggers"] == [step.digest(stdin)]
            assert r.inputs["logging"] == "none"
            sudo = r.inputs["create"].startswith("sudo -n ")
            assert sudo == (node.ssh.user != "root")


def test_exports(stack_run: tuple[str, mockrun.Run]) -> None:
    stack, run = stack_run
    s = load(stack)
    if s.services is None:
        assert run.exports["vipUrl"] == f"http://{s.network.vip}:{s.node_port}/"
    if s.is_pair:
        assert run.exports["keepalivedConf"] == {
            n.name: lb_host(s, n).keepalived_conf for n in s.lb_nodes
        }
    else:
        assert run.exports["keepalivedConf"] == lb_host(s).keepalived_conf
    checks = [f"{n.check_source}/32" for n in s.lb_nodes]
    services = _ints(run.exports["virtualServices"])
    if s.services is None:
        assert run.exports["admittedSources"] == [str(c) for c in s.allowed_clients or ()] + checks
        assert [(v["vip"], v["port"]) for v in services] == [
            (str(s.network.vip), s.apiserver.port),
            (str(s.network.vip), s.node_port),
        ]
        assert [rs["address"] for rs in services[1]["realServers"]] == s.worker_addresses
        return
    exported = run.exports["services"]
    assert set(exported) == {e.name for e in s.exposed}  # a map: no order on the wire
    for e in s.exposed:
        admitted = [str(c) for c in e.allowed_clients] + checks if e.workload else []
        assert exported[e.name]["admittedSources"] == admitted
    assert [(v["vip"], v["port"], v["protocol"]) for v in services] == [
        (str(s.network.vip), p.port, p.protocol) for e in s.exposed for p in e.ports
    ]


def test_workload_declares_what_render_writes(stack_run: tuple[str, mockrun.Run]) -> None:
    stack, run = stack_run
    written = list(yaml.safe_load_all(artifacts(load(stack))["manifests.yaml"]))
    if not load(stack).manages_workload:
        # LB only: nothing declared here; manifests.yaml is what the other tool applies.
        assert not [r for r in run.resources if r.type in K8S]
        assert [o["kind"] for o in written][:4] == [
            "Namespace",
            "Deployment",
            "Service",
            "NetworkPolicy",
        ]
        return
    declared = {}
    for r in run.resources:
        if r.type in K8S:
            obj = {k: _ints(r.inputs[k]) for k in ("apiVersion", "kind", "metadata", "spec")
                   if k in r.inputs}  # fmt: skip
            declared[(obj["kind"], obj["metadata"]["name"])] = obj
    assert len(declared) == len(written)
    for obj in written:
        assert declared[(obj["kind"], obj["metadata"]["name"])] == obj


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


def test_lb_reads_the_node_port_from_the_config_not_from_the_service() -> None:
    """The Service declares the config's nodePort (an API server gives it that
    port or refuses the Service), so the LB never waits for the Service: a
    cluster answer that differed would not reach keepalived.conf."""
    base = mockrun.run_program(dev_config())
    moved = mockrun.run_program(dev_config(), allocated_node_port=31999)
    assert moved.exports["keepalivedConf"] == base.exports["keepalivedConf"]
    assert "192.168.0.1:30080/tcp" in base.exports["keepalivedConf"]
    service = moved.one("kubernetes:core/v1:Service")
    assert [p["nodePort"] for p in service.inputs["spec"]["ports"]] == [30080]
    assert _trigger_map(base) == _trigger_map(moved)


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


def _appears_only_where(
    run: mockrun.Run, marker: str, allowed: Callable[[mockrun.Registered, str], bool]
) -> None:
    """``marker`` is in no resource input (but the allowed ones), no output, no export."""
    for r in run.resources:
        for name, value in r.wire.items():
            if not allowed(r, name):
                assert marker not in json.dumps(value), (r.name, name)
        assert marker not in json.dumps(r.outputs, default=str)
    assert marker not in json.dumps(run.exports, default=str)


def test_private_key_stays_secret() -> None:
    marker = "PRIVATEKEYMARKER-0123456789"
    key = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{marker}\n-----END OPENSSH PRIVATE KEY-----\n"
    cfg = dev_config()
    cfg["keepsource:lbPrivateKey"] = key
    run = mockrun.run_program(cfg, secret_keys=["keepsource:lbPrivateKey"])
    _appears_only_where(run, marker, lambda r, name: r.type == CMD and name == "connection")
    for r in run.of_type(CMD):
        # Wrapped as a secret on the wire, and only there.
        assert marker in json.dumps(r.wire["connection"])
        assert "4dabf18193072939515e22adb298388d" in r.wire["connection"]
        assert r.inputs["logging"] == "none"
        assert marker not in r.inputs["create"]
        assert "environment" not in r.inputs
        assert r.inputs["connection"]["value"]["privateKey"] == key


def test_an_encrypted_keys_password_stays_secret_beside_the_key() -> None:
    marker = "PASSPHRASEMARKER-0123456789"
    cfg = dev_config()
    cfg["keepsource:lbPrivateKey"] = "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"
    cfg["keepsource:lbPrivateKeyPassword"] = marker
    secret = ["keepsource:lbPrivateKey", "keepsource:lbPrivateKeyPassword"]
    run = mockrun.run_program(cfg, secret_keys=secret)
    _appears_only_where(run, marker, lambda r, name: r.type == CMD and name == "connection")
    for r in run.of_type(CMD):
        assert r.inputs["connection"]["value"]["privateKeyPassword"] == marker
        assert marker in json.dumps(r.wire["connection"])  # a secret on the wire


def test_without_a_key_the_agent_signs_and_no_key_is_sent() -> None:
    """No lbPrivateKey: the connection carries no key and no agent path (the
    provider reads SSH_AUTH_SOCK itself; a path of this machine kept out of
    the state); without an agent, `up` stops naming the key, a preview warns."""
    run = mockrun.run_program(dev_config())
    for r in run.of_type(CMD):
        conn = json.dumps(r.inputs["connection"])
        assert "privateKey" not in conn and "agentSocketPath" not in conn, conn
    with pytest.raises(ConfigError, match=r"keepsource:lbPrivateKey: not set, and .*SSH_AUTH_SOCK"):
        mockrun.run_program(dev_config(), agent=None)
    assert mockrun.last_registered() == []
    preview = mockrun.run_program(dev_config(), agent=None, preview=True)
    assert any("`pulumi up` will stop" in w for w in preview.warnings), preview.warnings


def test_a_password_without_a_key_or_in_plain_text_is_refused() -> None:
    cfg = dev_config()
    cfg["keepsource:lbPrivateKeyPassword"] = "pw"
    with pytest.raises(ConfigError, match="keepsource:lbPrivateKeyPassword: is stored in plain"):
        mockrun.run_program(cfg)
    with pytest.raises(ConfigError, match="lbPrivateKeyPassword: is set but there is no lbPriv"):
        mockrun.run_program(cfg, secret_keys=["keepsource:lbPrivateKeyPassword"])


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
        ("keepsorce:nodePort", 30081),
        ("keepsource:allowedClients", ["0.0.0.0/0"]),
        ("keepsource:workload", {"namespace": "kube-system", "image": "nginx:1.27.3"}),
        # As the engine hands them over: strings, objects as JSON.
        ("keepsource:nodePort", "9" * 5000),
        ("keepsource:healthCheck", "[" * 3000 + "]" * 3000),
        ("keepsource:apiserver", '{"address": "172.16.0.1", "address": "172.16.0.2"}'),
        ("keepsource:workers", '[{"name": "worker01\\n", "address": "172.16.0.11"}]'),
        ("keepsource:apiserver", '{"address": "172.16.0.1", "port": 22}'),
        # review of issue 8, as the engine hands them over
        ("keepsource:healthCheck", '{"delayLoop": 0.' + "9" * 5000 + "}"),
        ("kubernetes:context", "kubernetes-admin@kubernetes"),
        ("keepsource:lb", '{"ssh": {"host": "192.168.0.1", "user": "-oProxyCommand=x"}}'),
        (
            "keepsource:lb",
            '{"ssh": {"host": "::ffff:192.168.0.1", "port": 6443, "hostKey": "'
            + load_config("dev")["keepsource:lb"]["ssh"]["hostKey"]
            + '"}}',
        ),
    ],
)
def test_bad_config_declares_nothing(key: str, value: Any) -> None:
    cfg = copy.deepcopy(load_config("dev"))
    cfg[key] = value
    with pytest.raises(ConfigError) as caught:
        mockrun.run_program(cfg)
    # One plain message for the CLI (a RunError is printed without a traceback).
    assert isinstance(caught.value, pulumi.RunError)
    assert key in str(caught.value)
    # What the failed run registered (mockrun keeps it when the program raises).
    assert mockrun.last_registered() == []


def test_last_registered_sees_a_half_declared_program(tmp_path: Path) -> None:
    """The check above can fail: a program that raises after a resource shows it."""
    program = tmp_path / "half.py"
    program.write_text(
        "import pulumi\n"
        "pulumi.ComponentResource('keepsource:test:Half', 'half')\n"
        "raise pulumi.RunError('late')\n"
    )
    with pytest.raises(pulumi.RunError):
        mockrun.run_program(dev_config(), program=program)
    assert [r.type for r in mockrun.last_registered()] == ["keepsource:test:Half"]


def test_preview_with_an_unknown_service_keeps_every_lb_step_known() -> None:
    """At preview the cluster's answer is unknown: the LB's props, scripts and
    triggers are all plain values anyway (the component registers at once, so
    its commands need not wait for the Service), and the cut-over alone
    depends on the Workload's objects."""
    run = mockrun.run_program(dev_config(), preview=True, unknown_service_spec=True)
    assert isinstance(run.one(WORKLOAD).outputs["nodePort"], Unknown)  # the mocks made one
    lb = run.one(LB)
    assert not isinstance(lb.inputs["virtualServices"], Unknown)
    assert lb.inputs["forwardingMethod"] == "NAT"
    assert lb.inputs["preservesClientAddress"] is True
    assert lb.inputs["healthCheckSource"] == "172.16.0.250"  # the stack's checkAddress
    assert "192.168.0.1:30080/tcp" in run.exports["keepalivedConf"]
    cmds = _commands(run)
    assert set(cmds) == set(ORDER)
    known = _trigger_map(mockrun.run_program(dev_config()))
    for name in ORDER:
        assert cmds[name].inputs["triggers"] == known[name], name
    k8s = {r.urn for r in run.resources if r.type in K8S}
    waits = {n: bool(k8s & set(c.dependencies)) for n, c in cmds.items()}
    assert waits == {n: n == "cutover" for n in ORDER}
    # The NetworkPolicy does not wait for anything the cluster computes.
    policy = run.one("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    cidrs = [p["ipBlock"]["cidr"] for p in policy.inputs["spec"]["ingress"][0]["from"]]
    assert cidrs == ["192.168.0.10/32", "172.16.0.250/32"]  # not the gateway 172.16.0.254


def test_preview_mocks_leave_computed_outputs_unknown() -> None:
    """Command stdout is computed by the provider: unknown at preview, known after."""
    previewed = mockrun.run_program(dev_config(), preview=True)
    applied = mockrun.run_program(dev_config())
    assert not isinstance(previewed.exports["keepalivedConf"], Unknown)  # nodePort was given
    mock = mockrun._Mocks(preview=True)
    args = pulumi.runtime.MockResourceArgs(CMD, "x", {"create": "true"}, "", "", False)
    assert "stdout" not in mock.new_resource(args)[1]
    mock = mockrun._Mocks(preview=False)
    assert mock.new_resource(args)[1]["stdout"] == "x: stdout"
    assert applied.exports["keepalivedConf"] == previewed.exports["keepalivedConf"]


def test_no_deferred_output_and_no_cycle() -> None:
    """The LB never feeds the Workload: nothing of the Workload depends on the LB."""
    source = (PROJECT_ROOT / "__main__.py").read_text()
    assert "deferred_output" not in source
    run = mockrun.run_program(dev_config())
    lb_side = {r.urn for r in run.resources if r.type in (LB, CMD)}
    for r in run.resources:
        if r.type in K8S or r.type == WORKLOAD:
            assert not lb_side & set(r.dependencies), r.name
            assert not any(lb_side & set(v) for v in r.property_dependencies.values()), r.name


def _lb_only() -> dict[str, Any]:
    cfg = dev_config()
    cfg["keepsource:workload"]["managedBy"] = "external"
    del cfg["keepsource:kubernetes"]
    return cfg


def test_lb_only_mode_declares_no_kubernetes_and_uses_the_config() -> None:
    cfg = _lb_only()
    cfg["keepsource:nodePort"] = 31234
    run = mockrun.run_program(cfg)
    assert {r.type for r in run.resources} == {LB, CMD}
    assert not [r for r in run.resources if r.type.startswith(("kubernetes:", "pulumi:providers"))]
    assert "192.168.0.1:31234/tcp" in run.exports["keepalivedConf"]
    assert run.exports["admittedSources"] == ["192.168.0.10/32", "172.16.0.250/32"]
    assert run.exports["workloadManagedBy"] == "external"
    lb = run.one(LB)
    assert lb.outputs["healthCheckSource"] == "172.16.0.250"


def test_adoption_forces_server_side_apply_and_retains_every_object() -> None:
    run = mockrun.run_program(dev_config())
    provider = run.one("pulumi:providers:kubernetes")
    assert provider.inputs["upsertExistingObjects"] == "true"
    assert provider.inputs["enablePatchForce"] == "true"
    assert provider.inputs["enableServerSideApply"] == "true"
    objects = [r for r in run.resources if r.type in K8S]
    assert len(objects) == 4
    for r in objects:
        assert r.retain_on_delete is True, r.name
        assert r.protect is False, r.name
    # The LB's remote commands are not retained: they have no delete command.
    for r in run.of_type(CMD):
        assert r.retain_on_delete is False and "delete" not in r.inputs


def _secret_value(wire: Any) -> Any:
    assert wire[rpc._special_sig_key] == rpc._special_secret_sig
    return wire["value"]


def test_kubeconfig_contents_stay_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/home/someone/.kube/ambient")
    marker = "KUBETOKENMARKER-0123"
    contents = f"apiVersion: v1\nkind: Config\nusers:\n- name: a\n  user: {{token: {marker}}}\n"
    cfg = dev_config()
    cfg["keepsource:kubernetes"] = {"kubeconfig": contents, "context": "c1"}
    run = mockrun.run_program(cfg, secret_keys=["keepsource:kubernetes"])
    provider = run.one("pulumi:providers:kubernetes")
    assert _secret_value(provider.wire["kubeconfig"]) == contents
    _appears_only_where(run, marker, lambda r, name: r is provider and name == "kubeconfig")


def test_a_secret_kubernetes_block_keeps_its_context_secret() -> None:
    """`pulumi config set --secret --path keepsource:kubernetes.context X`: the
    engine marks the whole keepsource:kubernetes key secret (it has no
    per-path secretness), so the context reaches the provider as a secret,
    and nothing else carries it in plain text."""
    marker = "CTXMARKER-secret-context"
    cfg = dev_config()
    cfg["keepsource:kubernetes"] = {"context": marker}
    run = mockrun.run_program(cfg, secret_keys=["keepsource:kubernetes"])
    provider = run.one("pulumi:providers:kubernetes")
    assert _secret_value(provider.wire["context"]) == marker
    _appears_only_where(run, marker, lambda r, name: r is provider and name == "context")
    # Not set secret: the context stays a plain value (diffs stay readable).
    plain = mockrun.run_program(dev_config()).one("pulumi:providers:kubernetes")
    assert plain.wire["context"] == "kubernetes-admin@kubernetes"


def test_the_providers_own_namespace_keys_are_refused_before_any_resource() -> None:
    cfg = dev_config()
    cfg["kubernetes:context"] = "kubernetes-admin@kubernetes"
    with pytest.raises(ConfigError, match=r"kubernetes:context: has no effect"):
        mockrun.run_program(cfg)
    assert mockrun.last_registered() == []


def test_kubeconfig_path_is_kept_as_written_and_never_the_ambient_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/home/someone/.kube/ambient")
    lab3 = mockrun.run_stack("lab3")
    wire = lab3.one("pulumi:providers:kubernetes").wire["kubeconfig"]
    assert _secret_value(wire) == "~/.kube/lab3.yaml"
    dev = mockrun.run_stack("dev")
    assert _secret_value(dev.one("pulumi:providers:kubernetes").wire["kubeconfig"]) == (
        "~/.kube/config"
    )
    for run in (lab3, dev):
        assert "/home/someone" not in json.dumps([r.wire for r in run.resources])


def test_plain_kubeconfig_contents_are_refused_before_any_resource() -> None:
    cfg = dev_config()
    cfg["keepsource:kubernetes"] = {"kubeconfig": "apiVersion: v1\nclusters: []\n"}
    with pytest.raises(ConfigError, match=r"keepsource:kubernetes.kubeconfig"):
        mockrun.run_program(cfg)
    assert mockrun.last_registered() == []


def _connection(run: mockrun.Run) -> dict[str, Any]:
    conns: list[dict[str, Any]] = [r.inputs["connection"]["value"] for r in run.of_type(CMD)]
    assert all(c == conns[0] for c in conns)
    return conns[0]


def test_host_keys_are_pinned_for_the_lb_and_the_jump_host() -> None:
    dev, lab3 = load("dev"), load("lab3")
    conn = _connection(mockrun.run_stack("dev"))
    assert conn["hostKey"] == dev.lb_nodes[0].ssh.host_key and "proxy" not in conn
    conn = _connection(mockrun.run_stack("lab3"))
    assert conn["hostKey"] == lab3.lb_nodes[0].ssh.host_key
    assert conn["proxy"]["hostKey"] == lab3.lb_nodes[0].ssh.jump_host_key
    assert (conn["proxy"]["host"], conn["proxy"]["port"], conn["proxy"]["user"]) == (
        "bastion.example.internal",
        22,
        "ops",
    )


def test_the_local_stack_pins_the_key_from_the_lab_file(lab_host_key: Path) -> None:
    relative = load("local").lb_nodes[0].ssh.host_key_file
    assert relative is not None
    conn = _connection(mockrun.run_stack("local"))
    assert conn["hostKey"] == (lab_host_key / relative).read_text().strip()
    assert relative not in json.dumps(conn)


def test_a_missing_host_key_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"keepsource:lb.ssh.hostKeyFile: cannot read"):
        mockrun.run_stack("local", cwd=tmp_path)
    assert mockrun.last_registered() == []


def test_opting_out_of_pinning_is_loud() -> None:
    cfg = dev_config()
    del cfg["keepsource:lb"]["ssh"]["hostKey"]
    cfg["keepsource:lb"]["ssh"]["insecureAcceptAnyHostKey"] = True
    run = mockrun.run_program(cfg)
    assert "hostKey" not in _connection(run)
    assert any("NOT checked" in w for w in run.warnings), run.warnings
    assert mockrun.run_program(dev_config()).warnings == []


def test_a_stack_without_a_check_address_is_warned_at_preview() -> None:
    """The seed's way (no network.checkAddress) still runs; the operator is
    told, in the preview, that the NetworkPolicy admits the LB's own address."""
    cfg = dev_config()
    del cfg["keepsource:network"]["checkAddress"]
    run = mockrun.run_program(cfg, preview=True)
    assert any("network.checkAddress is not set" in w for w in run.warnings), run.warnings
    policy = run.one("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    cidrs = [p["ipBlock"]["cidr"] for p in policy.inputs["spec"]["ingress"][0]["from"]]
    assert cidrs == ["192.168.0.10/32", "172.16.0.254/32"]


def test_a_stack_moved_to_the_services_list_keeps_its_objects_by_alias() -> None:
    """The first workload service of a list carries aliases to the seed's
    resource names (and its namespace to the seed's namespace resource): a
    moved stack renames them in the state. The seed's layout has none; later
    services have none (one old name, one new resource)."""

    def renamed(run: mockrun.Run) -> dict[str, list[dict[str, Any]]]:
        """Aliases by name (the SDK adds its own by older API type)."""
        found = {
            r.name: [a for a in r.aliases if "name" in a.get("spec", {})] for r in run.resources
        }
        return {k: v for k, v in found.items() if v}

    assert renamed(mockrun.run_stack("local")) == {}
    aliased = renamed(mockrun.run_stack("local-services"))
    assert sorted(aliased) == [
        "workload-ns-my-ns",
        "workload-web-deployment",
        "workload-web-networkpolicy",
        "workload-web-service",
    ]
    spec = aliased["workload-web-deployment"][0]["spec"]
    assert spec["name"] == "workload-deployment", spec
    assert aliased["workload-ns-my-ns"][0]["spec"]["name"] == "workload-ns"
