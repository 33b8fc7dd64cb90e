"""`render` and `verify` read a stack's config through the Pulumi CLI when it is
on PATH (keepsource/stackconfig.py), from the stack file otherwise.

The mapping and the fallbacks run against small stand-in ``pulumi`` scripts;
the last test runs the real CLI built by ./build-engine (run-tests builds it
first) on a project of its own with a file backend."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from keepsource.settings import ConfigError
from keepsource.stackconfig import load_from
from keepsource.stackfile import PROJECT_ROOT, load_config

SECRET_KEY_TEXT = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n"
KUBECONFIG_TEXT = "apiVersion: v1\nkind: Config\nclusters: []\n# token: s3cr3t-in-test\n"


def _project(tmp_path: Path, drop: tuple[str, ...] = ()) -> Path:
    project = tmp_path / "proj"
    project.mkdir()
    shutil.copyfile(PROJECT_ROOT / "Pulumi.yaml", project / "Pulumi.yaml")
    doc = yaml.safe_load((PROJECT_ROOT / "Pulumi.dev.yaml").read_text())
    for key in drop:
        del doc["config"][key]
    (project / "Pulumi.dev.yaml").write_text(yaml.safe_dump(doc))
    return project


def _fake_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cli = bin_dir / "pulumi"
    cli.write_text("#!/bin/sh\n" + script)
    cli.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def _listing(config: dict[str, object], secret: tuple[str, ...] = ()) -> str:
    """What ``pulumi config --json`` prints for ``config`` (configValueJSON)."""
    out: dict[str, dict[str, object]] = {}
    for key, value in config.items():
        if key in secret:
            out[key] = {"secret": True}
        elif isinstance(value, (dict, list)):
            out[key] = {"value": json.dumps(value), "objectValue": value, "secret": False}
        else:
            out[key] = {"value": str(value), "secret": False}
    return json.dumps(out)


def test_the_clis_view_wins_and_secrets_are_never_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path)
    config = load_config("dev", project)
    config["keepsource:nodePort"] = 30090  # as an ESC environment could set it
    config["keepsource:lbPrivateKey"] = "never shown"
    listing = tmp_path / "listing.json"
    listing.write_text(_listing(config, secret=("keepsource:lbPrivateKey",)))
    args = tmp_path / "args"
    _fake_cli(tmp_path, monkeypatch, f'echo "$@" > {args}\ncat {listing}\n')
    settings, source = load_from("dev", project)
    assert source == "`pulumi config --stack dev`"
    assert settings.node_port == 30090
    argv = args.read_text().split()
    assert argv[:4] == ["config", "--json", "--stack", "dev"]
    assert "--show-secrets" not in argv
    # From the file alone, the stack file's own value.
    settings, source = load_from("dev", project, "file")
    assert (settings.node_port, source) == (30080, "Pulumi.dev.yaml")


def test_a_secret_object_takes_its_shape_from_the_stack_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path)
    doc = yaml.safe_load((project / "Pulumi.dev.yaml").read_text())
    doc["config"]["keepsource:kubernetes"] = {"kubeconfig": {"secure": "v1:abc"}, "context": "c"}
    (project / "Pulumi.dev.yaml").write_text(yaml.safe_dump(doc))
    listing = tmp_path / "listing.json"
    listing.write_text(_listing(load_config("dev", project), secret=("keepsource:kubernetes",)))
    _fake_cli(tmp_path, monkeypatch, f"cat {listing}\n")
    settings, _ = load_from("dev", project, "cli")
    assert settings.kubernetes.context == "c"
    kubeconfig = settings.kubernetes.kubeconfig
    assert kubeconfig is not None and kubeconfig.get_secret_value() == "(encrypted)"
    # Secret in the CLI's view only (an ESC environment): named, never revealed.
    doc["config"].pop("keepsource:kubernetes")
    (project / "Pulumi.dev.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as error:
        load_from("dev", project, "cli")
    assert [f.key for f in error.value.faults] == ["keepsource:kubernetes"]
    assert "never revealed" in error.value.faults[0].reason


def test_a_bad_value_from_the_cli_is_named_by_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path)
    config = load_config("dev", project)
    config["keepsource:nodePort"] = 80
    listing = tmp_path / "listing.json"
    listing.write_text(_listing(config))
    _fake_cli(tmp_path, monkeypatch, f"cat {listing}\n")
    with pytest.raises(ConfigError) as error:
        load_from("dev", project)
    assert [f.key for f in error.value.faults] == ["keepsource:nodePort"]


def test_without_the_stack_in_the_backend_auto_reads_the_file_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = _project(tmp_path)
    _fake_cli(
        tmp_path,
        monkeypatch,
        "printf 'error: no stack named \\033[31mdev\\033[0m found\\n' >&2\nexit 255\n",
    )
    settings, source = load_from("dev", project)
    assert source == "Pulumi.dev.yaml" and settings.node_port == 30080
    note = capsys.readouterr().err
    assert "no stack" in note and "Pulumi.dev.yaml" in note
    assert "\033" not in note  # the CLI's colours do not reach the terminal
    with pytest.raises(ConfigError) as error:
        load_from("dev", project, "cli")
    assert "its backend has no stack dev" in str(error.value)


def test_cli_without_a_pulumi_on_path_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError) as error:
        load_from("dev", _project(tmp_path), "cli")
    assert "no `pulumi` on PATH" in str(error.value)


def _built_cli() -> Path:
    from engine.build import bin_dirs

    found = [d / "pulumi" for d in bin_dirs(["pulumi"]) if (d / "pulumi").is_file()]
    if not found:
        pytest.skip("the Pulumi CLI is not built here (./build-engine; run-tests builds it)")
    return found[0]


def test_render_reads_through_the_real_cli(tmp_path: Path) -> None:
    """The real CLI: a project default (Pulumi.yaml) the stack file lacks, keys
    set with --path, a secret and a secret --path key; render uses the CLI's
    view and no secret reaches its output."""
    cli = _built_cli()
    project = _project(tmp_path, drop=("keepsource:nodePort", "keepsource:kubernetes"))
    pulumi_yaml = yaml.safe_load((project / "Pulumi.yaml").read_text())
    pulumi_yaml["config"]["nodePort"]["default"] = 30091
    (project / "Pulumi.yaml").write_text(yaml.safe_dump(pulumi_yaml))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")},
        "PATH": f"{cli.parent}:{os.environ['PATH']}",
        "PULUMI_HOME": str(tmp_path / "home"),
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'backend'}",
        "PULUMI_CONFIG_PASSPHRASE": "test-only",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }
    (tmp_path / "backend").mkdir()

    def pulumi(*args: str, stdin: str = "") -> None:
        done = subprocess.run(
            [str(cli), *args, "--cwd", str(project)],
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    pulumi("stack", "init", "dev")
    pulumi("config", "set", "--path", "keepsource:workload.replicas", "2", "--stack", "dev")
    pulumi("config", "set", "--secret", "keepsource:lbPrivateKey", "--stack", "dev",
           stdin=SECRET_KEY_TEXT)  # fmt: skip
    pulumi("config", "set", "--secret", "--path", "keepsource:kubernetes.kubeconfig",
           "--stack", "dev", stdin=KUBECONFIG_TEXT)  # fmt: skip

    def render(out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
        argv = [sys.executable, "-m", "keepsource", "--project", str(project)]
        done = subprocess.run(
            [*argv, "render", "dev", "--out", str(out), *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=PROJECT_ROOT,
        )
        assert done.returncode == 0, done.stderr
        return done, list(yaml.safe_load_all((out / "manifests.yaml").read_text()))

    def kind(manifests: list[Any], name: str) -> Any:
        return next(d for d in manifests if d and d["kind"] == name)

    out = tmp_path / "out"
    done, manifests = render(out)
    assert "config: `pulumi config --stack dev`" in done.stderr
    assert kind(manifests, "Service")["spec"]["ports"][0]["nodePort"] == 30091  # project default
    assert kind(manifests, "Deployment")["spec"]["replicas"] == 2  # the --path key
    written = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    for secret in ("not-a-real-key", "s3cr3t-in-test"):
        assert secret not in written + done.stdout + done.stderr
    # The same stack from its file alone (the CLI wrote the --path key there):
    # no project default, so the model's own nodePort.
    done, manifests = render(tmp_path / "file", "--config-from", "file")
    assert "config: Pulumi.dev.yaml" in done.stderr
    assert kind(manifests, "Service")["spec"]["ports"][0]["nodePort"] == 30080
    assert kind(manifests, "Deployment")["spec"]["replicas"] == 2
