"""Run the real Pulumi CLI (built by engine.build) offline, as an operator would.

Every run gets: the built binaries first on PATH (the CLI finds a
``pulumi-resource-NAME`` and ``pulumi-language-python`` there, whatever version
the SDK asks for: pulumi/pulumi sdk/go/common/workspace/plugins.go, ambient
plugins), a ``PULUMI_HOME`` and a ``file://`` backend of its own, a passphrase
secrets provider, no update check and no plugin download (a missing plugin fails
at once). Standard library only.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.build import bin_dirs

#: What a Pulumi program needs: the CLI, its Python host and both providers.
PROGRAM_COMPONENTS = ("pulumi", "pulumi-language-python", "pulumi-resource-command")
WITH_KUBERNETES = (*PROGRAM_COMPONENTS, "pulumi-resource-kubernetes")


#: The PR workflow's preview and the lab's (relative to the project: the pack
#: is linked into the lab's shadow project): one command, checked in tests.
PREVIEW = ("preview", "--policy-pack", "policies", "--diff")


class PulumiError(Exception):
    def __init__(self, argv: Sequence[str], proc: subprocess.CompletedProcess[str]) -> None:
        self.argv = list(argv)
        self.proc = proc
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        super().__init__(f"`pulumi {' '.join(argv)}` failed (exit {proc.returncode}):\n{tail}")


@dataclass
class Pulumi:
    project: Path
    """The folder with Pulumi.yaml."""
    state: Path
    """PULUMI_HOME and the file backend live under it."""
    passphrase: str
    env_extra: dict[str, str] = field(default_factory=dict)
    components: Sequence[str] = WITH_KUBERNETES

    def env(self) -> dict[str, str]:
        home = self.state / "home"
        backend = self.state / "backend"
        home.mkdir(parents=True, exist_ok=True)
        backend.mkdir(parents=True, exist_ok=True)
        path = ":".join(str(d) for d in bin_dirs(self.components))
        env = {
            k: v
            for k, v in os.environ.items()
            # The caller's own Pulumi settings never leak into a run.
            if not k.startswith("PULUMI_") and k not in ("KUBECONFIG",)
        }
        env.update(
            {
                "PATH": f"{path}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "PULUMI_HOME": str(home),
                "PULUMI_BACKEND_URL": f"file://{backend}",
                "PULUMI_CONFIG_PASSPHRASE": self.passphrase,
                "PULUMI_SKIP_UPDATE_CHECK": "true",
                "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
                "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",
                "PULUMI_SKIP_CONFIRMATIONS": "true",
                # `up --event-log FILE` exists only with this set (pulumi/pulumi
                # pkg/cmd/pulumi/operations/up.go:1023-1027, v3.274.1), as the
                # Automation API sets it.
                "PULUMI_DEBUG_COMMANDS": "true",
            }
        )
        env.update(self.env_extra)
        return env

    def run(
        self,
        *args: str,
        stack: str | None = None,
        check: bool = True,
        timeout: float = 900,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv = [*args, "--non-interactive", "--color", "never"]
        if stack is not None:
            argv += ["--stack", stack]
        proc = subprocess.run(
            ["pulumi", *argv],
            cwd=self.project,
            env=self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise PulumiError(argv, proc)
        return proc

    def stack_exists(self, stack: str) -> bool:
        out = self.run("stack", "ls", "--json").stdout
        return any(s.get("name") == stack for s in json.loads(out or "[]"))

    def select(self, stack: str) -> None:
        if not self.stack_exists(stack):
            self.run("stack", "init", stack)

    def export(self, stack: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.run("stack", "export", stack=stack).stdout)
        return data

    def outputs(self, stack: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            self.run("stack", "output", "--json", "--show-secrets", stack=stack).stdout
        )
        return data


def events(path: Path) -> Iterator[dict[str, Any]]:
    """The engine's event log (``--event-log FILE``): one JSON object a line."""
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def resources(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The resources of a ``pulumi stack export``."""
    res: list[dict[str, Any]] = state.get("deployment", {}).get("resources") or []
    return res
