"""The lab's layouts: which LB guests run, with which addresses.

Pure (no root, no QEMU): read from the stack files through keepsource's
settings model (the validation the program runs), never typed twice; the lab
adds only what its guests can boot (the seed's addresses, two hosts named lbN,
the image's interface names).

* single layout (``lab/lab up``): one guest ``lb`` from ``Pulumi.local.yaml``:
  the VIP on ``lbext`` and the nodes' gateway on ``lbint`` (the seed's LB);
* pair layout (``lab/lab up --ha``): ``lb1`` and ``lb2`` from ``keepsource:lb.hosts``
  of the ``local-ha`` stack file, each with its own addresses; in the seed's
  fault state the first host also holds the VIP and the gateway address
  statically and runs HAProxy, the second has only its own addresses and no
  HAProxy (it could not bind the VIP).

A guest's identity reaches it on the kernel command line (:func:`kernel_cmdline`):
one image for every guest; the guest's oneshot unit ``keepsource-lab-identity``
(lab/image.py) writes ``/run/systemd/network`` files from it before networkd starts.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keepsource.settings import ConfigError, Settings, parse
from keepsource.stackfile import PROJECT_ROOT, load, load_config
from lab import paths

SINGLE = "single"
PAIR = "pair"
#: The single guest with the many-services stack (issue 18): web, DNS, the apiserver.
SERVICES = "services"
LAYOUT_STACKS = {SINGLE: "local", PAIR: "local-ha", SERVICES: "local-services"}
STACK_ROOTS = {SINGLE: PROJECT_ROOT, PAIR: PROJECT_ROOT, SERVICES: PROJECT_ROOT}

#: The image names the guest's NICs by MAC (.link files list every guest's MAC).
EXT_IF, INT_IF = "lbext", "lbint"
#: What the seed's HAProxy config and the lab repository are built for (lab/image.py).
SEED_ADDRESSES = {
    "network.vip": "192.168.0.1",
    "network.lbInternalAddress": "172.16.0.254",
    "network.externalSubnet": "192.168.0.0/24",
    "network.internalSubnet": "172.16.0.0/24",
}
#: The guest's kernel command line, before its identity. Beyond the root and
#: the serial console: no boot chatter on the console (quiet), no IPv6
#: addresses on the lab's links (networkd waited on them), no crypto
#: self-tests, no speculation mitigations (retpolines cost cycles under
#: emulation and guard nothing in a lab guest), no fsck of a root that ext4's
#: journal keeps consistent, no watchdogs, the root's type given rather than
#: probed. Not ``ipv6.disable=1`` nor ``audit=0``: each leaves a socket family
#: unregistered, so every IPv6 socket and every PAM session (each SSH command:
#: PAM opens an audit socket) made the kernel run modprobe for a module that
#: does not exist, ~8 modprobes per SSH login (measured 2026-12-04: a fresh
#: SSH command 1.14-1.25 s instead of 1.40-1.86 s). Audit stays off (no
#: auditd); IPv6 is off on every link (``disable_ipv6``).
BASE_CMDLINE = (
    "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0 ipv6.disable_ipv6=1"
    " cryptomgr.notests mitigations=off fsck.mode=skip nowatchdog rootfstype=ext4"
)
#: The guest's identity keys on the kernel command line (read by the identity unit).
CMDLINE_KEYS = ("ks.lbext", "ks.lbint", "ks.haproxy")
_ADDRESS_LIST = re.compile(
    r"[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}(,[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2})*"
)


def macs(index: int) -> dict[str, str]:
    """The NICs' MACs of guest ``index`` (0: the single guest and lb1, 1: lb2)."""
    return {
        name: f"52:54:00:4b:53:{16 * index + n:02x}"
        for n, name in ((1, "mgmt"), (2, EXT_IF), (3, INT_IF))
    }


#: Every guest's MACs, for the image's .link files (both guests share one image).
GUESTS_MAX = 2


@dataclass(frozen=True)
class Guest:
    name: str  # "lb" (single), "lb1", "lb2"
    index: int
    ssh_port: int
    external: tuple[str, ...]  # interface addresses (address/prefix), own address first
    internal: tuple[str, ...]
    haproxy: bool  # the seed's HAProxy runs on it (it holds the VIP)

    @property
    def own_external(self) -> str:
        return self.external[0].split("/")[0]

    @property
    def own_internal(self) -> str:
        return self.internal[0].split("/")[0]

    @property
    def macs(self) -> dict[str, str]:
        return macs(self.index)

    @property
    def taps(self) -> dict[str, str]:
        """qemu's taps in the root namespace until the lab moves them to ks-sw."""
        if self.name == "lb":
            return {"ext": "ks-lbext", "int": "ks-lbint"}  # as before the pair
        return {"ext": f"ks-{self.name}ext", "int": f"ks-{self.name}int"}

    def _file(self, single: Path, suffix: str) -> Path:
        return single if self.name == "lb" else paths.RUN / f"{self.name}-{suffix}"

    @property
    def overlay(self) -> Path:
        return self._file(paths.OVERLAY, "overlay.qcow2")

    @property
    def console(self) -> Path:
        return self._file(paths.CONSOLE, "console.log")

    @property
    def pidfile(self) -> Path:
        return self._file(paths.QEMU_PID, "qemu.pid")

    @property
    def qmp(self) -> Path:
        """The qemu's QMP socket (snapshots of the running guest)."""
        return paths.RUN / f"{self.name}-qmp.sock"

    @property
    def known_hosts(self) -> Path:
        return self._file(paths.KNOWN_HOSTS, "known_hosts")


def kernel_cmdline(guest: Guest) -> str:
    """The guest's kernel command line: the base line plus its identity."""
    for where, addrs in (("external", guest.external), ("internal", guest.internal)):
        if not addrs or not _ADDRESS_LIST.fullmatch(",".join(addrs)):
            raise SystemExit(f"lab: guest {guest.name}: bad {where} addresses {addrs!r}")
    words = [
        BASE_CMDLINE,
        f"systemd.hostname={guest.name}",
        f"ks.{EXT_IF}={','.join(guest.external)}",
        f"ks.{INT_IF}={','.join(guest.internal)}",
    ]
    if not guest.haproxy:
        words.append("ks.haproxy=off")
    return " ".join(words)


def _check_seed(s: Settings, stack: str) -> None:
    n = s.network
    got = {
        "network.vip": str(n.vip),
        "network.lbInternalAddress": str(n.lb_internal_address),
        "network.externalSubnet": str(n.external_subnet),
        "network.internalSubnet": str(n.internal_subnet),
    }
    if got != SEED_ADDRESSES:
        raise SystemExit(
            f"lab: the guest image's seed HAProxy is built for {SEED_ADDRESSES}; "
            f"stack {stack} has {got}"
        )


def _on(address: Any, subnet: Any) -> str:
    """An address with its subnet's prefix (the settings checked it is a host of it)."""
    return f"{address}/{ipaddress.ip_network(subnet).prefixlen}"


def single_guests(s: Settings, stack: str = LAYOUT_STACKS[SINGLE]) -> list[Guest]:
    """The seed's one LB: the VIP and the nodes' gateway on the guest."""
    _check_seed(s, stack)
    n = s.network
    if s.lb.ssh is None:
        raise SystemExit(f"lab: stack {stack} has no keepsource:lb.ssh (the single layout's)")
    checks = (_on(n.check_address, n.internal_subnet),) if n.check_address else ()
    return [
        Guest(
            name="lb",
            index=0,
            ssh_port=s.lb.ssh.port,
            external=(_on(n.vip, n.external_subnet),),
            internal=(_on(n.lb_internal_address, n.internal_subnet), *checks),
            haproxy=True,
        )
    ]


def _pair_guest(s: Settings, i: int) -> Guest:
    """``lb.hosts[i]`` as a guest; the first holds the VIP and the gateway
    statically (the seed's fault state)."""
    n, host, key = s.network, s.lb.hosts[i], f"lb.hosts[{i}]"
    if not re.fullmatch(r"lb[0-9]", host.name):
        raise SystemExit(f"lab: keepsource:{key}.name {host.name!r}: the lab's guests are lbN")
    for iface, got, want in (
        ("externalInterface", host.external_interface, EXT_IF),
        ("internalInterface", host.internal_interface, INT_IF),
    ):
        if got != want:
            raise SystemExit(
                f"lab: keepsource:{key}.{iface} must be {want} (the image names its NICs)"
            )
    own_ext = _on(host.external_address, n.external_subnet)
    own_int = _on(host.internal_address, n.internal_subnet)
    vip, gateway = _on(n.vip, n.external_subnet), _on(n.lb_internal_address, n.internal_subnet)
    checks = (_on(host.check_address, n.internal_subnet),) if host.check_address else ()
    holder = i == 0
    return Guest(
        name=host.name,
        index=i,
        ssh_port=host.ssh.port,
        external=(own_ext, vip) if holder else (own_ext,),
        internal=(own_int, gateway, *checks) if holder else (own_int, *checks),
        haproxy=holder,
    )


def pair_guests(s: Settings) -> list[Guest]:
    """``lb.hosts`` of the pair (the settings made their addresses and SSH
    endpoints distinct and inside the subnets)."""
    _check_seed(s, LAYOUT_STACKS[PAIR])
    if len(s.lb.hosts) != GUESTS_MAX:
        raise SystemExit(f"lab: keepsource:lb.hosts must list exactly {GUESTS_MAX} hosts")
    guests = [_pair_guest(s, i) for i in range(len(s.lb.hosts))]
    if len({g.ssh_port for g in guests}) != len(guests):
        raise SystemExit("lab: keepsource:lb.hosts: the hosts' ssh ports must differ")
    return guests


def stack_config(layout: str) -> dict[str, Any]:
    """The stack file's config of a layout, as a mapping to change before
    :func:`guests` reads it (tests, the lab's edited stacks)."""
    return load_config(LAYOUT_STACKS[layout], STACK_ROOTS[layout])


def stack_settings(layout: str, config: dict[str, Any] | None = None) -> Settings:
    """The layout's stack (or ``config``) through keepsource's settings model;
    a bad one stops the lab with the settings' own error, naming each key."""
    stack = LAYOUT_STACKS[layout]
    try:
        return load(stack, STACK_ROOTS[layout]) if config is None else parse(config)
    except ConfigError as error:
        raise SystemExit(f"lab: stack {stack}: {error}") from None


def guests(layout: str, config: dict[str, Any] | None = None) -> list[Guest]:
    if layout not in LAYOUT_STACKS:
        raise SystemExit(f"lab: no layout {layout!r} (single, pair or services)")
    s = stack_settings(layout, config)
    if layout == SINGLE:
        return single_guests(s)
    if layout == PAIR:
        return pair_guests(s)
    if layout == SERVICES:
        return single_guests(s, LAYOUT_STACKS[SERVICES])
    raise SystemExit(f"lab: no layout {layout!r} (single, pair or services)")
