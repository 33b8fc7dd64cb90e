"""`python -m keepsource render`: the contract other people rely on."""

from __future__ import annotations

import os
import shlex
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
    assert written == {*expected, ".keepsource-render"}
    assert (out / ".keepsource-render").read_text().split() == sorted(expected)
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


def _line_of(needle: bytes) -> int:
    """The line of Pulumi.dev.yaml holding ``needle`` (1-based)."""
    assert needle in _DEV
    return _DEV[: _DEV.index(needle)].count(b"\n") + 1


_HOST_KEY = _DEV.split(b"hostKey: ", 1)[1].split(b"\n", 1)[0]


def _vip_spelled(host: bytes) -> bytes:
    """lb.ssh.host written as ``host``, the apiserver on the SSH port 22."""
    text = _dev_with(b"      host: 192.168.0.1\n", b"      host: " + host + b"\n")
    return text.replace(b"    port: 6443\n", b"    port: 22\n", 1)


#: The line a key appended to Pulumi.dev.yaml is on.
_NEXT = _DEV.count(b"\n") + 1
#: The reviewer's alias bomb: 9 aliases per level; walking it expands 9**levels nodes.
_BOMB = b"  keepsource:extra:\n" + b"".join(
    b"    - &a%d [" % i + b",".join([b"*a%d" % (i - 1) if i else b'"x"'] * 9) + b"]\n"
    for i in range(12)
)


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
    # review of issue 8: tracebacks, echoed names, the alias bomb, merge keys, long floats
    ("nul-byte", _dev_with(b"name: nginx", b"name: ngi\x00nx"), f"Pulumi.bad.yaml: line {_line_of(b'name: nginx')}, column 14: holds a character YAML does not allow"),
    ("esc-in-value", _dev_with(b"name: nginx", b"name: nginx\x1b[0m"), f"Pulumi.bad.yaml: line {_line_of(b'name: nginx')}, column 16: holds a character"),
    ("bel-in-comment", _dev_with(b"# The seed lab.", b"# The seed lab.\x07"), "Pulumi.bad.yaml: line 1, column 16: holds a character"),
    ("bool-tag", _DEV + b"  keepsource:lbPrivateKey: !!bool KEYMATERIAL\n", f"Pulumi.bad.yaml: line {_NEXT}, column 28: uses an explicit YAML tag"),
    ("timestamp-tag", _DEV + b"  keepsource:lbPrivateKey: !!timestamp KEYMATERIAL\n", f"Pulumi.bad.yaml: line {_NEXT}, column 28: uses an explicit YAML tag"),
    ("tag-name-not-echoed", _DEV + b"  keepsource:lbPrivateKey: !KEYMATERIALTag x\n", f"line {_NEXT}, column 28: uses an explicit YAML tag"),
    ("alias-name-not-echoed", _DEV + b"  keepsource:x: *KEYMATERIALAlias\n", f"line {_NEXT}, column 17: uses a YAML anchor or alias"),
    ("anchor-name-not-echoed", _DEV + b"  keepsource:x: &KEYMATERIAL 1\n", f"line {_NEXT}, column 17: uses a YAML anchor or alias"),
    ("alias-bomb", _DEV + _BOMB, f"Pulumi.bad.yaml: line {_NEXT + 1}, column 7: uses a YAML anchor or alias"),
    ("merge-key", _dev_with(b"  keepsource:network:\n", b"  keepsource:network:\n    <<: {vip: 192.168.0.2}\n"), f"Pulumi.bad.yaml: line {_line_of(b'  keepsource:network:') + 1}, column 5: is a YAML merge key"),
    ("long-float", _dev_with(b"delayLoop: 0.5", b"delayLoop: 0." + b"9" * 5000), "keepsource:healthCheck.delayLoop: is a number of 5001 digits"),
    ("bad-implicit-int", _DEV + b"  keepsource:x: 0b_\n", f"Pulumi.bad.yaml: line {_NEXT}, column 17: cannot be read as a YAML value"),
    ("impossible-date", _DEV + b"  keepsource:x: 2001-02-30\n", f"Pulumi.bad.yaml: line {_NEXT}, column 17: cannot be read as a YAML value"),
    ("complex-key", _DEV + b"  ? [KEYMATERIAL]\n  : 1\n", f"Pulumi.bad.yaml: line {_NEXT}, column 5: a key must be a plain name"),
    ("ssh-user-option", _dev_with(b"      user: root\n", b'      user: "-oProxyCommand=touch /tmp/pwn"\n'), "keepsource:lb.ssh.user: must not start with '-'"),
    ("ssh-host-option", _dev_with(b"      host: 192.168.0.1\n", b'      host: "-oProxyCommand=touch /tmp/pwn"\n'), "keepsource:lb.ssh.host: must not start with '-'"),
    ("vip-with-leading-zeros", _vip_spelled(b'"192.168.000.001"'), "keepsource:apiserver.port: 22 is an SSH endpoint"),
    ("vip-as-mapped-ipv6", _vip_spelled(b'"::ffff:192.168.0.1"'), "keepsource:apiserver.port: 22 is an SSH endpoint"),
    ("vip-with-trailing-dot", _vip_spelled(b'"192.168.0.1."'), "keepsource:apiserver.port: 22 is an SSH endpoint"),
    ("jump-host-is-vip", _vip_spelled(b"172.16.0.254\n      jumpHost: root@192.168.0.1\n      jumpHostKey: " + _HOST_KEY), "keepsource:lb.ssh.jumpHost is the VIP, port 22"),
    ("provider-context-key", _DEV + b"  kubernetes:context: foo\n", "kubernetes:context: has no effect"),
    ("provider-kubeconfig-key", _DEV + b"  kubernetes:kubeconfig: ~/.kube/x\n", "kubernetes:kubeconfig: has no effect"),
    ("long-float-quoted", _dev_with(b"delayLoop: 0.5", b'delayLoop: "0.' + b"9" * 5000 + b'"'), "keepsource:healthCheck.delayLoop: is a number of 5001 digits"),
    ("yaml-problem-not-echoed", _DEV + b'  keepsource:lbPrivateKey: "\\xKEYMATERIAL"\n', f"is not valid YAML at line {_NEXT}, column"),
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


def test_render_refuses_an_empty_out(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "keepsource", "--project", str(PROJECT_ROOT)]
    for empty in ("", " "):
        done = subprocess.run(
            [*cli, "render", "dev", "--out", empty],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
            check=False,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "--out: is empty" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_ks_keeps_the_callers_directory_for_a_relative_out(tmp_path: Path) -> None:
    """./ks used to `cd` to the project root, so `--out out/x` landed there."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    here = tmp_path / "here"
    here.mkdir()
    # A folder named like the package in the caller's directory must not shadow it.
    (here / "keepsource").mkdir()
    (here / "keepsource" / "__main__.py").write_text("raise SystemExit('shadowed')\n")
    rel = f"ks-out-{tmp_path.name}"
    done = subprocess.run(
        [str(PROJECT_ROOT / "ks"), "render", "dev", "--out", rel],
        capture_output=True,
        text=True,
        cwd=here,
        env={**os.environ, "KEEPSOURCE_VENV": str(venv)},
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (here / rel / "keepalived.conf").is_file()
    assert not (PROJECT_ROOT / rel).exists()


def test_render_accepts_an_encrypted_context_as_the_program_does(tmp_path: Path) -> None:
    """`--secret --path keepsource:kubernetes.context`: render needs no
    secret and never prints the ciphertext (the program keeps it secret)."""
    text = _dev_with(
        b"context: kubernetes-admin@kubernetes", b"context: {secure: v1:CIPHERTEXTMARK}"
    )
    project = _raw_project(tmp_path, text)
    done = _cli("render", "bad", "--out", str(tmp_path / "out"), project=project)
    assert done.returncode == 0, done.stderr
    assert "CIPHERTEXTMARK" not in done.stdout + done.stderr
    written = "".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert "CIPHERTEXTMARK" not in written


def test_render_warns_when_host_keys_are_not_pinned(tmp_path: Path) -> None:
    doc = yaml.safe_load((PROJECT_ROOT / "Pulumi.dev.yaml").read_text())
    ssh = doc["config"]["keepsource:lb"]["ssh"]
    del ssh["hostKey"]
    ssh["insecureAcceptAnyHostKey"] = True
    project = tmp_path / "proj"
    project.mkdir()
    (project / "Pulumi.open.yaml").write_text(yaml.safe_dump(doc))
    done = _cli("render", "open", "--out", str(tmp_path / "out"), project=project)
    assert done.returncode == 0, done.stderr
    assert "insecureAcceptAnyHostKey is true" in done.stderr and "NOT checked" in done.stderr
    pinned = _cli("render", "dev", "--out", str(tmp_path / "out2"))
    assert pinned.returncode == 0 and "NOT checked" not in pinned.stderr


def test_a_plain_yaml_error_would_echo_the_key_material() -> None:
    """The case above is not vacuous: PyYAML's own message quotes the line."""
    text = dict((c[0], c[1]) for c in RAW_BAD)["yaml-error-with-key-material"]
    with pytest.raises(yaml.YAMLError) as caught:
        yaml.safe_load(text)
    assert "KEYMATERIAL" in str(caught.value)


def test_plain_pyyaml_echoes_names_or_crashes_on_these_inputs() -> None:
    """The review's cases are not vacuous: PyYAML alone quotes tag and alias
    names, ends a bad ``!!bool`` in a KeyError, and refuses a NUL outside the
    parse (a ReaderError when the loader is made)."""
    cases = dict((c[0], c[1]) for c in RAW_BAD)
    for case in ("tag-name-not-echoed", "alias-name-not-echoed"):
        with pytest.raises(yaml.YAMLError) as caught:
            yaml.safe_load(cases[case])
        assert "KEYMATERIAL" in str(caught.value), case
    with pytest.raises(KeyError):
        yaml.safe_load(cases["bool-tag"])
    with pytest.raises(yaml.reader.ReaderError):
        yaml.SafeLoader(cases["nul-byte"].decode())


def test_render_again_removes_only_its_own_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _cli("render", "local-ha", "--out", str(out)).returncode == 0
    pair_only = [n for n in artifacts(load("local-ha")) if n not in artifacts(load("dev"))]
    assert pair_only and all((out / n).is_file() for n in pair_only)
    (out / "mine.txt").write_text("the operator's own file")
    done = _cli("render", "dev", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert not any((out / n).exists() for n in pair_only)
    assert (out / "mine.txt").read_text() == "the operator's own file"
    assert "removed" in done.stdout


def test_render_with_a_directory_in_the_way_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "keepalived.conf").mkdir(parents=True)
    done = _cli("render", "dev", "--out", str(out))
    assert done.returncode == 2
    assert "keepalived.conf is in the way" in done.stderr and "Traceback" not in done.stderr
    assert [p.name for p in out.iterdir()] == ["keepalived.conf"]
