"""Read a stack's settings from ``Pulumi.STACK.yaml`` without the engine."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from keepsource.settings import ConfigError, Fault, Settings, parse

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_STACK = re.compile(r"^[A-Za-z0-9_.-]+$")


def stack_path(stack: str, root: Path = PROJECT_ROOT) -> Path:
    if not _STACK.match(stack):
        raise ConfigError([Fault("stack", f"{stack!r} is not a stack name")])
    return root / f"Pulumi.{stack}.yaml"


def stacks(root: Path = PROJECT_ROOT) -> list[str]:
    """Every stack that has a stack file in the project root."""
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in root.glob("Pulumi.*.yaml"))


def load_config(stack: str, root: Path = PROJECT_ROOT) -> dict[str, Any]:
    path = stack_path(stack, root)
    if not path.is_file():
        raise ConfigError([Fault("stack", f"no stack file {path}")])
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError([Fault(path.name, f"is not valid YAML: {error}")]) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config", {}), dict):
        raise ConfigError([Fault(f"{path.name}:config", "must be a mapping")])
    config = doc.get("config") or {}
    return {str(k): v for k, v in config.items()}


def load(stack: str, root: Path = PROJECT_ROOT) -> Settings:
    """Settings of a stack; secrets (``{secure: ...}``) are accepted, never read."""
    return parse(load_config(stack, root))
