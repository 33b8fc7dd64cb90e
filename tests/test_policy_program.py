"""The policy pack against the keepsource program itself, and as the CLI runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import keepsource_rules as rules
import pytest
import yaml
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

import mockrun
from keepsource.stackfile import PROJECT_ROOT, load
from tests.conftest import ALL_STACKS, dev_config

POLICIES = PROJECT_ROOT / "policies"
RULES = [rules.terminating_proxy, rules.client_address_lost, rules.health_checks_admitted]


def stack_facts(run: mockrun.Run) -> list[rules.Resource]:
    """A mocked run as the engine hands it to AnalyzeStack: a component's props are
    what it registered; a custom resource's are its (echoed) inputs."""
    return [rules.Resource(r.type, r.name, r.urn, {**r.inputs, **r.outputs}) for r in run.resources]


def findings(resources: list[rules.Resource]) -> list[rules.Finding]:
    found = [f for rule in RULES for f in rules.safe(rule, resources)]
    for res in resources:
        found += rules.safe(rules.world_open_ipblock, res)
    return found


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_every_stack_passes_the_pack(stack: str) -> None:
    resources = stack_facts(mockrun.run_stack(stack))
    # An LB-only stack (workload.managedBy: external) declares no Kubernetes object.
    k8s = {rules.SERVICE, rules.NETPOL} if load(stack).manages_workload else set()
    assert {r.type for r in resources} >= k8s | {rules.KEEPSOURCE_LB}
    assert findings(resources) == []


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_every_stack_passes_at_preview(stack: str) -> None:
    resources = stack_facts(mockrun.run_stack(stack, preview=True))
    assert findings(resources) == []


def test_the_rules_see_the_programs_relations() -> None:
    """Not a vacuous pass: the dev stack's Service is related to its policy and LB."""
    resources = stack_facts(mockrun.run_stack("dev"))
    guarded, _ = rules.guarded_services(resources)
    assert [(g.name, g.node_ports) for g in guarded] == [("nginx", [30080])]
    # Drop the LB's check source from the policy: rule 3 must now fire.
    for r in resources:
        if r.type == rules.NETPOL:
            blocks = r.props["spec"]["ingress"][0]["from"]
            r.props["spec"]["ingress"][0]["from"] = [
                b for b in blocks if b["ipBlock"]["cidr"] != "172.16.0.254/32"
            ]
    assert any(f.kind == "violation" for f in rules.health_checks_admitted(resources))


def test_dev_stack_with_haproxy_in_front_fails() -> None:
    program = PROJECT_ROOT / "tests" / "programs" / "with_haproxy.py"
    run = mockrun.run_program(dev_config(), program=program)
    found = findings(stack_facts(run))
    bad = [f for f in found if f.kind == "violation"]
    assert len(bad) == 1
    assert bad[0].urn is not None and bad[0].urn.endswith("::seed-haproxy")
    assert "mode tcp terminates too" in bad[0].message


# -- the pack as the Pulumi CLI starts it ---------------------------------------


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """`python -m pulumi.policy ENGINE_ADDRESS policies/`, exactly as the CLI runs a
    Python pack; it prints its gRPC port on stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pulumi.policy", "127.0.0.1:1", str(POLICIES)],
        cwd=POLICIES,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            proc.kill()
            pytest.fail(
                f"the pack did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
            )
        channel = grpc.insecure_channel(f"127.0.0.1:{line}")
        grpc.channel_ready_future(channel).result(timeout=20)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_pack_lists_its_policies(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=20)
    assert info.name == "keepsource-guard"
    levels = {p.name: p.enforcementLevel for p in info.policies}
    mandatory, advisory = analyzer_pb2.MANDATORY, analyzer_pb2.ADVISORY
    assert levels == {
        "no-terminating-proxy-before-ipblock": mandatory,
        "client-address-kept-by-kube-proxy": mandatory,
        "lb-health-checks-admitted": mandatory,
        "world-open-ipblock": advisory,
        "unknown-at-preview": advisory,
    }
    for p in info.policies:
        assert p.description


def _analyze(
    analyzer: analyzer_pb2_grpc.AnalyzerStub, resources: list[rules.Resource]
) -> list[Any]:
    request = analyzer_pb2.AnalyzeStackRequest(
        resources=[
            analyzer_pb2.AnalyzerResource(
                type=r.type,
                urn=r.urn,
                name=r.name,
                properties=_struct(json.loads(json.dumps(r.props))),
            )
            for r in resources
        ]
    )
    return list(analyzer.AnalyzeStack(request, timeout=30).diagnostics)


def test_pack_fails_the_seed_over_grpc(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    program = PROJECT_ROOT / "tests" / "programs" / "with_haproxy.py"
    resources = stack_facts(mockrun.run_program(dev_config(), program=program))
    # Strip secret-wrapped values: the CLI sends those as secrets, not as plain dicts.
    for r in resources:
        if r.type == rules.REMOTE_COMMAND:
            r.props.pop("connection", None)  # type: ignore[attr-defined]
    diags = _analyze(analyzer, resources)
    names = [d.policyName for d in diags]
    assert names == ["no-terminating-proxy-before-ipblock"], [
        (d.policyName, d.message) for d in diags
    ]
    assert diags[0].urn.endswith("::seed-haproxy")
    assert diags[0].policyPackName == "keepsource-guard"


def test_pack_passes_the_program_over_grpc(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    resources = stack_facts(mockrun.run_stack("dev"))
    for r in resources:
        if r.type == rules.REMOTE_COMMAND:
            r.props.pop("connection", None)  # type: ignore[attr-defined]
    assert _analyze(analyzer, resources) == []


def test_unknown_at_preview_is_an_advisory_over_grpc(
    analyzer: analyzer_pb2_grpc.AnalyzerStub,
) -> None:
    from tests.policy_fixtures import deployment, lb, netpol, service

    svc = service()
    svc.props["spec"]["externalTrafficPolicy"] = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
    diags = _analyze(
        analyzer, [deployment(), svc, netpol(["192.168.0.10/32", "172.16.0.254/32"]), lb()]
    )
    assert [d.policyName for d in diags] == ["unknown-at-preview"]
    assert "externalTrafficPolicy" in diags[0].message


def test_pack_startup_is_quick_enough_to_measure() -> None:
    """Not a timing assert: records how long the pack takes to load (see the note)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(POLICIES)!r}); import keepsource_pack; keepsource_pack.policies()",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    print(f"pack import: {time.perf_counter() - start:.2f} s")


def test_pack_folder_stands_on_its_own() -> None:
    reqs = (POLICIES / "requirements.txt").read_text()
    assert "pulumi-policy" in reqs
    pack = yaml.safe_load((POLICIES / "PulumiPolicy.yaml").read_text())
    assert pack["runtime"]["name"] == "python"
    main = (POLICIES / "__main__.py").read_text()
    assert "keepsource." not in main and "components" not in main
    for path in Path(POLICIES).glob("*.py"):
        imports = re.findall(r"^\s*(?:from|import)\s+([A-Za-z_.]+)", path.read_text(), re.M)
        assert not [
            m for m in imports if m.split(".")[0] in ("keepsource", "components", "mockrun")
        ]


def _check_workflow(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with its built-in GitHub workflow schema (offline)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_preview_workflow_is_a_valid_github_workflow() -> None:
    workflow = PROJECT_ROOT / ".github" / "workflows" / "preview.yml"
    done = _check_workflow(workflow)
    assert done.returncode == 0, done.stdout + done.stderr
    text = workflow.read_text()
    assert (
        "pull_request" in text and "policyPacks: policies" in text and "comment-on-pr: true" in text
    )
    assert "command: preview" in text and "Pulumi.*.yaml" in text


def test_workflow_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("on:\n  pull_request:\njobs:\n  x:\n    runs-on: ubuntu-latest\n    stepz: []\n")
    done = _check_workflow(bad)
    assert done.returncode != 0
