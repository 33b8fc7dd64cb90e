"""The LB guests under QEMU (software emulation), reached over SSH on 127.0.0.1.

Every function takes the guest (lab/plan.py ``Guest``); without one it means
the single layout's guest ``lb`` (127.0.0.1:2222), as before the pair."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from keepsource.verify import shared_connection
from lab import image, net, paths, plan
from lab.plan import Guest


def single() -> Guest:
    """The single layout's guest, from Pulumi.local.yaml."""
    return plan.guests(plan.SINGLE)[0]


def log(msg: str) -> None:
    print(f"[lab] {msg}", flush=True)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _mux_options() -> list[str]:
    """One SSH connection per guest shared by the lab's own commands (ssh's
    ControlMaster): a new connection costs ~0.8 s under TCG, a session on a
    shared one ~0.1 s. Never used for keepsource's steps (the replay driver
    opens one connection per command, as pulumi-command does). A deep
    checkout gets none (the socket path would be too long)."""
    control = paths.RUN / "mux"
    control.mkdir(mode=0o700, parents=True, exist_ok=True)
    return shared_connection(control, persist_s=60)


def ssh_argv(
    *,
    batch: bool = True,
    port: int | None = None,
    user: str = "root",
    host: str = "127.0.0.1",
    mux: bool = False,
) -> list[str]:
    """ssh to a guest with the lab's key and its pinned host key (one image:
    every guest has the same host key). One known_hosts file per endpoint, so
    sessions to both guests at once never see each other's file half-written.
    ``mux``: share one connection per guest (see :func:`_mux_options`)."""
    port = single().ssh_port if port is None else port
    paths.RUN.mkdir(parents=True, exist_ok=True)
    key = paths.HOST_KEY.read_text().split()
    known = paths.RUN / f"known_hosts.{host}.{port}"
    tmp = known.with_suffix(f".{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(f"[{host}]:{port} {key[0]} {key[1]}\n")
    tmp.replace(known)
    return [
        "ssh",
        *(_mux_options() if mux else []),
        "-p",
        str(port),
        "-i",
        str(paths.KEY),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={known}",
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
    command: str,
    stdin: str | None = None,
    timeout: float = 120,
    check: bool = False,
    lb: Guest | None = None,
    shared: bool = True,
) -> subprocess.CompletedProcess[str]:
    """A command on a guest; ``shared``: over its shared connection."""
    port = (lb or single()).ssh_port
    return subprocess.run(
        [*ssh_argv(port=port, mux=shared), command],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def close_shared_connection(lb: Guest | None = None) -> None:
    """End the guest's shared connection: once its qemu is stopped, and before
    it is told to reboot (see :func:`reboot`)."""
    argv = ssh_argv(port=(lb or single()).ssh_port, mux=True)
    if "ControlMaster=auto" in argv:
        subprocess.run(
            [*argv[:-1], "-O", "exit", argv[-1]], capture_output=True, timeout=10, check=False
        )


def wait_ssh(timeout: float = 180, lb: Guest | None = None) -> float:
    """Seconds until the guest answered `true` over SSH."""
    g = lb or single()
    start = time.monotonic()
    shown = 0
    while time.monotonic() - start < timeout:
        try:
            if ssh("true", timeout=10, lb=g).returncode == 0:
                return time.monotonic() - start
        except subprocess.TimeoutExpired:
            pass
        elapsed = time.monotonic() - start
        if elapsed - shown >= 10:
            shown = int(elapsed)
            lines = console_tail(400, lb=g).strip().splitlines()
            last = lines[-1][:80] if lines else "-"
            log(f"waiting for SSH to {g.name}: {elapsed:.0f} s; console: {last}")
        time.sleep(1)
    tail = console_tail(2000, lb=g)
    raise SystemExit(f"lab: no SSH to the guest {g.name} within {timeout} s; console tail:\n{tail}")


def qemu_pid(lb: Guest | None = None, pidfile: Path | None = None) -> int | None:
    try:
        pid = int((pidfile or (lb or single()).pidfile).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def start(lb: Guest | None = None, fresh: bool = True) -> None:
    """Boot a guest. ``fresh``: on a new overlay of the image (``up``); else on
    the guest's own overlay as it was left (``start-lb`` after ``kill-lb``)."""
    g = lb or single()
    if not image.up_to_date():
        raise SystemExit("lab: no guest image; run `lab/lab up` (it builds one)")
    if qemu_pid(g) is not None:
        raise SystemExit(f"lab: the guest {g.name} runs already")
    if not port_free(g.ssh_port):
        raise SystemExit(f"lab: 127.0.0.1:{g.ssh_port} is taken (the guest {g.name}'s SSH)")
    paths.RUN.mkdir(parents=True, exist_ok=True)
    if fresh:
        g.overlay.unlink(missing_ok=True)
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
            str(g.overlay),
        )
    elif not g.overlay.is_file():
        raise SystemExit(f"lab: the guest {g.name} has no disk in this run (lab/lab up first)")
    subprocess.run(qemu_argv(g), check=True, timeout=60)
    net.attach_taps(g.taps)


def qemu_argv(g: Guest) -> list[str]:
    """qemu for one guest: its identity on the kernel command line, its own
    MACs, overlay, console and pidfile; management SSH on 127.0.0.1 only."""
    macs, taps = g.macs, g.taps
    return [
        "qemu-system-x86_64",
        "-name",
        "keepsource-lb" if g.name == "lb" else f"keepsource-{g.name}",
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
        plan.kernel_cmdline(g),
        "-drive",
        f"file={g.overlay},if=virtio,format=qcow2",
        "-netdev",
        f"user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:{g.ssh_port}-:22",
        "-device",
        f"virtio-net-pci,netdev=mgmt,mac={macs['mgmt']}",
        "-netdev",
        f"tap,id=ext,ifname={taps['ext']},script=no,downscript=no",
        "-device",
        f"virtio-net-pci,netdev=ext,mac={macs[plan.EXT_IF]}",
        "-netdev",
        f"tap,id=int,ifname={taps['int']},script=no,downscript=no",
        "-device",
        f"virtio-net-pci,netdev=int,mac={macs[plan.INT_IF]}",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{g.console}",
        "-daemonize",
        "-pidfile",
        str(g.pidfile),
    ]


def stop(lb: Guest | None = None, hard: bool = False, pidfile: Path | None = None) -> bool:
    """Stop a guest's qemu (the guest gets no shutdown either way; ``hard``:
    SIGKILL at once, a power cut). False when it was not running."""
    named = pidfile is None  # the guest's own pidfile: its shared connection is known
    pidfile = pidfile or (lb or single()).pidfile
    pid = qemu_pid(pidfile=pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
    if named:
        close_shared_connection(lb)
    for _ in range(50):
        if qemu_pid(pidfile=pidfile) is None:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    pidfile.unlink(missing_ok=True)
    return True


def boot_id(lb: Guest | None = None) -> str:
    return ssh("cat /proc/sys/kernel/random/boot_id", timeout=20, lb=lb).stdout.strip()


def reboot(timeout: float = 240, lb: Guest | None = None) -> float:
    """Reboot the guest; seconds until SSH answers again."""
    before = boot_id(lb)
    start = time.monotonic()
    close_shared_connection(lb)
    # No shared connection until the guest is back: one opened to the old
    # boot while it shuts down would hold every poll until its keepalives
    # give up; each poll opens its own connection, as before sharing.
    ssh("systemctl reboot", timeout=20, lb=lb, shared=False)
    while time.monotonic() - start < timeout:
        time.sleep(1)
        try:
            done = ssh("cat /proc/sys/kernel/random/boot_id", timeout=10, lb=lb, shared=False)
        except subprocess.TimeoutExpired:
            continue
        if done.returncode == 0 and done.stdout.strip() not in ("", before):
            return time.monotonic() - start
    raise SystemExit(f"lab: the guest did not come back within {timeout} s")


def clean_run_dir() -> None:
    if paths.RUN.exists():
        shutil.rmtree(paths.RUN)


def console_tail(chars: int = 1500, lb: Guest | None = None) -> str:
    path: Path = (lb or single()).console
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""
