"""Shared helpers: stack configs as plain dicts, and tools the tests need."""

from __future__ import annotations

import copy
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from keepsource.stackfile import PROJECT_ROOT, load_config, stacks

# The policy pack's folder is what Pulumi puts on sys.path for the pack.
sys.path.insert(0, str(PROJECT_ROOT / "policies"))

ALL_STACKS = stacks()


def dev_config() -> dict[str, Any]:
    return copy.deepcopy(load_config("dev"))


def require_tool(name: str) -> str:
    """The path of a tool the test needs; on a machine without it the test
    fails (CI installs every tool), unless KEEPSOURCE_ALLOW_MISSING_TOOLS is set."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{name} is not installed: run .ci/run, which installs it")
    return path


@pytest.fixture
def project_root() -> Path:
    return PROJECT_ROOT
