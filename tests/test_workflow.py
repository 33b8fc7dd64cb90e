"""The PR preview workflow: real backend, pinned CLI, comments, quoted matrix values.
(Its validity against GitHub's workflow schema is checked in test_policy_program.py.)"""

from __future__ import annotations

import shlex
from typing import Any

import bashlex
import yaml

from engine.cli import PREVIEW
from engine.components import PULUMI
from keepsource.stackfile import PROJECT_ROOT

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "preview.yml"


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return doc


def _steps() -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = _doc()["jobs"]["preview"]["steps"]
    return steps


def test_cli_is_pinned_to_the_engine_the_tests_build() -> None:
    assert _doc()["env"]["PULUMI_VERSION"] == PULUMI.lstrip("v")
    action = next(s for s in _steps() if s.get("uses", "").startswith("pulumi/actions@"))
    assert action["with"] == {"pulumi-version": "${{ env.PULUMI_VERSION }}"}  # install only


def _step(name: str) -> dict[str, Any]:
    return next(s for s in _steps() if s.get("id") == name or s.get("name") == name)


def test_previews_against_the_real_backend_only() -> None:
    text = WORKFLOW.read_text()
    assert "file://" not in text
    assert 'pulumi login "${PULUMI_BACKEND_URL}"' in _step("exists")["run"]
    guard = _step("the stack's backend is configured")
    assert 'if [ -z "${PULUMI_BACKEND_URL}" ]' in guard["run"]
    assert "stack init" not in text and "upsert" not in text  # never a fresh stack


def test_only_stacks_the_backend_holds_are_previewed() -> None:
    exists = _step("exists")["run"]
    assert "pulumi stack ls --json" in exists and "exists=false" in exists
    for name in ("preview", "comment the preview on the PR", "fail when the preview failed"):
        assert _step(name)["if"].startswith("steps.exists.outputs.exists == 'true'"), name


def test_the_preview_is_the_command_the_tests_run() -> None:
    script = _step("preview")["run"].replace("\\\n", " ")
    line = next(ln for ln in script.splitlines() if ln.strip().startswith("pulumi preview"))
    words = shlex.split(line)[1:]
    assert words[: len(PREVIEW)] == list(PREVIEW)
    assert words[len(PREVIEW) : len(PREVIEW) + 2] == ["--stack", "${STACK}"]


def test_comments_on_success_and_on_failure() -> None:
    comment = _step("comment the preview on the PR")
    assert "if" in comment and "failure" not in comment["if"]  # both outcomes
    assert "gh pr comment" in comment["run"]
    fail = _step("fail when the preview failed")
    assert "steps.preview.outputs.rc != '0'" in fail["if"] and "exit 1" in fail["run"]


def _stack_words(script: str) -> list[str]:
    """Every shell word (as written) that expands $STACK, found by a bash parser."""
    found: list[str] = []

    class Words(bashlex.ast.nodevisitor):  # type: ignore[misc]
        def visitword(self, node: Any, word: str) -> None:
            parts = getattr(node, "parts", [])
            if any(p.kind == "parameter" and p.value == "STACK" for p in parts):
                found.append(script[node.pos[0] : node.pos[1]])

    for tree in bashlex.parse(script):
        Words().visit(tree)
    return found


def test_matrix_values_reach_shell_only_quoted_through_env() -> None:
    doc = _doc()
    assert doc["jobs"]["preview"]["env"]["STACK"] == "${{ matrix.stack }}"
    runs = [s["run"] for job in doc["jobs"].values() for s in job["steps"] if "run" in s]
    words = [w for run in runs for w in _stack_words(run)]
    assert len(words) >= 4  # render (twice), the stack check, the preview, the comment
    for run in runs:
        assert "${{" not in run, run  # no expression pasted into a script
    for word in words:
        assert word.startswith('"') and word.endswith('"'), word


def test_the_quoting_check_can_fail() -> None:
    assert _stack_words('echo out/$STACK "${STACK}"') == ["out/$STACK", '"${STACK}"']


def test_the_local_lab_is_not_previewed() -> None:
    """The lister, run on this checkout: every stack but the local lab's
    (``local``, ``local-ha``, ``local-services``: they need the lab's backend)."""
    import subprocess

    lister = _doc()["jobs"]["stacks"]["steps"][1]["run"]
    line = next(ln for ln in lister.splitlines() if "ls Pulumi." in ln)
    pipeline = line.split('"$(', 1)[1].split(" | jq", 1)[0]
    done = subprocess.run(
        ["bash", "-c", pipeline], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30
    )
    listed = set(done.stdout.split())
    every = {p.name[len("Pulumi.") : -len(".yaml")] for p in PROJECT_ROOT.glob("Pulumi.*.yaml")}
    assert listed == {s for s in every if not s.startswith("local")}
    assert {"dev", "local", "local-ha", "local-services"} <= every


def test_every_check_of_the_test_run_can_fail_it() -> None:
    """Under ``set -e`` a command on the left of ``&&`` or ``||`` that fails
    does not stop bash: each check of run-tests is a command of its own (a
    type error once passed CI as ``mypy . && mypy policies/__main__.py``)."""
    text = (PROJECT_ROOT / "run-tests").read_text()
    assert "set -euo pipefail" in text
    for line in text.splitlines():
        if '"$py" -m' in line and not line.lstrip().startswith("#"):
            assert "&&" not in line and "||" not in line, line
