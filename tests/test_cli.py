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
    confs = [f"{n.name}/keepalived.conf" for n in load(stack).lb_nodes]
    names = ["rules.v4", "90-keepsource-gateway.conf", "manifests.yaml"]
    for name in [*(confs if load(stack).is_pair else ["keepalived.conf"]), *names]:
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


def _raw_project(tmp_path: Path, text: bytes) -> Path:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "Pulumi.bad.yaml").write_bytes(text)
    return project


_DEV = (PROJECT_ROOT / "Pulumi.dev.yaml").read_bytes()
# A private key pasted without --secret, broken so that YAML fails on its line.
_KEY_LINE = b"  keepsource:lbPrivateKey: b3BlbnNzaC1rZXktdjEAAAAAKEYMATERIAL: x: y\n"


def _dev_with(old: bytes, new: bytes) -> bytes:
    assert old in _DEV
    return _DEV.replace(old, new, 1)


# (case, stack file bytes, what stderr must name)
RAW_BAD: list[tuple[str, bytes, str]] = [
    ("namespace-typo", _DEV + b"  keepsorce:nodePort: 30081\n", "keepsorce:nodePort"),
    ("duplicate-key", _DEV + b"  keepsource:nodePort: 30081\n", "keepsource:nodePort: is given twice"),
    ("duplicate-nested-key", _dev_with(b"      port: 22\n", b"      port: 22\n      port: 2222\n"), "keepsource:lb.ssh.port: is given twice"),
    ("trailing-newline-name", _dev_with(b"    name: nginx\n", b'    name: "nginx\\n"\n'), "keepsource:workload.name"),
    ("huge-number", _dev_with(b"keepsource:nodePort: 30080", b"keepsource:nodePort: " + b"9" * 5000), "keepsource:nodePort: is a number of 5000 digits"),
    ("deep-nesting", _DEV + b"  keepsource:verify2: " + b"[" * 60 + b"]" * 60 + b"\n", "keepsource:verify2: nests deeper"),
    ("very-deep-nesting", _DEV + b"  keepsource:x: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nests deeper"),
    ("not-utf8", _DEV.replace(b"nginx:1.27.3", b"nginx:1.27.3\xff"), "is not UTF-8"),
    ("yaml-error-with-key-material", _DEV + _KEY_LINE, "is not valid YAML"),
    ("kube-system", _dev_with(b"namespace: my-ns", b"namespace: kube-system"), "keepsource:workload.namespace"),
    ("apiserver-on-ssh-port", _dev_with(b"    port: 6443\n", b"    port: 22\n"), "keepsource:apiserver.port"),
]  # fmt: skip


@pytest.mark.parametrize("case,text,named", RAW_BAD, ids=[c[0] for c in RAW_BAD])
def test_render_refuses_bad_stack_files_without_traceback(
    tmp_path: Path, case: str, text: bytes, named: str
) -> None:
    project = _raw_project(tmp_path, text)
    out = tmp_path / "out"
    done = _cli("render", "bad", "--out", str(out), project=project)
    assert done.returncode == 2, (case, done.stderr)
    assert named in done.stderr
    assert "Traceback" not in done.stderr
    assert "KEYMATERIAL" not in done.stderr
    assert done.stdout == ""
    assert not out.exists()


def test_render_refuses_an_out_that_is_a_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text("keep me\n")
    for target in (out, out / "sub"):
        done = _cli("render", "dev", "--out", str(target))
        assert done.returncode == 2, done.stderr
        assert "--out" in done.stderr and "not a directory" in done.stderr
        assert "Traceback" not in done.stderr
    assert out.read_text() == "keep me\n"


def test_a_plain_yaml_error_would_echo_the_key_material() -> None:
    """The case above is not vacuous: PyYAML's own message quotes the line."""
    text = dict((c[0], c[1]) for c in RAW_BAD)["yaml-error-with-key-material"]
    with pytest.raises(yaml.YAMLError) as caught:
        yaml.safe_load(text)
    assert "KEYMATERIAL" in str(caught.value)
