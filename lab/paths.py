"""Where the lab keeps its files (ignored by git)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
#: The lab's shell scripts (shellcheck runs on each: tests/test_lab_units.py).
FILES = Path(__file__).resolve().parent / "files"
STATE = Path(os.environ.get("KEEPSOURCE_LAB_DIR", PROJECT / ".lab"))
CACHE = Path(os.environ.get("KEEPSOURCE_LAB_CACHE", STATE / "cache"))
#: Built images outside any checkout, one folder per recipe (image.link_shared_cache):
#: ``.lab/cache`` is a link to the current recipe's folder.
SHARED_CACHE = Path(os.environ.get("KEEPSOURCE_LAB_SHARED_CACHE", "/var/cache/keepsource-lab"))

IMAGE = CACHE / "lb.img"  # the built guest disk (raw ext4), reused across runs
#: The guest kernel uncompressed (ELF with a PVH entry): qemu starts it directly,
#: without firmware loading a bzImage that then decompresses itself under TCG.
KERNEL = CACHE / "vmlinux"
INITRD = CACHE / "initrd.img"
REPO = CACHE / "repo"  # the lab's package repository (keepalived & co.)
IMAGE_STAMP = CACHE / "image.stamp"
KEY = CACHE / "id_ed25519"  # the lab's own SSH key (root on the guest)
HOST_KEY = CACHE / "ssh_host_ed25519_key.pub"  # the guest's host key, pinned

RUN = STATE / "run"  # one lab run: overlay, pids, console
OVERLAY = RUN / "lb-overlay.qcow2"
CONSOLE = RUN / "console.log"
QEMU_PID = RUN / "qemu.pid"
KNOWN_HOSTS = RUN / "known_hosts"
STATE_FILE = RUN / "state.json"
