"""The LB guests under QEMU (software emulation), reached over SSH on 127.0.0.1.

Every function takes the guest (lab/layout.py ``Guest``); without one it means
the single layout's guest ``lb`` (127.0.0.1:2222), as before the pair."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keepsource import transport
from lab import image, layout, net, paths
from lab.layout import Guest
from lab.log import log


def single() -> Guest:
    """The single layout's guest, from Pulumi.local.yaml."""
    return layout.guests(layout.SINGLE)[0]


def port_free(port: int) -> bool:
    """Whether qemu can listen on 127.0.0.1:``port``: bound the way qemu's
    forwarder binds (SO_REUSEADDR), so the TIME-WAIT ends of a guest's last
    SSH connections (the banner polls) do not count as taken; a listener does."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _mux_dir(run_dir: Path) -> Path:
    """One SSH connection per guest shared by the lab's own commands (ssh's
    ControlMaster): a new connection costs ~0.8 s under TCG, a session on a
    shared one ~0.1 s. Never used for keepsource's steps (the engine's
    command provider opens its own connection per command). A deep
    checkout gets none (the socket path would be too long)."""
    control = run_dir / "mux"
    control.mkdir(mode=0o700, parents=True, exist_ok=True)
    return control


def ssh_options(
    *,
    batch: bool = True,
    port: int | None = None,
    user: str = "root",
    host: str = "127.0.0.1",
    mux: bool = False,
    run_dir: Path | None = None,
    cache: Path | None = None,
) -> transport.SshOptions:
    """ssh to a guest with the lab's key and its pinned host key (one image:
    every guest has the same host key). One known_hosts file per endpoint, so
    sessions to both guests at once never see each other's file half-written.
    ``mux``: share one connection per guest (see :func:`_mux_dir`). ``run_dir``:
    where the known_hosts files and the shared connections' sockets go
    (default: ``paths.RUN``, the lab run's folder); ``cache``: where the lab's
    key and the guest's host key are (default: ``paths.CACHE``, the image's)."""
    port = single().ssh_port if port is None else port
    run_dir = paths.RUN if run_dir is None else run_dir
    cache = paths.CACHE if cache is None else cache
    run_dir.mkdir(parents=True, exist_ok=True)
    key = (cache / paths.HOST_KEY.name).read_text().split()
    known = run_dir / f"known_hosts.{host}.{port}"
    tmp = known.with_suffix(f".{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(f"[{host}]:{port} {key[0]} {key[1]}\n")
    tmp.replace(known)
    return transport.SshOptions(
        user,
        host,
        port,
        identity=str(cache / paths.KEY.name),
        known_hosts=known,
        batch=batch,
        connect_timeout=5,
        server_alive=(5, 3),
        control_dir=_mux_dir(run_dir) if mux else None,
        control_persist=60,
    )


def ssh_argv(
    *,
    batch: bool = True,
    port: int | None = None,
    mux: bool = False,
    run_dir: Path | None = None,
    cache: Path | None = None,
) -> list[str]:
    """The ssh argv of :func:`ssh_options` as root (the remote command goes after)."""
    options = ssh_options(batch=batch, port=port, mux=mux, run_dir=run_dir, cache=cache)
    return transport.ssh_argv(options)


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


def script(name: str, *args: str) -> str:
    """A command line that runs the lab's script ``lab/files/<name>.sh`` on a
    guest with ``args`` (the script's text travels on the command line, so its
    stdin stays the caller's)."""
    text = (paths.FILES / f"{name}.sh").read_text()
    return shlex.join(["bash", "-c", text, name, *args])


def close_shared_connection(lb: Guest | None = None) -> None:
    """End the guest's shared connection: once its qemu is stopped, and before
    it is told to reboot (see :func:`reboot`)."""
    transport.close_shared(ssh_options(port=(lb or single()).ssh_port, mux=True))


def ssh_banner(port: int, timeout: float = 1.0) -> bool:
    """Whether an SSH server answers on 127.0.0.1:``port`` (its version line).
    qemu's user network accepts the host's side of a forwarded port before
    the guest listens, so only the banner tells; a cheap poll where a whole
    ssh login would cost ~1 s under TCG and hang while the guest has no
    address yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            return conn.recv(8).startswith(b"SSH-")
    except OSError:
        return False


#: How often a booting guest is asked for its SSH banner.
POLL_S = 0.2


def progress(lb: Guest | None = None, qmp: Path | None = None) -> int | None:
    """What a booting guest has done so far, to tell a slow boot from a stalled
    one: its disk's read and write operations (QMP ``query-blockstats``), or
    None when qemu does not answer. A boot reads its disk from the initramfs on
    (each program's first start does), so a guest whose disk stays still for
    long has stopped, however slowly the host runs it. The console is not
    counted: under ``quiet`` it stays empty until the login prompt, and a stuck
    kernel keeps printing there (RCU stall warnings). ``qmp``: qemu's socket
    (default: the guest's)."""
    g = lb or single()
    try:
        stats = _qmp(g, "query-blockstats", timeout=5, socket_path=qmp)
    except (OSError, SystemExit, ValueError):
        return None
    ops = 0
    for device in stats if isinstance(stats, list) else []:
        counters = device.get("stats", {}) if isinstance(device, dict) else {}
        ops += int(counters.get("rd_operations", 0)) + int(counters.get("wr_operations", 0))
    return ops


#: How often a booting guest's progress (its disk) is sampled.
PROGRESS_S = 2.0


def wait_ssh(
    timeout: float = 180,
    lb: Guest | None = None,
    quiet_s: float | None = None,
    progress_of: Callable[[Guest], int | None] = progress,
    sample_s: float = PROGRESS_S,
) -> float:
    """Seconds until the guest answered `true` over SSH: its banner polled
    every ``POLL_S`` (at most ``timeout``), then one login. With ``quiet_s``
    the wait also ends, as a stall, once the guest's disk stayed still
    (:func:`progress`, sampled every ``sample_s``) for that long; a sample
    qemu did not answer is no news."""
    g = lb or single()
    start = time.monotonic()
    shown = 0
    seen, moved, sampled = None, start, start
    if quiet_s is not None:
        seen = progress_of(g)
    for _ in range(int(timeout / POLL_S) + 1):
        now = time.monotonic()
        if now - start >= timeout:
            break
        if quiet_s is not None and now - sampled >= sample_s:
            sampled = now
            latest = progress_of(g)
            if latest is not None and latest != seen:
                seen, moved = latest, now
            elif now - moved >= quiet_s:
                raise SystemExit(
                    f"lab: no SSH to the guest {g.name}, and its disk did not move for"
                    f" {quiet_s:.0f} s ({now - start:.0f} s into the boot); console tail:\n"
                    f"{console_tail(2000, lb=g)}"
                )
        if ssh_banner(g.ssh_port):
            with contextlib.suppress(subprocess.TimeoutExpired):
                if ssh("true", timeout=10, lb=g).returncode == 0:
                    return time.monotonic() - start
        elapsed = time.monotonic() - start
        if elapsed - shown >= 10:
            shown = int(elapsed)
            lines = console_tail(400, lb=g).strip().splitlines()
            last = lines[-1][:80] if lines else "-"
            disk = "" if quiet_s is None else f"; disk operations {seen}"
            log(f"waiting for SSH to {g.name}: {elapsed:.0f} s; console: {last}{disk}")
        time.sleep(POLL_S)
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
        # No default devices (VGA, floppy, CD-ROM, parallel port: each a driver
        # for udev to load under TCG), qemu's minimal firmware instead of
        # SeaBIOS, no NIC boot ROMs; the kernel starts at its PVH entry.
        "-nodefaults",
        "-bios",
        "qboot.rom",
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
        layout.kernel_cmdline(g),
        "-drive",
        f"file={g.overlay},if=virtio,format=qcow2",
        "-netdev",
        f"user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:{g.ssh_port}-:22",
        "-device",
        f"virtio-net-pci,netdev=mgmt,mac={macs['mgmt']},romfile=",
        "-netdev",
        f"tap,id=ext,ifname={taps['ext']},script=no,downscript=no",
        "-device",
        f"virtio-net-pci,netdev=ext,mac={macs[layout.EXT_IF]},romfile=",
        "-netdev",
        f"tap,id=int,ifname={taps['int']},script=no,downscript=no",
        "-device",
        f"virtio-net-pci,netdev=int,mac={macs[layout.INT_IF]},romfile=",
        "-display",
        "none",
        "-monitor",
        "none",
        "-qmp",
        f"unix:{g.qmp},server=on,wait=off",
        "-serial",
        f"file:{g.console}",
        "-no-reboot",
        "-daemonize",
        "-pidfile",
        str(g.pidfile),
    ]


def _qmp(
    g: Guest,
    execute: str,
    timeout: float = 300,
    what: str = "",
    socket_path: Path | None = None,
    arguments: dict[str, str] | None = None,
) -> object:
    """One QMP command on the guest's qemu; its ``return`` value. ``what``: the
    command as errors name it (default ``execute``); ``socket_path``: qemu's
    QMP socket (default: the guest's)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path or g.qmp))
        f = sock.makefile("rw")

        def ask(execute: str, **arguments: str) -> dict[str, object]:
            f.write(json.dumps({"execute": execute, "arguments": arguments}) + "\n")
            f.flush()
            for _ in range(1000):  # skip asynchronous events (STOP, RESUME, ...)
                reply: dict[str, object] = json.loads(f.readline() or "{}")
                if "return" in reply or "error" in reply or not reply:
                    return reply
            raise SystemExit(f"lab: qemu's QMP gave no answer to {execute}")

        f.readline()  # the greeting
        ask("qmp_capabilities")
        reply = ask(execute, **(arguments or {}))
    if "error" in reply or "return" not in reply:
        raise SystemExit(f"lab: qemu refused {what or execute}: {reply.get('error', reply)}")
    return reply["return"]


def _hmp(g: Guest, command: str, timeout: float = 300) -> str:
    """One human-monitor command through the guest's QMP socket; its output."""
    line = {"command-line": command}
    return str(_qmp(g, "human-monitor-command", timeout, repr(command), arguments=line))


#: The internal snapshot of a guest taken right after its first boot: the
#: seed's fault state, before anything of keepsource ran.
FAULT_SNAPSHOT = "fault"


def save_state(lb: Guest | None = None, name: str = FAULT_SNAPSHOT) -> float:
    """An internal snapshot of the running guest (its RAM and disk, in its own
    qcow2 overlay; the image is never written). Seconds it took."""
    g = lb or single()
    start = time.monotonic()
    said = _hmp(g, f"savevm {name}")
    if said.strip():
        raise SystemExit(f"lab: savevm {name} on {g.name}: {said.strip()}")
    return time.monotonic() - start


def has_state(lb: Guest | None = None, name: str = FAULT_SNAPSHOT) -> bool:
    g = lb or single()
    return qemu_pid(g) is not None and any(
        line.split()[1:2] == [name] for line in _hmp(g, "info snapshots").splitlines()
    )


def restore_state(lb: Guest | None = None, name: str = FAULT_SNAPSHOT) -> float:
    """The guest as it was at :func:`save_state` (RAM and disk): seconds until
    it answers SSH again. Its clock is set to this machine's afterwards (it
    resumes at the snapshot's time; apt would find the lab repository's
    index "not valid yet")."""
    g = lb or single()
    start = time.monotonic()
    close_shared_connection(g)
    said = _hmp(g, f"loadvm {name}")
    if said.strip():
        raise SystemExit(f"lab: loadvm {name} on {g.name}: {said.strip()}")
    wait_ssh(60, lb=g)
    ssh(f"date -u -s @{time.time():.3f} >/dev/null", lb=g)
    return time.monotonic() - start


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


#: A boot with no SSH whose disk stayed still this long is taken as
#: stalled. Under TCG on a busy 2-core host a guest's kernel can stall (seen in
#: CI: RCU stall warnings on the console, no SSH after 240 s) where a boot takes
#: 15-30 s (docs/lab.md, "The guest's boot"); a boot slowed by a loaded host
#: keeps moving (seen: two guests beside a third took over 90 s each).
STALL_S = 60.0
#: A boot that keeps moving but has no SSH after this long fails all the same.
BOOT_LIMIT_S = 300.0
#: Boots per start: a stalled one is shown, killed and started once more.
BOOT_TRIES = 2
#: The guest's own shutdown (``systemctl reboot``) ends its qemu (``-no-reboot``)
#: well within this; the guest's units stop within 10 s each (image.py).
SHUTDOWN_S = 60.0


@dataclass(frozen=True)
class Machine:
    """What :func:`boot` and :func:`reboot` do to a guest's qemu and ask of the
    guest: this module's functions (:func:`qemu`); tests give stand-ins."""

    start: Callable[..., Any]
    stop: Callable[..., bool]
    wait_ssh: Callable[..., float]
    console_tail: Callable[..., str]
    ssh: Callable[..., subprocess.CompletedProcess[str]]
    boot_id: Callable[..., str]
    qemu_pid: Callable[..., int | None]
    close_shared_connection: Callable[..., None]


def qemu() -> Machine:
    """The guests as they are: qemu processes reached over SSH."""
    return Machine(
        start, stop, wait_ssh, console_tail, ssh, boot_id, qemu_pid, close_shared_connection
    )


def boot(
    lb: Guest | None = None,
    fresh: bool = True,
    stall_s: float = STALL_S,
    tries: int = BOOT_TRIES,
    started: bool = False,
    m: Machine | None = None,
) -> float:
    """Start a guest and wait until it answers SSH; seconds it took. A boot with
    no SSH whose disk stayed still for ``stall_s`` (or with no SSH
    after ``BOOT_LIMIT_S``) is stalled: its console's last lines are shown, its
    qemu is killed and it boots again on the same disk, at most ``tries`` boots;
    the last failure carries the console's tail. Every boot of the lab (``up``,
    ``reboot``, ``start-lb``, the pair's guests) goes through here. ``started``:
    its qemu was started already (the pair's guests are started one after the
    other, then waited for at once)."""
    g, m = lb or single(), m or qemu()
    begin = time.monotonic()
    for attempt in range(1, tries + 1):
        if attempt > 1 or not started:
            m.start(g, fresh=fresh)
        try:
            m.wait_ssh(BOOT_LIMIT_S, lb=g, quiet_s=stall_s)
            return time.monotonic() - begin
        except SystemExit as error:
            if attempt == tries:
                last = str(error).removeprefix("lab: ")
                raise SystemExit(
                    f"lab: the guest {g.name} did not boot in {tries} tries; the last one: {last}"
                ) from None
            why = str(error).split("; console tail:", 1)[0].removeprefix("lab: ")
            log(
                f"{g.name}: no boot ({why}), booting it again;"
                f" console's last lines:\n{m.console_tail(600, lb=g).rstrip()}"
            )
            m.stop(g, hard=True)
    raise AssertionError("unreachable")  # pragma: no cover


def reboot(
    lb: Guest | None = None, shutdown_s: float = SHUTDOWN_S, m: Machine | None = None
) -> float:
    """Reboot a guest the way its operator would (``systemctl reboot``: the
    guest's own shutdown); seconds until SSH answers on the new boot. qemu runs
    with ``-no-reboot``, so the guest's reset ends its qemu and the lab powers
    it on at once on the same disk (a cold start: under TCG a warm reset made
    the next kernel 1.5-3x slower, docs/lab.md). A shutdown that does not end within
    ``shutdown_s`` is shown and cut (SIGKILL, as a power cut); the boot then
    goes through :func:`boot` (stalls detected, one retry)."""
    g, m = lb or single(), m or qemu()
    before = m.boot_id(g)
    if not before:
        raise SystemExit(f"lab: the guest {g.name} does not answer SSH; nothing to reboot")
    begin = time.monotonic()
    m.close_shared_connection(g)
    # No shared connection until the guest is back: one opened to the old
    # boot while it shuts down would hold every poll until its keepalives
    # give up.
    # The connection can die with the guest's sshd: its qemu's end tells.
    with contextlib.suppress(subprocess.TimeoutExpired):
        m.ssh("systemctl reboot", timeout=20, lb=g, shared=False)
    while m.qemu_pid(g) is not None and time.monotonic() - begin < shutdown_s:
        time.sleep(0.2)
    if m.qemu_pid(g) is not None:
        log(
            f"{g.name}: its shutdown did not end within {shutdown_s:.0f} s; cutting its power;"
            f" console's last lines:\n{m.console_tail(600, lb=g).rstrip()}"
        )
    m.stop(g, hard=True)  # an ended qemu: just its pidfile
    boot(g, fresh=False, m=m)
    after = m.boot_id(g)
    if after in ("", before):
        raise SystemExit(f"lab: the guest {g.name} answers, but not from a new boot")
    return time.monotonic() - begin


def clean_run_dir() -> None:
    if paths.RUN.exists():
        shutil.rmtree(paths.RUN)


def console_tail(chars: int = 1500, lb: Guest | None = None) -> str:
    path: Path = (lb or single()).console
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""
