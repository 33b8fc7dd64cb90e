"""Step scripts travel without the kernel's argument-length limit: sshd hands
the command to the login shell as one argument (at most MAX_ARG_STRLEN, 128
KiB on Linux). Run here with the real bash, as sshd runs it (``bash -c
COMMAND``), stdin passed through."""

from __future__ import annotations

import shlex
import subprocess
from typing import Any

import pytest

from keepsource.host import lb_host
from keepsource.render.scripts import ARG_MAX_ONE, INLINE_MAX, Step
from keepsource.settings import ConfigError, parse
from keepsource.stackfile import load_config

#: A script that echoes its stdin's digest and a marker, padded past the limit.
BIG = (
    "set -euo pipefail\n"
    + "".join(f"# padding line {i}: {'x' * 60}\n" for i in range(3000))
    + 'printf "got %s\\n" "$(sha256sum | cut -c1-12)"\n'
    + 'echo "keepsource: big: unchanged"\n'
)


def _as_sshd(command: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_a_script_past_the_limit_runs_and_reads_its_stdin() -> None:
    assert len(BIG.encode()) > ARG_MAX_ONE
    command = Step.command_line(BIG, "big", "root")
    assert len(command.encode()) < INLINE_MAX  # compressed
    done = _as_sshd(command, "keepalived.conf\n")
    want = subprocess.run(
        ["sha256sum"], input="keepalived.conf\n", capture_output=True, text=True, check=True
    ).stdout[:12]
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"got {want}", "keepsource: big: unchanged"]


def test_the_same_script_inline_is_refused_by_the_kernel() -> None:
    """The limit is real: the plain form cannot even be started."""
    with pytest.raises(OSError, match="Argument list too long"):
        subprocess.run(["bash", "-c", BIG], capture_output=True, timeout=60, check=False)


def test_a_damaged_script_runs_nothing() -> None:
    command = Step.command_line(BIG, "big", "root")
    start = command.index("z=") + 2
    damaged = command[: start + 200] + ("A" if command[start + 200] != "A" else "B")
    damaged += command[start + 201 :]
    done = _as_sshd(damaged, "")
    assert done.returncode != 0
    assert "got" not in done.stdout and "arrived damaged" in done.stderr


def test_the_stacks_scripts_stay_readable() -> None:
    """Every shipped stack's steps travel as plain text (reviewable in preview)."""
    s = parse(load_config("local-services"))
    for node in s.lb_nodes:
        for step in lb_host(s, node).steps:
            assert step.script in _unquote(step.command(node.ssh.user))


def _unquote(command: str) -> str:
    return " ".join(shlex.split(command))


def _workers(n: int) -> dict[str, Any]:
    cfg = load_config("dev")
    cfg["keepsource:network"] = dict(cfg["keepsource:network"], internalSubnet="172.16.0.0/16")
    cfg["keepsource:workers"] = [
        {"name": f"w{i}", "address": f"172.16.{i // 250 + 1}.{i % 250 + 1}"} for i in range(n)
    ]
    return cfg


def test_thousands_of_workers_fit_and_the_cutover_runs_its_first_lines() -> None:
    """3,600 workers (the issue's number): every command fits in one argument,
    and the compressed cut-over unpacks, with the real base64 and gzip, to
    exactly its script (run here it would stop this machine's HAProxy: not run)."""
    s = parse(_workers(3600))
    cutover = next(st for st in lb_host(s).steps if st.name == "cutover")
    assert len(cutover.script.encode()) > ARG_MAX_ONE  # inline it could not travel
    command = cutover.command("root")
    assert len(command.encode()) < ARG_MAX_ONE
    unpacked = subprocess.run(
        ["bash", "-c", command.replace("exec /bin/bash <(", "cat <(")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unpacked.stdout == cutover.script


def test_too_many_real_servers_is_one_clear_error() -> None:
    with pytest.raises(ConfigError) as e:
        parse(_workers(20000))
    [fault] = e.value.faults
    assert fault.key == "keepsource:workers"
    assert "MAX_ARG_STRLEN" in fault.reason and "20001 real servers" in fault.reason
