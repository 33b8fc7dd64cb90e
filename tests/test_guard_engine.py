"""The pack under the real engine: `pulumi preview --policy-pack policies` on
corpus stacks gives the verdicts the gRPC tests give.

A small program declares a corpus stack's resources as they are (each a
``pulumi.CustomResource`` of its type token, with its props and dependencies),
the CLI built by ./build-engine previews it with the command and Kubernetes
providers (the Kubernetes provider renders to a directory: no cluster) and runs
the pack as it runs any pack. The policies it reports, and their levels, are the
ones tests/test_guard_corpus.py expects of the same stack.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import build
from engine.cli import Pulumi
from engine.components import BY_NAME
from tests.test_guard_corpus import CORPUS

ROOT = Path(__file__).resolve().parent.parent
#: One that fails (mandatory), one that advises, one that passes; command and
#: Kubernetes resources only (the providers the engine build has).
CASES = [
    "01-haproxy-seed-stdin-fail",
    "41-netpol-world-open-advisory",
    "38-clusterip-internal-pass",
]

PROGRAM = """\
import json
import os

import pulumi

made = {}
for r in json.load(open(os.environ["KS_CORPUS_STACK"])):
    deps = [made[d] for d in r.get("dependsOn") or [] if d in made]
    made[r["name"]] = pulumi.CustomResource(
        r["type"], r["name"], r.get("props") or {}, opts=pulumi.ResourceOptions(depends_on=deps)
    )
"""


def _raw(case: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    data = yaml.safe_load((CORPUS / f"{case}.yaml").read_text())
    raw: list[dict[str, Any]] = []
    for inc in data.get("include") or []:
        raw += yaml.safe_load((CORPUS / "_base" / inc).read_text())
    return raw + data["resources"], data.get("expect") or []


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Pulumi:
    go = build.go_version()
    names = (
        "pulumi",
        "pulumi-language-python",
        "pulumi-resource-command",
        "pulumi-resource-kubernetes",
    )
    missing = [n for n in names if not build.is_built(BY_NAME[n], go)]
    if missing:
        pytest.fail(
            f"the engine is not built ({', '.join(missing)}): ./build-engine (run-tests does)"
        )
    d = tmp_path_factory.mktemp("guard-engine")
    (d / "__main__.py").write_text(PROGRAM)
    (d / "Pulumi.yaml").write_text(
        "name: guardcorpus\nruntime:\n  name: python\n  options:\n"
        f"    virtualenv: {ROOT / '.venv'}\n"
    )
    from lab.full import policy_pack

    policy_pack()  # the pack's virtualenv link (PulumiPolicy.yaml: venv)
    return Pulumi(project=d, state=d / "state", passphrase=secrets.token_hex(8))


#: The CLI's report of a violation: ``- [mandatory]  POLICY  (TYPE: NAME)``.
_REPORTED = re.compile(r"\[(mandatory|advisory)\]\s+([a-z0-9-]+)\s+\(")


@pytest.mark.parametrize("case", CASES)
def test_preview_with_the_pack_gives_the_corpus_verdicts(project: Pulumi, case: str) -> None:
    raw, expect = _raw(case)
    stack_file = project.project / f"{case}.json"
    stack_file.write_text(json.dumps(raw))
    stack = re.sub(r"[^a-z0-9-]", "-", case.lower())[:40]
    project.select(stack)
    project.run(
        "config",
        "set",
        "kubernetes:renderYamlToDirectory",
        str(project.project / "render" / stack),
        stack=stack,
    )
    project.env_extra["KS_CORPUS_STACK"] = str(stack_file)
    done = project.run("preview", "--policy-pack", str(ROOT / "policies"), stack=stack, check=False)
    out = done.stdout + done.stderr
    got = sorted({(m.group(2), m.group(1)) for m in _REPORTED.finditer(out)})
    want = sorted({(e["policy"], e.get("level", "mandatory")) for e in expect})
    assert got == want, out[-3000:]
    mandatory = any(level == "mandatory" for _, level in want)
    assert (done.returncode != 0) == mandatory, out[-3000:]
    if case == CASES[0]:
        # pulumi-command declares `connection` secret: the engine sends it wrapped,
        # the pack notes it, and the message shows the host as [secret]
        assert "on host [secret]" in out and "on host 192.168.0.1" not in out, out[-3000:]
