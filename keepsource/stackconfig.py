"""A stack's config for ``render`` and ``verify``, as ``pulumi up`` would see it.

With a Pulumi CLI on PATH, the config is what ``pulumi config --json --stack
STACK`` prints: the stack file merged with the project's config and the stack's
ESC environments, keys set with ``--path`` as objects (pulumi/pulumi
pkg/cmd/pulumi/config/config.go, ``listConfig``: ``ApplyProjectConfig`` then
one ``configValueJSON`` per key, at v3.259.0). Secrets are never revealed: the
CLI elides a secret's value unless ``--show-secrets`` is given, which is never
passed here. A secret key is taken as secret (``secret_keys``); where it is an
object that holds a secret (``kubernetes`` with its kubeconfig) its shape comes
from the stack file, whose ``{secure: ...}`` values are never decrypted.

Without a CLI, or when the CLI's backend has no such stack (the project's
examples, a fresh checkout), the stack file is read on its own
(:mod:`keepsource.stackfile`), and ``auto`` says so on stderr.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from keepsource.settings import NAMESPACE, PRIVATE_KEY_KEY, ConfigError, Fault, Settings, parse
from keepsource.stackfile import load_config, stack_path

SOURCES = ("auto", "cli", "file")
#: How long ``pulumi config`` may take (it may open ESC environments).
CLI_TIMEOUT_S = 120
_NO_STACK = re.compile(r"no stack named|stack .* not found|could not find stack", re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class CliUnavailableError(ConfigError):
    """The CLI could not list the stack's config (no such stack in its backend,
    not logged in, a timeout): ``auto`` reads the stack file instead."""


def _cli_message(stderr: str) -> str:
    """The CLI's error, one line, printable, bounded."""
    lines = [ln.strip() for ln in _CONTROL.sub("", stderr).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith("error:")]
    text = (errors or lines or ["(no message)"])[0]
    return text.removeprefix("error:").strip()[:300]


def cli_config(stack: str, root: Path, pulumi: str) -> tuple[dict[str, Any], set[str]]:
    """``(config, secret keys)`` from the CLI. CliUnavailableError when the CLI
    cannot list it (its message named); ConfigError for a listing that cannot
    be read as keepsource's config."""
    stack_path(stack, root)  # the stack's name is checked before it reaches a command line
    argv = [pulumi, "config", "--json", "--stack", stack, "--cwd", str(root)]
    env = {**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"}
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CliUnavailableError(
            [Fault("stack", f"`pulumi config --json` gave no answer in {CLI_TIMEOUT_S} s")]
        ) from None
    if done.returncode != 0:
        message = _cli_message(done.stderr)
        if _NO_STACK.search(message):
            message = f"its backend has no stack {stack} ({message})"
        raise CliUnavailableError(
            [Fault("stack", f"`pulumi config --json --stack {stack}` failed: {message}")]
        )
    try:
        listed = json.loads(done.stdout or "{}")
    except json.JSONDecodeError:
        raise ConfigError(
            [Fault("stack", "`pulumi config --json` printed something that is not JSON")]
        ) from None
    if not isinstance(listed, dict):
        raise ConfigError([Fault("stack", "`pulumi config --json` printed no object")])
    return _from_listing(listed, stack, root)


def _from_listing(
    listed: dict[str, Any], stack: str, root: Path
) -> tuple[dict[str, Any], set[str]]:
    """The CLI's ``configValueJSON`` entries as a flat config map."""
    config: dict[str, Any] = {}
    secrets: set[str] = set()
    faults: list[Fault] = []
    file_config: dict[str, Any] | None = None
    for key, entry in listed.items():
        if not isinstance(entry, dict):
            faults.append(Fault(key, "`pulumi config --json` gave no entry for it"))
            continue
        if entry.get("secret"):
            secrets.add(key)
            if key == f"{NAMESPACE}:{PRIVATE_KEY_KEY}" or not key.startswith(f"{NAMESPACE}:"):
                config[key] = "(secret, held by the Pulumi CLI)"
                continue
            if file_config is None:
                file_config = _file_config(stack, root)
            if key in file_config:
                config[key] = file_config[key]
            else:
                faults.append(
                    Fault(
                        key,
                        "is secret in the CLI's view (from an ESC environment?) and not in "
                        "the stack file: its value is never revealed here; set it in the "
                        "stack file, or use --config-from file",
                    )
                )
        elif "objectValue" in entry:
            config[key] = entry["objectValue"]
        elif isinstance(entry.get("value"), str):
            config[key] = entry["value"]
        else:
            faults.append(Fault(key, "`pulumi config --json` gave no value for it"))
    if faults:
        raise ConfigError(faults)
    return config, secrets


def _file_config(stack: str, root: Path) -> dict[str, Any]:
    try:
        return load_config(stack, root)
    except ConfigError:
        return {}


def load_from(stack: str, root: Path, source: str = "auto") -> tuple[Settings, str]:
    """Settings of ``stack`` from ``source`` (``cli``, ``file``, or ``auto``: the
    CLI when it is on PATH and its backend has the stack, else the file), and
    where the config was read (for the operator)."""
    if source not in SOURCES:
        raise ConfigError([Fault("--config-from", f"is one of {', '.join(SOURCES)}")])
    if source != "file":
        pulumi = shutil.which("pulumi")
        if pulumi is None and source == "cli":
            raise ConfigError([Fault("--config-from", "cli: no `pulumi` on PATH")])
        if pulumi is not None:
            try:
                config, secrets = cli_config(stack, root, pulumi)
            except CliUnavailableError as error:
                if source == "cli":
                    raise
                print(
                    f"note: {error.faults[0].reason}; reading {stack_path(stack, root).name} alone",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                return parse(config, secrets), f"`pulumi config --stack {stack}`"
    return parse(load_config(stack, root)), stack_path(stack, root).name
