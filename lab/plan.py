"""The lab's one address plan: which LB guests run, with which addresses.

Pure (no root, no QEMU): read from the stack files, never typed twice.

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

from keepsource.stackfile import PROJECT_ROOT, load_config
from lab import paths

SINGLE = "single"
PAIR = "pair"
#: The single guest with the many-services stack (issue 18): web, DNS, the apiserver.
SERVICES = "services"
LAYOUT_STACKS = {SINGLE: "local", PAIR: "local-ha", SERVICES: "local-services"}
#: Where the pair's stack file is. The lead moves it to the project root once
#: the settings model reads ``lb.hosts``: then this becomes ``PROJECT_ROOT``.
HA_STACK_ROOT = PROJECT_ROOT
STACK_ROOTS = {SINGLE: PROJECT_ROOT, PAIR: HA_STACK_ROOT, SERVICES: PROJECT_ROOT}

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
#: the serial console: no boot chatter on the console (quiet), no IPv6 on the
#: lab's links (networkd waited on it), no crypto self-tests, no speculation
#: mitigations (retpolines cost cycles under emulation and guard nothing in a
#: lab guest), no fsck of a root that ext4's journal keeps consistent, no
#: watchdogs, no audit, the root's type given rather than probed.
BASE_CMDLINE = (
    "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0 ipv6.disable=1 cryptomgr.notests"
    " mitigations=off fsck.mode=skip nowatchdog audit=0 rootfstype=ext4"
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


def _dig(value: Any, parts: list[str], key: str) -> Any:
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            raise SystemExit(f"lab: keepsource:{key} is missing from the stack file")
        value = value[part]
    if value is None:
        raise SystemExit(f"lab: keepsource:{key} is missing from the stack file")
    return value


def _get(config: dict[str, Any], key: str) -> Any:
    """``network.vip`` -> ``config["keepsource:network"]["vip"]``; SystemExit naming the key."""
    head, *rest = key.split(".")
    if f"keepsource:{head}" not in config:
        raise SystemExit(f"lab: keepsource:{key} is missing from the stack file")
    return _dig(config[f"keepsource:{head}"], rest, key)


def _check_seed(config: dict[str, Any], stack: str) -> None:
    got = {key: str(_get(config, key)) for key in SEED_ADDRESSES}
    if got != SEED_ADDRESSES:
        raise SystemExit(
            f"lab: the guest image's seed HAProxy is built for {SEED_ADDRESSES}; "
            f"stack {stack} has {got}"
        )


def _with_prefix(address: str, subnet: str, key: str) -> str:
    net = ipaddress.ip_network(subnet)
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        raise SystemExit(f"lab: keepsource:{key} {address!r} is not an address") from None
    if addr not in net or addr in (net.network_address, net.broadcast_address):
        raise SystemExit(f"lab: keepsource:{key} {address} is not a host address of {subnet}")
    return f"{addr}/{net.prefixlen}"


def single_guests(config: dict[str, Any], stack: str = LAYOUT_STACKS[SINGLE]) -> list[Guest]:
    """The seed's one LB: the VIP and the nodes' gateway on the guest."""
    _check_seed(config, stack)
    ext, inner = _get(config, "network.externalSubnet"), _get(config, "network.internalSubnet")
    check = config["keepsource:network"].get("checkAddress")
    checks = (_with_prefix(str(check), inner, "network.checkAddress"),) if check else ()
    return [
        Guest(
            name="lb",
            index=0,
            ssh_port=int(_get(config, "lb.ssh.port")),
            external=(_with_prefix(str(_get(config, "network.vip")), ext, "network.vip"),),
            internal=(
                _with_prefix(
                    str(_get(config, "network.lbInternalAddress")),
                    inner,
                    "network.lbInternalAddress",
                ),
                *checks,
            ),
            haproxy=True,
        )
    ]


def pair_guests(config: dict[str, Any]) -> list[Guest]:
    """``lb.hosts`` of the pair; the first host holds the VIP and the gateway
    statically (the seed's fault state), the others only their own addresses."""
    _check_seed(config, LAYOUT_STACKS[PAIR])
    hosts = _get(config, "lb.hosts")
    if not isinstance(hosts, list) or len(hosts) != GUESTS_MAX:
        raise SystemExit(f"lab: keepsource:lb.hosts must list exactly {GUESTS_MAX} hosts")
    ext, inner = _get(config, "network.externalSubnet"), _get(config, "network.internalSubnet")
    vip = _with_prefix(str(_get(config, "network.vip")), ext, "network.vip")
    gateway = _with_prefix(
        str(_get(config, "network.lbInternalAddress")), inner, "network.lbInternalAddress"
    )
    guests: list[Guest] = []
    for i, host in enumerate(hosts):
        key = f"lb.hosts[{i}]"
        if not isinstance(host, dict):
            raise SystemExit(f"lab: keepsource:{key} must be a mapping")

        def field(name: str, host: dict[str, Any] = host, key: str = key) -> Any:
            return _dig(host, name.split("."), f"{key}.{name}")

        name = str(field("name"))
        if not re.fullmatch(r"lb[0-9]", name):
            raise SystemExit(f"lab: keepsource:{key}.name {name!r}: the lab's guests are lbN")
        for iface, want in (("externalInterface", EXT_IF), ("internalInterface", INT_IF)):
            if host.get(iface, want) != want:
                raise SystemExit(
                    f"lab: keepsource:{key}.{iface} must be {want} (the image names its NICs)"
                )
        own_ext = _with_prefix(str(field("externalAddress")), ext, f"{key}.externalAddress")
        own_int = _with_prefix(str(field("internalAddress")), inner, f"{key}.internalAddress")
        if own_ext == vip or own_int == gateway:
            raise SystemExit(f"lab: keepsource:{key}: its own addresses must not be the VIPs")
        holder = i == 0
        check = host.get("checkAddress")
        checks = (_with_prefix(str(check), inner, f"{key}.checkAddress"),) if check else ()
        guests.append(
            Guest(
                name=name,
                index=i,
                ssh_port=int(field("ssh.port")),
                external=(own_ext, vip) if holder else (own_ext,),
                internal=(own_int, gateway, *checks) if holder else (own_int, *checks),
                haproxy=holder,
            )
        )
    for attr, what in (
        ("name", "names"),
        ("ssh_port", "ssh ports"),
        ("own_external", "external addresses"),
        ("own_internal", "internal addresses"),
    ):
        values = [getattr(g, attr) for g in guests]
        if len(set(values)) != len(values):
            raise SystemExit(f"lab: keepsource:lb.hosts: the hosts' {what} must differ")
    return guests


def stack_config(layout: str) -> dict[str, Any]:
    """The stack file's config of a layout (plain YAML, read as keepsource reads it)."""
    return load_config(LAYOUT_STACKS[layout], STACK_ROOTS[layout])


def guests(layout: str, config: dict[str, Any] | None = None) -> list[Guest]:
    config = stack_config(layout) if config is None else config
    if layout == SINGLE:
        return single_guests(config)
    if layout == PAIR:
        return pair_guests(config)
    if layout == SERVICES:
        return single_guests(config, LAYOUT_STACKS[SERVICES])
    raise SystemExit(f"lab: no layout {layout!r} (single, pair or services)")
