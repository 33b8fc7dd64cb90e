"""How keepsource reaches the LB host: one model for the program and ``verify``.

The LB is reached as ``lb.ssh.user@lb.ssh.host:port``, optionally through a
jump host, with both host keys pinned (or pinning refused by name with
``lb.ssh.insecureAcceptAnyHostKey``), and commands wrapped in ``sudo -n`` for a
non-root user (no TTY: sudo cannot prompt). ``components/lb.py`` turns a
:class:`Connection` into pulumi-command's ``ConnectionArgs`` (``host_key`` and
``proxy``); :func:`ssh_options` turns the same record into the options of
an OpenSSH client (:mod:`keepsource.transport`) for ``keepsource verify``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from keepsource.settings import ConfigError, Fault, Settings
from keepsource.settings.lb import Ssh, host_key_line
from keepsource.settings.model import LbNode
from keepsource.transport import Destination, SshOptions, as_root, parse_destination
from keepsource.transport import ssh_argv as _ssh_argv

INSECURE_WARNING = (
    "keepsource:lb.ssh.insecureAcceptAnyHostKey is true: the LB's (and the jump host's) "
    "SSH host key is NOT checked; anyone who can intercept the connection gets the "
    "sessions of keepsource:lbPrivateKey. Pin lb.ssh.hostKey (and lb.ssh.jumpHostKey)."
)
HOST_KEY_FILE_KEY = "keepsource:lb.ssh.hostKeyFile"


@dataclass(frozen=True)
class Hop:
    host: str
    port: int
    user: str
    host_key: str | None
    """The pinned OpenSSH public key line; None only when pinning is refused."""

    @property
    def known_hosts_line(self) -> str | None:
        if self.host_key is None:
            return None
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        kind, blob = self.host_key.split()[:2]
        return f"{name} {kind} {blob}"


@dataclass(frozen=True)
class Connection:
    lb: Hop
    jump: Hop | None
    insecure: bool

    @property
    def sudo(self) -> bool:
        return self.lb.user != "root"

    def command(self, shell_command: str) -> str:
        """A shell command as it runs on the LB: through ``sudo -n`` unless root."""
        if not self.sudo:
            return shell_command
        return as_root(self.lb.user, ["/bin/sh", "-c", shell_command])

    def known_hosts(self) -> str:
        lines = [h.known_hosts_line for h in (self.lb, self.jump) if h is not None]
        return "".join(f"{line}\n" for line in lines if line)


def _hop(user_host_port: str, key: str | None) -> Hop:
    d = parse_destination(user_host_port)
    return Hop(host=d.host, port=d.port or 22, user=d.user, host_key=key)


def lb_connection(settings: Settings, node: LbNode | None = None) -> Connection:
    """The connection to an LB host (the only one by default). Its
    ``hostKeyFile`` must have been read (:func:`read_host_key_file`) unless
    pinning is refused."""
    ssh = (node or settings.lb_nodes[0]).ssh
    if not ssh.insecure_accept_any_host_key and ssh.host_key is None:
        raise ConfigError([Fault(HOST_KEY_FILE_KEY, "was not read (keepsource bug)")])
    jump = _hop(ssh.jump_host, ssh.jump_host_key) if ssh.jump_host else None
    return Connection(
        lb=Hop(host=ssh.host, port=ssh.port, user=ssh.user, host_key=ssh.host_key),
        jump=jump,
        insecure=ssh.insecure_accept_any_host_key,
    )


def _read_key(ssh: Ssh, at: str, root: Path) -> Ssh:
    if ssh.host_key_file is None:
        return ssh
    where = f"keepsource:{at}.hostKeyFile"
    path = root / ssh.host_key_file
    try:
        lines = path.read_bytes().decode("ascii").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "is not ASCII"
        raise ConfigError([Fault(where, f"cannot read {ssh.host_key_file}: {reason}")]) from None
    try:
        key = host_key_line(lines[0].strip() if lines else "")
    except ValueError as error:
        raise ConfigError([Fault(where, f"{ssh.host_key_file} {error}")]) from None
    return ssh.model_copy(update={"host_key": key, "host_key_file": None})


def read_host_key_file(settings: Settings, root: Path) -> Settings:
    """Settings whose ``hostKey`` holds the key of ``hostKeyFile`` for the LB
    host (or each of a pair), a path relative to ``root``, the project root:
    the program's working directory under the Pulumi CLI. Only the key
    reaches the state, not the path."""
    lb = settings.lb
    if lb.ssh is not None:
        lb = lb.model_copy(update={"ssh": _read_key(lb.ssh, "lb.ssh", root)})
    hosts = tuple(
        h.model_copy(update={"ssh": _read_key(h.ssh, f"lb.hosts[{i}].ssh", root)})
        for i, h in enumerate(lb.hosts)
    )
    return settings.model_copy(update={"lb": lb.model_copy(update={"hosts": hosts})})


def ssh_options(
    conn: Connection,
    known_hosts: Path | None,
    identity: str | None,
    control_dir: Path | None = None,
) -> SshOptions:
    """The OpenSSH client options for this connection (the remote command
    goes after the argv). ``known_hosts`` is a file holding
    :meth:`Connection.known_hosts` (None only when pinning is refused); the
    jump host's ssh checks its pinned key against it too. ``control_dir``:
    one connection shared among commands."""
    jump = conn.jump
    return SshOptions(
        user=conn.lb.user,
        host=conn.lb.host,
        port=conn.lb.port,
        identity=identity,
        known_hosts=None if conn.insecure else known_hosts,
        pinned_only=not conn.insecure,
        accept_any_host_key=conn.insecure,
        control_dir=control_dir,
        jump=None if jump is None else Destination(jump.user, jump.host, jump.port),
    )


def ssh_argv(conn: Connection, known_hosts: Path | None, identity: str | None) -> list[str]:
    """OpenSSH client argv (without the remote command) for this connection."""
    return _ssh_argv(ssh_options(conn, known_hosts, identity))
