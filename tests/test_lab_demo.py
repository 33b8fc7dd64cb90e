"""The README's main job, end to end: `lab/lab demo` (after test_lab.py)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from keepsource.stackfile import PROJECT_ROOT

pytestmark = pytest.mark.lab

# lab/__main__.py: up, 3 fault, 3 during apply, apply, again, verify, reboot,
# verify, 2 after the reboot (worker -> VIP:6443, the host's NAT rule first)
DEMO_ROWS = 14

if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None:
    pytest.skip("the demo needs root and qemu (run `sudo ./run-tests`)", allow_module_level=True)


def test_demo_passes_and_cleans_up() -> None:
    done = subprocess.run(
        [str(PROJECT_ROOT / "lab" / "lab"), "demo"],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert f"demo: {DEMO_ROWS} passed, 0 failed" in done.stdout
    assert "host01 -> VIP:6443 answered throughout" in done.stdout
    assert "after reboot: worker01 -> VIP:6443 answers" in done.stdout
    left = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert "ks-" not in left
