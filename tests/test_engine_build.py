"""engine.build's own logic, without Go: cache keys, go.mod edits, mirrors, the CLI's environment.

The build itself (Go, the module proxy) runs in run-tests before pytest; the lab's
engine tests run what it built.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from engine import build, cli
from engine.components import BY_NAME, COMPONENTS, SCHEMA


def test_every_component_is_pinned_and_checked() -> None:
    for c in COMPONENTS:
        assert c.version and c.binaries and c.check, c.name
        # A module proxy source names an exact version; a mirror source a tag.
        for mod, version in c.requires.items():
            assert version.startswith("v") and "latest" not in version, (c.name, mod)
        if c.mirror is not None:
            assert c.mirror.ref.startswith("v"), c.name
    assert BY_NAME["pulumi-resource-command"].check == SCHEMA
    assert BY_NAME["pulumi-resource-kubernetes"].check == SCHEMA


def test_the_cache_key_follows_the_spec_and_the_go_version() -> None:
    c = BY_NAME["kwok"]
    same = build.key(c, "go1.26.8")
    assert build.key(c, "go1.26.8") == same
    assert build.key(c, "go1.27.0") != same
    bumped = dataclasses.replace(c, requires={"sigs.k8s.io/kwok": "v0.8.1"})
    assert build.key(bumped, "go1.26.8") != same
    assert build.folder(c, "go1.26.8").name == f"kwok-{same}"


def test_drop_replace_removes_only_the_named_local_replace() -> None:
    gomod = (
        "module x\n\n"
        "replace (\n"
        "\tgithub.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.1\n"
        "\tgithub.com/pulumi/pulumi/pkg/v3 => ../../../../pkg\n"
        "\tgithub.com/pulumi/pulumi/sdk/v3 => ../../..\n"
        ")\n"
        "replace github.com/pulumi/pulumi-kubernetes/sdk/v4 => ../sdk\n"
    )
    out = build._drop_replace(gomod, "github.com/pulumi/pulumi/pkg/v3")
    out = build._drop_replace(out, "github.com/pulumi/pulumi-kubernetes/sdk/v4")
    assert "pkg/v3" not in out and "pulumi-kubernetes" not in out
    assert "clipboard => github.com/tgummerer/clipboard" in out
    assert "github.com/pulumi/pulumi/sdk/v3 => ../../.." in out


def test_a_missing_mirror_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEPSOURCE_GIT_MIRRORS", str(tmp_path))
    with pytest.raises(build.BuildError) as e:
        build._find_mirror("pulumi/pulumi-command")
    assert "pulumi/pulumi-command" in str(e.value) and str(tmp_path) in str(e.value)
    assert "pulumi+pulumi-command" in str(e.value)
    mirror = tmp_path / "pulumi+pulumi-command"
    subprocess.run(["git", "init", "-q", "--bare", str(mirror)], check=True)
    assert build._find_mirror("pulumi/pulumi-command") == mirror


def test_build_engine_refuses_an_unknown_component(capsys: pytest.CaptureFixture[str]) -> None:
    assert build.main(["pulumi", "nope"]) == 2
    assert "unknown component nope" in capsys.readouterr().err


def test_the_cli_runs_offline_and_ignores_the_callers_pulumi_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_ACCESS_TOKEN", "from-the-caller")
    monkeypatch.setenv("PULUMI_BACKEND_URL", "https://example.invalid")
    monkeypatch.setenv("KUBECONFIG", "/nowhere")
    p = cli.Pulumi(project=tmp_path, state=tmp_path / "state", passphrase="pp")
    env = p.env()
    assert env["PULUMI_BACKEND_URL"] == f"file://{tmp_path / 'state' / 'backend'}"
    assert "PULUMI_ACCESS_TOKEN" not in env and "KUBECONFIG" not in env
    assert env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true"
    assert env["PULUMI_SKIP_UPDATE_CHECK"] == "true"
    first = env["PATH"].split(":")[: len(p.components)]
    assert [Path(d).parent.name.rsplit("-", 1)[0] for d in first] == list(p.components)


def test_stale_folders_are_this_components_other_keys_only(tmp_path: Path) -> None:
    c = BY_NAME["pulumi"]
    current = build.folder(c, "go1.26.8", tmp_path)
    for name in (current.name, "pulumi-0123456789ab", "pulumi-language-python-0123456789ab",
                 "pulumi-resource-command-aaaaaaaaaaaa", "pulumi-notakey"):  # fmt: skip
        (tmp_path / name).mkdir()
    assert [d.name for d in build.stale(c, "go1.26.8", tmp_path)] == ["pulumi-0123456789ab"]
