"""`python -m keepsource render`: the contract other people rely on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from keepsource.artifacts import artifacts
from keepsource.stackfile import PROJECT_ROOT, load
from tests.conftest import ALL_STACKS


def _cli(*args: str, project: Path = PROJECT_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keepsource", "--project", str(project), *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_render_writes_the_artifacts(tmp_path: Path, stack: str) -> None:
    done = _cli("render", stack, "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    for name in ("keepalived.conf", "rules.v4", "90-keepsource-gateway.conf", "manifests.yaml"):
        assert (out / name).is_file()
    expected = artifacts(load(stack))
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == set(expected)
    for name, text in expected.items():
        assert (out / name).read_text() == text


def _bad_project(tmp_path: Path, mutate: dict[str, object]) -> Path:
    project = tmp_path / "proj"
    project.mkdir()
    doc = yaml.safe_load((PROJECT_ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"].update(mutate)
    (project / "Pulumi.bad.yaml").write_text(yaml.safe_dump(doc))
    return project


def test_render_rejects_bad_config_and_writes_nothing(tmp_path: Path) -> None:
    project = _bad_project(
        tmp_path,
        {
            "keepsource:nodePort": 29999,
            "keepsource:allowedClients": ["0.0.0.0/0"],
            "keepsource:x": 1,
        },
    )
    out = tmp_path / "out"
    done = _cli("render", "bad", "--out", str(out), project=project)
    assert done.returncode == 2
    for key in ("keepsource:nodePort", "keepsource:allowedClients[0]", "keepsource:x"):
        assert key in done.stderr
    assert not out.exists()


def test_render_of_a_missing_stack_fails(tmp_path: Path) -> None:
    done = _cli("render", "nosuchstack", "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "Pulumi.nosuchstack.yaml" in done.stderr
    assert not (tmp_path / "o").exists()
