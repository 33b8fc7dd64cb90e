"""The one SSH transport: every OpenSSH client command line keepsource and its
lab run, and the ``sudo -n`` form of a command on the far side.

- :func:`parse_destination`: ``user@host[:port]`` (a jump host, a verify
  client), refused with a :class:`ValueError` whose message the settings'
  validators show as it is.
- :class:`SshOptions` and :func:`ssh_argv`: an ``ssh`` argv, options first,
  then ``--`` and the destination (never read as an option).
- :func:`shared_options`, :func:`exit_argv`, :func:`close_shared`: one
  connection shared by a run's commands (ControlMaster) and its end.
- :func:`as_root`: a command with root's rights for a non-root login.

Nothing here connects anywhere or reads the settings: the settings import it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

#: What a user, host or namespace name may hold: letters, digits and
#: ``._-:%@[]`` (IPv6 literals, zone ids, user@host:port). Nothing a shell
#: reads specially (``;$()`|&<>*?'"\``, spaces): these words reach command
#: lines (ssh's, ``ip netns exec``'s, the commands' descriptions).
_SSH_WORD = re.compile(r"[A-Za-z0-9._:%@\[\]-]+")
_DESTINATION = re.compile(r"[^@\s:]+@[^@\s:]+(:\d{1,5})?")

#: A socket path holds at most 108 bytes; ssh stops with a fatal error beyond.
SOCKET_PATH_MAX = 100


def ssh_word(value: str) -> str:
    """A user or host name as ssh takes it: one word that cannot be read as an
    option (``-oProxyCommand=...`` as a user or host would run a command) and
    holds no shell metacharacter."""
    if any(part.startswith("-") for part in value.split("@")):
        raise ValueError("must not start with '-' (ssh would read it as an option)")
    if any(ch.isspace() for ch in value):
        raise ValueError("must be one word (no space)")
    if not _SSH_WORD.fullmatch(value):
        raise ValueError("may hold only letters, digits and '._-:%@[]' (no shell metacharacter)")
    return value


@dataclass(frozen=True)
class Destination:
    user: str
    host: str
    port: int | None
    """None when the text names none (ssh's default, 22)."""


def parse_destination(text: str) -> Destination:
    """``user@host`` or ``user@host:port``; otherwise ValueError, its message
    a reason ("must look like ...", "has port 0: ...")."""
    if not _DESTINATION.fullmatch(text):
        raise ValueError("must look like user@host or user@host:port")
    user, _, hostport = text.partition("@")
    for part in (user, hostport):
        ssh_word(part)
    host, colon, port = hostport.partition(":")
    if colon and not 1 <= int(port) <= 65535:
        raise ValueError(f"has port {int(port)}: a port is 1-65535")
    return Destination(user, host, int(port) if colon else None)


@dataclass(frozen=True)
class SshOptions:
    """How one ``ssh`` reaches one host. Host keys: checked strictly against
    ``known_hosts`` (ssh's own files when None; only that file with
    ``pinned_only``), never trusted on first use; or, only when asked for by
    name, not checked at all (``accept_any_host_key``)."""

    user: str
    host: str
    port: int | None = None
    """None: no ``-p`` (ssh's default or the user's ssh config)."""
    identity: str | None = None
    """The only key offered (``IdentitiesOnly``); None: ssh's own choice (an agent)."""
    known_hosts: str | Path | None = None
    pinned_only: bool = False
    """No known_hosts file but ``known_hosts`` (no global file)."""
    accept_any_host_key: bool = False
    batch: bool = True
    """Never prompt (a password, a passphrase, an unknown host key)."""
    connect_timeout: int = 5
    server_alive: tuple[int, int] | None = None
    """(ServerAliveInterval s, ServerAliveCountMax): a dead peer ends the session."""
    control_dir: Path | None = None
    """Share one connection per host among commands, its socket in this
    private directory (see :func:`shared_options`)."""
    control_persist: int = 30
    jump: Destination | None = None
    """Through this host: its own ssh (an explicit ``ProxyCommand``) with
    these same options, so its pinned key is checked too (``-J`` does not
    pass ``-o`` options on to the jump)."""

    def __post_init__(self) -> None:
        if self.accept_any_host_key and (self.known_hosts is not None or self.pinned_only):
            raise ValueError("accept_any_host_key goes without a known_hosts file")
        if self.pinned_only and self.known_hosts is None:
            raise ValueError("pinned_only needs the known_hosts file")


def shared_options(control_dir: Path, persist_s: int = 30) -> list[str]:
    """OpenSSH options that share one connection per host among a run's
    commands (ControlMaster): each command would otherwise pay a connection
    setup and key exchange. The sockets live in ``control_dir`` (private to
    the caller; ssh makes each socket 0600). No options (one connection per
    command) when the socket path would be too long: %C is 40 hex digits."""
    if len(str(control_dir)) + len("/") + 40 > SOCKET_PATH_MAX:
        return []
    return [
        "-o",
        "ControlMaster=auto",
        "-o",
        f"ControlPath={control_dir}/%C",
        "-o",
        f"ControlPersist={persist_s}",
    ]


def ssh_argv(o: SshOptions) -> list[str]:
    """The ``ssh`` argv, without the remote command (it goes after)."""
    argv = ["ssh"]
    if o.control_dir is not None:
        argv += shared_options(o.control_dir, o.control_persist)
    argv += ["-o", f"BatchMode={'yes' if o.batch else 'no'}"]
    argv += ["-o", f"ConnectTimeout={o.connect_timeout}", "-o", "LogLevel=ERROR"]
    if o.server_alive is not None:
        interval, count = o.server_alive
        argv += ["-o", f"ServerAliveInterval={interval}", "-o", f"ServerAliveCountMax={count}"]
    if o.accept_any_host_key:
        argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    else:
        argv += ["-o", "StrictHostKeyChecking=yes"]
        if o.known_hosts is not None:
            argv += ["-o", f"UserKnownHostsFile={o.known_hosts}"]
        if o.pinned_only:
            argv += ["-o", "GlobalKnownHostsFile=/dev/null"]
    if o.identity:
        argv += ["-i", o.identity, "-o", "IdentitiesOnly=yes"]
    if o.port is not None:
        argv += ["-p", str(o.port)]
    if o.jump is not None:
        j = o.jump
        proxy = ssh_argv(
            replace(o, user=j.user, host=j.host, port=j.port, jump=None, control_dir=None)
        )
        argv += ["-o", "ProxyCommand=" + shlex.join([*proxy[:-2], "-W", "%h:%p", *proxy[-2:]])]
    # "--": the destination is never read as an option (the settings refuse a
    # leading "-" too; this is defence in depth).
    return [*argv, "--", f"{o.user}@{o.host}"]


def exit_argv(o: SshOptions) -> list[str] | None:
    """The argv that ends the shared connection of ``o`` (``-O exit`` to its
    master); None when ``o`` shares none."""
    if o.control_dir is None or not shared_options(o.control_dir, o.control_persist):
        return None
    argv = ssh_argv(o)
    return [*argv[:-2], "-O", "exit", *argv[-2:]]


def close_shared(o: SshOptions, timeout: float = 10) -> None:
    """End the shared connection of ``o``, if it has one (and it is up)."""
    argv = exit_argv(o)
    if argv is not None:
        subprocess.run(argv, capture_output=True, timeout=timeout, check=False)


def as_root(user: str, argv: Sequence[str]) -> str:
    """The remote command line that runs ``argv`` with root's rights for a
    login as ``user``: as it is for root, else through ``sudo -n`` (sshd gives
    the command no TTY: sudo must never prompt, it fails instead)."""
    line = shlex.join(argv)
    return line if user == "root" else f"sudo -n {line}"
