"""The lab's network: namespaces ``ks-<host>`` on two bridges, never the root namespace.

    ks-host01 192.168.0.10 ─┐                 ┌─ ks-master   172.16.0.1
    ks-host02 192.168.0.20 ─┼─ br-ext ─ LB ─ br-int ─┼─ ks-worker01 172.16.0.11
    ks-repo   192.168.0.250 ┘  (guest: 192.168.0.1 / 172.16.0.254) └─ ks-worker02 172.16.0.12

In the pair layout two guests (lb1, lb2) sit on the same two bridges.

The bridges live in the namespace ``ks-sw``. The root namespace gets no
address and no route in the lab's subnets.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from dataclasses import dataclass

SWITCH = "ks-sw"
BRIDGES = {"ext": "br-ext", "int": "br-int"}
TAPS = {"ext": "ks-lbext", "int": "ks-lbint"}  # the single guest's (lab/layout.py Guest.taps)


@dataclass(frozen=True)
class Host:
    name: str  # without the ks- prefix
    side: str  # "ext" or "int"
    address: str
    prefix: int
    gateway: str | None = None

    @property
    def netns(self) -> str:
        return f"ks-{self.name}"


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout)


def in_ns(
    ns: str, *argv: str, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout)


def namespaces() -> list[str]:
    out = sh("ip", "-j", "netns", "list", check=False).stdout.strip()
    return [n["name"] for n in json.loads(out)] if out else []


def conflicts(subnets: list[ipaddress.IPv4Network]) -> list[str]:
    """Addresses and routes of this machine (root namespace) that overlap the lab."""
    found = []
    addrs = json.loads(sh("ip", "-j", "-4", "addr", "show").stdout or "[]")
    for link in addrs:
        for info in link.get("addr_info", []):
            net = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network
            for subnet in subnets:
                if net.overlaps(subnet) and net.prefixlen > 0:
                    where = f"{info['local']}/{info['prefixlen']} on {link['ifname']}"
                    found.append(f"address {where} overlaps {subnet}")
    routes = json.loads(sh("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]")
    for route in routes:
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("type") in ("local", "broadcast"):
            continue
        net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        for subnet in subnets:
            if net.overlaps(subnet):
                found.append(f"route {dst} overlaps {subnet}")
    return found


def create(hosts: list[Host]) -> None:
    sh("ip", "netns", "add", SWITCH)
    in_ns(SWITCH, "ip", "link", "set", "lo", "up")
    for bridge in BRIDGES.values():
        in_ns(SWITCH, "ip", "link", "add", bridge, "type", "bridge")
        in_ns(SWITCH, "ip", "link", "set", bridge, "up")
    for i, host in enumerate(hosts):
        sh("ip", "netns", "add", host.netns)
        peer = f"ksv{i}"
        # Both ends are made inside the host's namespace: nothing lands in the root one.
        in_ns(host.netns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", peer)
        in_ns(host.netns, "ip", "link", "set", peer, "netns", SWITCH)
        in_ns(SWITCH, "ip", "link", "set", peer, "master", BRIDGES[host.side], "up")
        in_ns(host.netns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
        in_ns(host.netns, "ip", "link", "set", "lo", "up")
        in_ns(host.netns, "ip", "addr", "add", f"{host.address}/{host.prefix}", "dev", "eth0")
        in_ns(host.netns, "ip", "link", "set", "eth0", "up")
        if host.gateway:
            in_ns(host.netns, "ip", "route", "add", "default", "via", host.gateway)


def attach_taps(taps: dict[str, str] | None = None, timeout: float = 30) -> None:
    """Move a guest's qemu taps (made in the root namespace) onto the bridges."""
    deadline = time.monotonic() + timeout
    for side, tap in (taps or TAPS).items():
        while sh("ip", "link", "show", tap, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit(f"lab: qemu did not open its tap {tap} within {timeout} s")
            time.sleep(0.2)
        sh("ip", "link", "set", tap, "netns", SWITCH)
        in_ns(SWITCH, "ip", "link", "set", tap, "master", BRIDGES[side], "up")


def destroy(taps: list[str] | None = None) -> list[str]:
    """Remove every ks-* namespace and any of the lab's taps left in the root
    namespace (``taps``: every guest's; default the single guest's)."""
    removed = []
    for ns in namespaces():
        if ns.startswith("ks-"):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                sh("kill", "-9", pid, check=False)
            sh("ip", "netns", "delete", ns, check=False)
            removed.append(ns)
    for tap in taps or list(TAPS.values()):
        if sh("ip", "link", "show", tap, check=False).returncode == 0:
            sh("ip", "link", "delete", tap, check=False)
            removed.append(tap)
    return removed
