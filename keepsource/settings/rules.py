"""Rules that tie several keys together, one small function per concern.

Each rule returns its faults; :func:`cross_faults` runs them all, so one error
lists every fault at once.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable

from keepsource.settings.base import IPv4
from keepsource.settings.errors import Fault, Loc, key
from keepsource.settings.lb import host_key_faults, user_host_port
from keepsource.settings.model import Settings

Rule = Callable[[Settings], list[Fault]]
#: Numeric host strings inet_aton reads as IPv4 (decimal, octal, hex parts).
_INET_ATON = re.compile(r"(0[xX][0-9a-fA-F]+|[0-9]+)(\.(0[xX][0-9a-fA-F]+|[0-9]+)){0,3}")


def _inside(s: Settings) -> list[tuple[Loc, IPv4]]:
    """The internal addresses, with where each is set."""
    found: list[tuple[Loc, IPv4]] = [
        (("network", "lbInternalAddress"), s.network.lb_internal_address),
        (("apiserver", "address"), s.apiserver.address),
    ]
    found += [(("lb", "hosts", i, "internalAddress"), h.internal_address)
              for i, h in enumerate(s.lb.hosts)]  # fmt: skip
    return found + [(("workers", i, "address"), w.address) for i, w in enumerate(s.workers)]


def _outside(s: Settings) -> list[tuple[Loc, IPv4]]:
    """The external addresses, with where each is set."""
    found: list[tuple[Loc, IPv4]] = [(("network", "vip"), s.network.vip)]
    return found + [
        (("lb", "hosts", i, "externalAddress"), h.external_address)
        for i, h in enumerate(s.lb.hosts)
    ]


def lb_layout(s: Settings) -> list[Fault]:
    """One LB (lb.ssh) or a pair (lb.hosts, exactly two), not both, not neither."""
    lb = s.lb
    if lb.ssh is not None and lb.hosts:
        return [Fault(key(("lb", "hosts")), "is set with lb.ssh: one LB (ssh) or a pair (hosts)")]
    if lb.ssh is None and not lb.hosts:
        return [Fault(key(("lb", "ssh")), "required (or lb.hosts for an LB pair)")]
    if lb.hosts and len(lb.hosts) != 2:
        return [Fault(key(("lb", "hosts")), f"lists {len(lb.hosts)} hosts: a pair is two")]
    faults = []
    if len({h.name for h in lb.hosts}) != len(lb.hosts):
        faults.append(Fault(key(("lb", "hosts", 1, "name")), "duplicate host name"))
    ends = [(h.ssh.host, h.ssh.port) for h in lb.hosts]
    if len(set(ends)) != len(ends):
        faults.append(Fault(key(("lb", "hosts", 1, "ssh")), "the same SSH endpoint as hosts[0]"))
    return faults


def subnets(s: Settings) -> list[Fault]:
    net = s.network
    ext, inner = net.external_subnet, net.internal_subnet
    faults = []
    if ext.overlaps(inner):
        faults.append(Fault(key(("network", "internalSubnet")), f"overlaps externalSubnet {ext}"))
    if net.vip not in ext:
        faults.append(Fault(key(("network", "vip")), f"{net.vip} is outside externalSubnet {ext}"))
    return faults


def addresses(s: Settings) -> list[Fault]:
    inner = s.network.internal_subnet
    faults = [
        Fault(key(loc), f"{addr} is outside internalSubnet {inner}")
        for loc, addr in _inside(s)
        if addr not in inner
    ]
    ext = s.network.external_subnet
    faults += [
        Fault(key(loc), f"{addr} is outside externalSubnet {ext}")
        for loc, addr in _outside(s)[1:]
        if addr not in ext
    ]
    every = [*_outside(s), *_inside(s)]
    for loc, addr in every:
        for subnet in (s.network.external_subnet, inner):
            if subnet.prefixlen < 31 and addr in (subnet.network_address, subnet.broadcast_address):
                faults.append(
                    Fault(key(loc), f"{addr} is the network or broadcast address of {subnet}")
                )
    seen: dict[IPv4, str] = {}
    for loc, addr in every:
        if addr in seen:
            faults.append(Fault(key(loc), f"duplicate address {addr} (also {seen[addr]})"))
        seen.setdefault(addr, key(loc))
    return faults


def worker_names(s: Settings) -> list[Fault]:
    seen: set[str] = set()
    faults = []
    for i, w in enumerate(s.workers):
        if w.name in seen:
            faults.append(Fault(key(("workers", i, "name")), f"duplicate worker name {w.name!r}"))
        seen.add(w.name)
    return faults


def ports(s: Settings) -> list[Fault]:
    """Two virtual services on one VIP:port, or one on the LB's own SSH endpoint."""
    faults = []
    if s.node_port == s.apiserver.port:
        faults.append(
            Fault(key(("nodePort",)), f"equals apiserver.port {s.apiserver.port} on the same VIP")
        )
    services = ((("apiserver", "port"), s.apiserver.port), (("nodePort",), s.node_port))
    for what, host, port in _ssh_endpoints(s):
        if as_ipv4(host) != s.network.vip:
            continue  # another address, or a host name: keepsource cannot tell
        for loc, service_port in services:
            if service_port == port:
                faults.append(
                    Fault(
                        key(loc),
                        f"{service_port} is an SSH endpoint keepsource reaches the LB "
                        f"through ({what} is the VIP, port {port}): IPVS would take "
                        "those connections and lock the operator out",
                    )
                )
    return faults


def _ssh_endpoints(s: Settings) -> list[tuple[str, str, int]]:
    """(what, host, port) of every SSH hop to every LB node (lb_nodes): the LB
    itself and its jump host."""
    found = []
    for node in s.lb_nodes:
        ssh, at = node.ssh, key(node.ssh_at)
        found.append((f"{at}.host", ssh.host, ssh.port))
        if ssh.jump_host is not None:
            hostport = ssh.jump_host.partition("@")[2]
            host, _, port = hostport.partition(":")
            found.append((f"{at}.jumpHost", host, int(port or 22)))
    return found


def as_ipv4(host: str) -> IPv4 | None:
    """The IPv4 address a host string names as a literal, in every form ssh
    (getaddrinfo) accepts: dotted quad, IPv4-mapped IPv6 (``::ffff:a.b.c.d``,
    bracketed or not) and the inet_aton forms (``3232235521``, ``0xc0a80001``,
    ``192.168.1``, ``192.168.000.001``), also with a trailing dot. None for a
    host name or another address."""
    text = host.strip("[]")
    text = text[:-1] if text.endswith(".") else text  # "192.168.0.1." (absolute)
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        addr = None
    if isinstance(addr, ipaddress.IPv4Address):
        return addr
    if isinstance(addr, ipaddress.IPv6Address):
        return addr.ipv4_mapped
    if _INET_ATON.fullmatch(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def clients(s: Settings) -> list[Fault]:
    inner = s.network.internal_subnet
    return [
        Fault(
            key(("allowedClients", i)),
            f"{cidr} overlaps internalSubnet {inner}: clients come from outside",
        )
        for i, cidr in enumerate(s.allowed_clients)
        if cidr.overlaps(inner)
    ]


def hairpin(s: Settings) -> list[Fault]:
    net = s.network
    src = net.hairpin_source
    where = "" if net.hairpin_source_config is not None else f" (defaults to the VIP {src})"
    faults = []
    if src in (net.lb_internal_address, *s.check_sources):
        faults.append(
            Fault(
                key(("network", "hairpinSource")),
                f"{src}{where} is a health-check source (lbInternalAddress or an LB host's "
                "internalAddress): hairpinned clients would pass as the LB's checks",
            )
        )
    for i, cidr in enumerate(s.allowed_clients):
        if src in cidr:
            faults.append(
                Fault(
                    key(("network", "hairpinSource")),
                    f"{src}{where} is inside allowedClients[{i}] {cidr}: the NetworkPolicy "
                    "would admit every node and pod through it",
                )
            )
    return faults


def host_keys(s: Settings) -> list[Fault]:
    return [
        Fault(key(loc), reason)
        for node in s.lb_nodes
        for loc, reason in host_key_faults(node.ssh, node.ssh_at)
    ]


def lb_only(s: Settings) -> list[Fault]:
    k = s.kubernetes
    if not s.manages_workload and (k.kubeconfig is not None or k.context is not None):
        return [
            Fault(
                key(("kubernetes",)),
                "is set but workload.managedBy is 'external': no Kubernetes provider is "
                "declared (remove it, or manage the workload here)",
            )
        ]
    return []


def verify_clients(s: Settings) -> list[Fault]:
    if s.verify is None:
        return []
    ext = s.network.external_subnet
    allowed, denied = s.verify.allowed_client, s.verify.denied_client
    faults = [
        Fault(
            key(("verify", field, "address")), f"{client.address} is outside externalSubnet {ext}"
        )
        for field, client in (("allowedClient", allowed), ("deniedClient", denied))
        if client.address not in ext
    ]
    for field, client in (("allowedClient", allowed), ("deniedClient", denied)):
        if s.verify.via == "ssh":
            try:
                user_host_port(client.target)
            except ValueError as error:
                faults.append(Fault(key(("verify", field, "target")), f"(via: ssh) {error}"))
    if not any(allowed.address in c for c in s.allowed_clients):
        faults.append(
            Fault(
                key(("verify", "allowedClient", "address")),
                f"{allowed.address} is not in allowedClients",
            )
        )
    if any(denied.address in c for c in s.allowed_clients):
        faults.append(
            Fault(
                key(("verify", "deniedClient", "address")),
                f"{denied.address} is admitted by allowedClients",
            )
        )
    return faults


RULES: tuple[Rule, ...] = (
    subnets,
    addresses,
    worker_names,
    ports,
    clients,
    hairpin,
    host_keys,
    lb_only,
    verify_clients,
)


def cross_faults(s: Settings) -> list[Fault]:
    """Every cross-field fault of a settings record that passed field validation.
    The LB layout first: the other rules read the LB host(s) it defines."""
    layout = lb_layout(s)
    if layout:
        return layout
    return [fault for rule in RULES for fault in rule(s)]
