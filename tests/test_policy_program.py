"""The policy pack against the keepsource program itself, as the Pulumi CLI runs it.

The pack is started once for this module (``python -m pulumi.policy``) and
spoken to over the analyzer gRPC, with each stack's resources as the engine
sends them: props, parents and dependencies as the mocked run registered them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import empty_pb2
from pulumi.runtime.proto import analyzer_pb2

import mockrun
from keepsource.stackfile import PROJECT_ROOT, load
from tests.conftest import ALL_STACKS, dev_config
from tests.guard_harness import Pack, WireResource, level, start_pack

POLICIES = PROJECT_ROOT / "policies"
SEED_PROGRAM = PROJECT_ROOT / "tests" / "programs" / "with_haproxy.py"


def wire(run: mockrun.Run) -> list[WireResource]:
    """A mocked run as the engine hands it to AnalyzeStack: a component's props are
    what it registered; a custom resource's are its (echoed) inputs. Secrets stay
    in their wire form (the signature object), as the engine sends them."""
    return [
        WireResource(
            type=r.type,
            name=r.name,
            urn=r.urn,
            props={**r.wire, **_outputs(r)},
            parent=r.parent,
            dependencies=list(r.dependencies),
        )
        for r in run.resources
    ]


def _outputs(r: mockrun.Registered) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(r.outputs, default=str)) if not r.custom else {}


@pytest.fixture(scope="module")
def pack() -> Iterator[Pack]:
    yield from start_pack()


@pytest.mark.parametrize("preview", [False, True], ids=["up", "preview"])
@pytest.mark.parametrize("stack", ALL_STACKS)
def test_every_stack_passes_the_pack(pack: Pack, stack: str, preview: bool) -> None:
    resources = wire(mockrun.run_stack(stack, preview=preview))
    types = {r.type for r in resources}
    assert {"keepsource:lb:LoadBalancerHost", "command:remote:Command"} <= types
    # An LB-only stack (workload.managedBy: external) declares no Kubernetes object.
    k8s = {"kubernetes:core/v1:Service", "kubernetes:networking.k8s.io/v1:NetworkPolicy"}
    assert (k8s <= types) == load(stack).manages_workload
    diags = pack.analyze(resources)
    assert [(d.policyName, d.message) for d in diags] == []


def test_the_pack_sees_the_programs_relations(pack: Pack) -> None:
    """Not a vacuous pass: drop the LB's check source from the dev stack's policy
    and the health-check verdict must name it."""
    resources = wire(mockrun.run_stack("dev"))
    for r in resources:
        if r.type == "kubernetes:networking.k8s.io/v1:NetworkPolicy":
            rule = r.props["spec"]["ingress"][0]
            rule["from"] = [b for b in rule["from"] if b["ipBlock"]["cidr"] != "172.16.0.250/32"]
    diags = pack.analyze(resources)
    assert [(d.policyName, level(d)) for d in diags] == [("lb-health-checks-admitted", "mandatory")]
    assert "check source 172.16.0.250" in diags[0].message
    assert "NetworkPolicy my-ns/nginx" in diags[0].message


def test_the_seeds_haproxy_stack_fails_naming_haproxy(pack: Pack) -> None:
    resources = wire(mockrun.run_program(dev_config(), program=SEED_PROGRAM))
    diags = pack.analyze(resources)
    assert [(d.policyName, level(d)) for d in diags] == [
        ("no-terminating-proxy-before-ipblock", "mandatory")
    ], [d.message for d in diags]
    assert diags[0].urn.endswith("::seed-haproxy")
    assert diags[0].policyPackName == "keepsource-guard"
    message = diags[0].message
    for fragment in (
        "HAProxy",
        "frontend nginx -> backend workers",
        "Service my-ns/nginx",
        "NetworkPolicy my-ns/nginx",
        "usesrc clientip",
        "keepalived/LVS NAT",
    ):
        assert fragment in message, message


def test_pack_lists_its_policies_with_a_config_schema(pack: Pack) -> None:
    info = pack.stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=20)
    assert info.name == "keepsource-guard"
    assert info.supportsConfig
    levels = {p.name: p.enforcementLevel for p in info.policies}
    mandatory, advisory = analyzer_pb2.MANDATORY, analyzer_pb2.ADVISORY
    assert levels == {
        "no-terminating-proxy-before-ipblock": mandatory,
        "client-address-kept-by-kube-proxy": mandatory,
        "lb-health-checks-admitted": mandatory,
        "readable-guard-inputs": mandatory,
        "world-open-ipblock": advisory,
        "opaque-hops": advisory,
        "unknown-at-preview": advisory,
    }
    for p in info.policies:
        assert p.description
        assert "exemptions" in p.configSchema.properties


def test_pack_version_is_declared() -> None:
    """The CLI takes a Python pack's version from PulumiPolicy.yaml (the SDK
    reports 0.0.1: pulumi_policy/policy.py:113-116)."""
    from guard import pack as keepsource_pack

    declared = yaml.safe_load((POLICIES / "PulumiPolicy.yaml").read_text())["version"]
    assert declared == keepsource_pack.PACK_VERSION
    assert re.fullmatch(r"\d+\.\d+\.\d+", declared)


def test_stack_config_overrides_enforcement_and_exempts(pack: Pack) -> None:
    """Per-stack policy config as the CLI sends it (Configure): a level override
    turns the verdict advisory; an exemption names the resource; both undone."""
    resources = wire(mockrun.run_program(dev_config(), program=SEED_PROGRAM))
    try:
        pack.configure({"no-terminating-proxy-before-ipblock": {"enforcementLevel": "advisory"}})
        diags = pack.analyze(resources)
        assert [(d.policyName, level(d)) for d in diags] == [
            ("no-terminating-proxy-before-ipblock", "advisory")
        ]
        pack.configure(
            {
                "no-terminating-proxy-before-ipblock": {
                    "enforcementLevel": "mandatory",
                    "exemptions": ["seed-haproxy"],
                }
            }
        )
        assert pack.analyze(resources) == []
        pack.configure({"no-terminating-proxy-before-ipblock": {"enforcementLevel": "disabled"}})
        assert pack.analyze(resources) == []
    finally:
        pack.configure({})
    assert [d.policyName for d in pack.analyze(resources)] == [
        "no-terminating-proxy-before-ipblock"
    ]


def test_the_pack_loads_from_its_own_folder_alone(tmp_path: Path) -> None:
    """The CLI runs the pack from its folder, in a process of its own: with only
    that folder on sys.path (isolated mode, elsewhere as cwd) it builds all of
    its policies and loads none of the program's modules. Its load time is
    printed (a measure, not an assert)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import json, sys; sys.path.insert(0, {str(POLICIES)!r}); from guard import pack; "
            "names = [p.name for p in pack.policies()]; "
            "ours = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'keepsource', 'components', 'mockrun', 'lab', 'tests'}); "
            "print(json.dumps([names, ours]))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    names, ours = json.loads(proc.stdout)
    assert names == [
        "no-terminating-proxy-before-ipblock",
        "client-address-kept-by-kube-proxy",
        "lb-health-checks-admitted",
        "readable-guard-inputs",
        "world-open-ipblock",
        "opaque-hops",
        "unknown-at-preview",
    ]
    assert ours == []
    print(f"pack load: {time.perf_counter() - start:.2f} s")


def test_pack_folder_stands_on_its_own() -> None:
    reqs = (POLICIES / "requirements.txt").read_text()
    assert "pulumi-policy" in reqs
    pack = yaml.safe_load((POLICIES / "PulumiPolicy.yaml").read_text())
    assert pack["runtime"]["name"] == "python"
    main = (POLICIES / "__main__.py").read_text()
    assert "keepsource." not in main and "components" not in main
    for path in Path(POLICIES).rglob("*.py"):
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
    assert "pull_request" in text and "gh pr comment" in text and "Pulumi.*.yaml" in text
    assert "pulumi preview --policy-pack policies" in text


def test_workflow_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("on:\n  pull_request:\njobs:\n  x:\n    runs-on: ubuntu-latest\n    stepz: []\n")
    done = _check_workflow(bad)
    assert done.returncode != 0
