"""The LB host: how it is reached over SSH (pinned host keys), what keepsource
may take over there, and how long the cut-over waits."""

from __future__ import annotations

import base64
import binascii
import re
import struct
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from keepsource.settings.base import DnsLabel, IPv4, Model, Port, Text
from keepsource.transport import parse_destination, ssh_word

_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)
_KEY_LINE = re.compile(r"(?P<type>[a-z0-9-]+) (?P<blob>[A-Za-z0-9+/]+={0,2})( [^\x00-\x1f\x7f]*)?")


def host_key_line(value: str) -> str:
    """An OpenSSH public key line ``TYPE BASE64 [comment]`` whose blob names
    the same type (what ``ssh-keyscan`` and ``/etc/ssh/*.pub`` hold)."""
    match = _KEY_LINE.fullmatch(value)
    if not match or match.group("type") not in _KEY_TYPES:
        raise ValueError(
            "must be one OpenSSH public key line ('ssh-ed25519 AAAA...'; types: "
            + ", ".join(_KEY_TYPES)
            + ")"
        )
    try:
        blob = base64.b64decode(match.group("blob"), validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        inner = blob[4 : 4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise ValueError("holds no valid key blob") from None
    if inner != match.group("type"):
        raise ValueError(f"says {match.group('type')} but its blob holds a {inner!r} key")
    return value


def user_host_port(value: str) -> str:
    """``user@host[:port]`` as :func:`keepsource.transport.parse_destination` reads it."""
    parse_destination(value)
    return value


def _project_path(value: str) -> str:
    path = PurePosixPath(value)
    if value.startswith("~") or path.is_absolute() or ".." in path.parts:
        raise ValueError(
            "must be a path inside the project (relative, no '~', no '..': no path of this machine)"
        )
    return value


HostKey = Annotated[str, AfterValidator(host_key_line)]
UserHostPort = Annotated[Text, AfterValidator(user_host_port)]
SshWord = Annotated[Text, AfterValidator(ssh_word)]
ProjectPath = Annotated[Text, AfterValidator(_project_path)]
#: Host things keepsource may replace although it did not create them.
#: ``keepalived.conf``: replace a keepalived.conf keepsource did not write.
#: ``haproxy``: stop HAProxy although it also serves listeners keepsource does
#: not take over (they go dark; without it the cut-over refuses and names them).
TakeOverItem = Literal["keepalived.conf", "haproxy"]


class Ssh(Model):
    """How Pulumi (and ``keepsource verify``) reach the LB host. The private key
    is not here: ``pulumi config set --secret keepsource:lbPrivateKey``."""

    host: SshWord = Field(min_length=1, description="Address or name of the LB host.")
    port: Port = Field(default=22, description="SSH port.")
    user: SshWord = Field(
        default="root",
        min_length=1,
        description="Login user; a non-root user needs passwordless sudo (sudo -n).",
    )
    host_key: HostKey | None = Field(
        default=None,
        description="The LB's pinned SSH host public key ('ssh-ed25519 AAAA...'). "
        "Required, unless hostKeyFile or insecureAcceptAnyHostKey.",
    )
    host_key_file: ProjectPath | None = Field(
        default=None,
        description="File (relative to the project root) holding the LB's host public "
        "key, read when the program runs: for a lab whose key is made at build time.",
    )
    jump_host: UserHostPort | None = Field(
        default=None, description="Optional bastion, as user@host[:port]."
    )
    jump_host_key: HostKey | None = Field(
        default=None,
        description="The jump host's pinned SSH host public key; required with jumpHost "
        "unless insecureAcceptAnyHostKey.",
    )
    insecure_accept_any_host_key: bool = Field(
        default=False,
        description="Opt out of host key pinning (LB and jump host): any key is "
        "accepted, a man in the middle gets the private key's sessions. Warned about "
        "on every run.",
    )

    @field_validator("insecure_accept_any_host_key", mode="before")
    @classmethod
    def _strict_bool(cls, value: object) -> object:
        if value not in (True, False):
            raise ValueError("must be true or false")
        return value


_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def _ifname(value: str) -> str:
    if not _IFNAME.fullmatch(value):
        raise ValueError("must be a network interface name (letters, digits, '_.-', 1-15)")
    return value


IfName = Annotated[Text, AfterValidator(_ifname)]


class PairHost(Model):
    """One host of an LB pair: its own addresses; the VIP and the nodes'
    gateway address float between the two (VRRP)."""

    name: DnsLabel = Field(description="The host's name (names its Pulumi resources).")
    ssh: Ssh = Field(description="SSH connection to this host.")
    external_address: IPv4 = Field(description="This host's own address on the external subnet.")
    internal_address: IPv4 = Field(
        description="This host's own address on the internal subnet: the source of its "
        "VRRP adverts and IPVS sync (and of its health checks when there is no checkAddress)."
    )
    check_address: IPv4 | None = Field(
        default=None,
        description="An address of this host's own on the internal subnet that its health "
        "checks come from and nothing else; the NetworkPolicies admit exactly it.",
    )
    external_interface: IfName = Field(description="Interface on the external subnet.")
    internal_interface: IfName = Field(description="Interface on the internal subnet.")


class Vrrp(Model):
    """VRRP between the hosts of a pair (unused with one LB host)."""

    virtual_router_id: int = Field(
        default=51,
        ge=1,
        le=254,
        description="VRRP id of the external VIP; the gateway address uses this id + 1.",
    )
    advert_interval: float = Field(
        default=0.2,
        ge=0.05,
        le=10,
        description="Seconds between adverts (VRRPv3: sub-second allowed); the backup "
        "takes over after about 3 missed adverts.",
    )


class Lb(Model):
    """The load-balancer host, or a pair of them."""

    ssh: Ssh | None = Field(
        default=None, description="SSH connection to the LB host (one LB; not with hosts)."
    )
    hosts: tuple[PairHost, ...] = Field(
        default=(),
        description="An LB pair: exactly two hosts, each with its own addresses (not with ssh).",
    )
    vrrp: Vrrp = Field(default_factory=Vrrp, description="VRRP of a pair.")
    take_over: tuple[TakeOverItem, ...] = Field(
        default=(),
        description="Host things keepsource may replace although it did not create "
        "them: 'keepalived.conf' (a backup is kept), 'haproxy' (stop HAProxy although "
        "it also serves listeners keepsource does not take over).",
    )
    cutover_timeout: float = Field(
        default=60.0,
        ge=5,
        le=600,
        description="Seconds the cut-over waits for healthy pools before it gives up.",
    )

    @field_validator("take_over")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("lists a name twice")
        return value


Located = tuple[tuple[int | str, ...], str]
SSH_PATH: tuple[int | str, ...] = ("lb", "ssh")


def _opt_out(at: tuple[int | str, ...]) -> str:
    where = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in at).replace(".[", "[")
    return f"or opt out by name with {where}.insecureAcceptAnyHostKey: true"


def _opted_out(ssh: Ssh, at: tuple[int | str, ...]) -> list[Located]:
    if ssh.host_key is None and ssh.host_key_file is None and ssh.jump_host_key is None:
        return []
    return [((*at, "insecureAcceptAnyHostKey"), "opts out of pinning while keys are pinned")]


def _lb_key(ssh: Ssh, at: tuple[int | str, ...]) -> list[Located]:
    if ssh.host_key is not None and ssh.host_key_file is not None:
        return [((*at, "hostKeyFile"), "set hostKey or hostKeyFile, not both")]
    if ssh.host_key is None and ssh.host_key_file is None:
        return [
            (
                (*at, "hostKey"),
                "required: pin the LB's SSH host key (ssh-keyscan -t ed25519 HOST, checked "
                f"out of band), {_opt_out(at)}",
            )
        ]
    return []


def _jump_key(ssh: Ssh, at: tuple[int | str, ...]) -> list[Located]:
    if ssh.jump_host is not None and ssh.jump_host_key is None:
        return [
            (
                (*at, "jumpHostKey"),
                f"required with jumpHost: pin the jump host's SSH host key, {_opt_out(at)}",
            )
        ]
    if ssh.jump_host is None and ssh.jump_host_key is not None:
        return [((*at, "jumpHostKey"), "is set but there is no jumpHost")]
    return []


def host_key_faults(ssh: Ssh, at: tuple[int | str, ...] = SSH_PATH) -> list[Located]:
    """(location, reason) for the rules that tie the host-key settings together;
    ``at`` is where this ssh block sits in the config."""
    if ssh.insecure_accept_any_host_key:
        return _opted_out(ssh, at)
    return _lb_key(ssh, at) + _jump_key(ssh, at)
