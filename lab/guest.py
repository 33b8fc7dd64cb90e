"""The LB guest under QEMU (software emulation), reached over SSH on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from lab import image, net, paths

SSH_PORT = int(os.environ.get("KEEPSOURCE_LAB_SSH_PORT", "2222"))


def log(msg: str) -> None:
    print(f"[lab] {msg}", flush=True)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ssh_argv(
    *, batch: bool = True, port: int = SSH_PORT, user: str = "root", host: str = "127.0.0.1"
) -> list[str]:
    """ssh to the guest with the lab's key and its pinned host key."""
    paths.RUN.mkdir(parents=True, exist_ok=True)
    key = paths.HOST_KEY.read_text().split()
    paths.KNOWN_HOSTS.write_text(f"[{host}]:{port} {key[0]} {key[1]}\n")
    return [
        "ssh",
        "-p",
        str(port),
        "-i",
        str(paths.KEY),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={paths.KNOWN_HOSTS}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "ServerAliveCountMax=3",
        "-o",
        "LogLevel=ERROR",
        "-o",
        f"BatchMode={'yes' if batch else 'no'}",
        f"{user}@{host}",
    ]


def ssh(
    command: str, stdin: str | None = None, timeout: float = 120, check: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ssh_argv(), command],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def wait_ssh(timeout: float = 180) -> float:
    """Seconds until the guest answered `true` over SSH."""
    start = time.monotonic()
    shown = 0
    while time.monotonic() - start < timeout:
        try:
            if ssh("true", timeout=10).returncode == 0:
                return time.monotonic() - start
        except subprocess.TimeoutExpired:
            pass
        elapsed = time.monotonic() - start
        if elapsed - shown >= 10:
            shown = int(elapsed)
            lines = console_tail(400).strip().splitlines()
            log(f"waiting for SSH: {elapsed:.0f} s; console: {lines[-1][:80] if lines else '-'}")
        time.sleep(1)
    tail = paths.CONSOLE.read_text(errors="replace")[-2000:] if paths.CONSOLE.exists() else ""
    raise SystemExit(f"lab: no SSH to the guest within {timeout} s; console tail:\n{tail}")


def qemu_pid() -> int | None:
    try:
        pid = int(paths.QEMU_PID.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def start() -> None:
    if not image.up_to_date():
        raise SystemExit("lab: no guest image; run `lab/lab up` (it builds one)")
    if not port_free(SSH_PORT):
        raise SystemExit(f"lab: 127.0.0.1:{SSH_PORT} is taken (set KEEPSOURCE_LAB_SSH_PORT)")
    paths.RUN.mkdir(parents=True, exist_ok=True)
    paths.OVERLAY.unlink(missing_ok=True)
    net.sh(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        str(paths.IMAGE),
        str(paths.OVERLAY),
    )
    macs = image.MACS
    argv = [
        "qemu-system-x86_64",
        "-name",
        "keepsource-lb",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "512",
        "-kernel",
        str(paths.KERNEL),
        "-initrd",
        str(paths.INITRD),
        "-append",
        "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0 ipv6.disable=1"
        " cryptomgr.notests",
        "-drive",
        f"file={paths.OVERLAY},if=virtio,format=qcow2",
        "-netdev",
        f"user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:{SSH_PORT}-:22",
        "-device",
        f"virtio-net-pci,netdev=mgmt,mac={macs['mgmt']}",
        "-netdev",
        f"tap,id=ext,ifname={net.TAPS['ext']},script=no,downscript=no",
        "-device",
        f"virtio-net-pci,netdev=ext,mac={macs['lbext']}",
        "-netdev",
        f"tap,id=int,ifname={net.TAPS['int']},script=no,downscript=no",
        "-device",
        f"virtio-net-pci,netdev=int,mac={macs['lbint']}",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{paths.CONSOLE}",
        "-daemonize",
        "-pidfile",
        str(paths.QEMU_PID),
    ]
    subprocess.run(argv, check=True, timeout=60)
    net.attach_taps()


def stop() -> bool:
    pid = qemu_pid()
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if qemu_pid() is None:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    paths.QEMU_PID.unlink(missing_ok=True)
    return True


def reboot(timeout: float = 240) -> float:
    """Reboot the guest; seconds until SSH answers again."""
    boot_id = ssh("cat /proc/sys/kernel/random/boot_id", timeout=20).stdout.strip()
    start = time.monotonic()
    ssh("systemctl reboot", timeout=20)
    while time.monotonic() - start < timeout:
        time.sleep(1)
        try:
            done = ssh("cat /proc/sys/kernel/random/boot_id", timeout=10)
        except subprocess.TimeoutExpired:
            continue
        if done.returncode == 0 and done.stdout.strip() not in ("", boot_id):
            return time.monotonic() - start
    raise SystemExit(f"lab: the guest did not come back within {timeout} s")


def clean_run_dir() -> None:
    if paths.RUN.exists():
        shutil.rmtree(paths.RUN)


def console_tail(chars: int = 1500) -> str:
    path: Path = paths.CONSOLE
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""
