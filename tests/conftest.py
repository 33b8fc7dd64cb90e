"""Shared helpers: stack configs as plain dicts, and tools the tests need."""

from __future__ import annotations

import copy
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

import mockrun
from keepsource.stackfile import PROJECT_ROOT, load_config, stacks

# The policy pack's folder is what Pulumi puts on sys.path for the pack.
sys.path.insert(0, str(PROJECT_ROOT / "policies"))

ALL_STACKS = stacks()

#: A host key standing in for the lab guest's (made when lab/lab builds the
#: image) on machines without a built lab; the local stack pins it by file.
STAND_IN_HOST_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKTuOzGFdWTPP959xeoT/a3iljrlBAbykT5bxtFcXUFi stand-in\n"
)


@pytest.fixture(autouse=True, scope="session")
def lab_host_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project dir the mocked program runs in: the real one when the lab's
    host key file exists, else a stand-in dir holding a key at the same path
    (so every stack runs under mocks on any machine)."""
    relative = load_config("local")["keepsource:lb"]["ssh"]["hostKeyFile"]
    if (PROJECT_ROOT / relative).is_file():
        return PROJECT_ROOT
    stand_in = tmp_path_factory.mktemp("project")
    (stand_in / relative).parent.mkdir(parents=True)
    (stand_in / relative).write_text(STAND_IN_HOST_KEY)
    mockrun.PROJECT_DIR = stand_in
    return stand_in


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


def free_port() -> int:
    """A loopback TCP port nobody listens on (bound once by the OS, then let go)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
