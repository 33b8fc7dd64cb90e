"""The PR preview workflow: real backend, pinned CLI, comments, quoted matrix values.
(Its validity against GitHub's workflow schema is checked in test_policy_program.py.)"""

from __future__ import annotations

import re
from typing import Any

import bashlex
import yaml

from keepsource.stackfile import PROJECT_ROOT

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "preview.yml"


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return doc


def _steps() -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = _doc()["jobs"]["preview"]["steps"]
    return steps


def test_cli_is_pinned_to_the_sdk_release() -> None:
    sdk = re.search(r"^pulumi==(\S+)$", (PROJECT_ROOT / "requirements.txt").read_text(), re.M)
    assert sdk is not None
    assert _doc()["env"]["PULUMI_VERSION"] == sdk.group(1)
    action = next(s for s in _steps() if s.get("uses", "").startswith("pulumi/actions@"))
    assert action["with"]["pulumi-version"] == "${{ env.PULUMI_VERSION }}"


def test_previews_against_the_real_backend_only() -> None:
    text = WORKFLOW.read_text()
    assert "file://" not in text
    action = next(s for s in _steps() if s.get("uses", "").startswith("pulumi/actions@"))
    assert action["with"]["cloud-url"] == "${{ secrets.PULUMI_BACKEND_URL }}"
    assert "upsert" not in action["with"]  # a missing stack is an error, not a fresh one
    guard = next(s for s in _steps() if s.get("name") == "the stack's backend is configured")
    assert 'if [ -z "${PULUMI_BACKEND_URL}" ]' in guard["run"]


def test_comments_on_success_and_on_failure() -> None:
    action = next(s for s in _steps() if s.get("uses", "").startswith("pulumi/actions@"))
    assert action["with"]["comment-on-pr"] is True
    assert action["continue-on-error"] is True and action["id"] == "preview"
    failure = [s for s in _steps() if s.get("if") == "steps.preview.outcome == 'failure'"]
    assert len(failure) == 2
    assert "gh pr comment" in failure[0]["run"] and "--policy-pack policies" in failure[0]["run"]
    assert "exit 1" in failure[1]["run"]


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
    assert len(words) >= 4  # render (twice), the failure preview, the comment
    for run in runs:
        assert "${{" not in run, run  # no expression pasted into a script
    for word in words:
        assert word.startswith('"') and word.endswith('"'), word


def test_the_quoting_check_can_fail() -> None:
    assert _stack_words('echo out/$STACK "${STACK}"') == ["out/$STACK", '"${STACK}"']


def test_the_local_lab_is_not_previewed() -> None:
    lister = _doc()["jobs"]["stacks"]["steps"][1]["run"]
    assert "grep -vx 'local'" in lister
