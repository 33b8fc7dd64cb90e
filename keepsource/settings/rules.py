"""Rules that tie several keys together, one small function per concern.

Each rule returns its faults; :func:`cross_faults` runs them all, so one error
lists every fault at once.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable

from keepsource.settings.base import IPv4, Net4
from keepsource.settings.errors import Fault, Loc, key
from keepsource.settings.lb import host_key_faults, user_host_port
from keepsource.settings.model import Settings
from keepsource.transport import parse_destination

Rule = Callable[[Settings], list[Fault]]
#: Numeric host strings inet_aton reads as IPv4 (decimal, octal, hex parts).
_INET_ATON = re.compile(r"(0[xX][0-9a-fA-F]+|[0-9]+)(\.(0[xX][0-9a-fA-F]+|[0-9]+)){0,3}")


def _inside(s: Settings) -> list[tuple[Loc, IPv4]]:
    """The internal addresses, with where each is set."""
    found: list[tuple[Loc, IPv4]] = [
        (("network", "lbInternalAddress"), s.network.lb_internal_address),
        (("apiserver", "address"), s.apiserver.address),
    ]
    if s.network.check_address is not None:
        found.append((("network", "checkAddress"), s.network.check_address))
    found += [(("lb", "hosts", i, "internalAddress"), h.internal_address)
              for i, h in enumerate(s.lb.hosts)]  # fmt: skip
    found += [(("lb", "hosts", i, "checkAddress"), h.check_address)
              for i, h in enumerate(s.lb.hosts) if h.check_address is not None]  # fmt: skip
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
    if lb.hosts and s.network.check_address is not None:
        faults.append(
            Fault(
                key(("network", "checkAddress")),
                "is for one LB: a pair sets lb.hosts[i].checkAddress, one for each host",
            )
        )
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


def _service_ports(s: Settings) -> list[tuple[Loc, str, int, Loc | None, int]]:
    """(where the VIP port is set, protocol, VIP port, where its nodePort is
    set or None, the port on the real servers) of every exposed port."""
    if s.services is None:
        return [
            (("apiserver", "port"), "TCP", s.apiserver.port, None, s.apiserver.port),
            (("nodePort",), "TCP", s.node_port, ("nodePort",), s.node_port),
        ]
    found: list[tuple[Loc, str, int, Loc | None, int]] = []
    for j, (spec, ex) in enumerate(zip(s.services, s.exposed, strict=True)):
        for i, port in enumerate(ex.ports):
            at: Loc = ("services", j, "ports", i)
            node = (*at, "nodePort") if spec.workload is not None else None
            found.append(((*at, "port"), port.protocol, port.port, node, port.backend_port))
    return found


def ports(s: Settings) -> list[Fault]:
    """Two virtual services on one VIP:port and protocol, two services on one
    nodePort, or a TCP service on the LB's own SSH endpoint."""
    faults = []
    seen: dict[tuple[str, int], Loc] = {}
    nodes: dict[tuple[str, int], Loc] = {}
    every = _service_ports(s)
    for loc, proto, port, node, backend in every:
        if (proto, port) in seen:
            faults.append(
                Fault(
                    key(loc),
                    f"{port}/{proto.lower()} is also {key(seen[(proto, port)])} on the VIP",
                )
            )
        seen.setdefault((proto, port), loc)
        if node is not None:
            if (proto, backend) in nodes:
                faults.append(
                    Fault(
                        key(node),
                        f"nodePort {backend}/{proto.lower()} is also "
                        f"{key(nodes[(proto, backend)])}'s",
                    )
                )
            nodes.setdefault((proto, backend), node)
    for what, host, port in _ssh_endpoints(s):
        if as_ipv4(host) != s.network.vip:
            continue  # another address, or a host name: keepsource cannot tell
        for loc, proto, service_port, _node, _backend in every:
            if proto == "TCP" and service_port == port:
                faults.append(
                    Fault(
                        key(loc),
                        f"{service_port} is an SSH endpoint keepsource reaches the LB "
                        f"through ({what} is the VIP, port {port}): IPVS would take "
                        "those connections and lock the operator out",
                    )
                )
    return faults


def services_layout(s: Settings) -> list[Fault]:
    """The seed's single workload (nodePort, workload, allowedClients) or a
    ``services`` list, not both, not neither."""
    if s.services is None:
        return [
            Fault(key((name,)), "required (or list services)")
            for name, value in (("workload", s.workload), ("allowedClients", s.allowed_clients))
            if value is None
        ]
    # Pulumi.yaml's defaults reach the program as values ({}, [], 30080): a key
    # counts as set when it differs from its default.
    given = {
        "nodePort": s.node_port != type(s).model_fields["node_port"].default,
        "workload": s.workload is not None,
        "allowedClients": s.allowed_clients is not None,
    }
    faults = [
        Fault(
            key((name,)),
            "is set with services: a stack lists its services, each with its own ports, "
            "workload and clients (docs/services.md)",
        )
        for name, is_set in given.items()
        if is_set
    ]
    names = [spec.name for spec in s.services]
    for j, name in enumerate(names):
        if name in names[:j]:
            faults.append(Fault(key(("services", j, "name")), f"duplicate service name {name!r}"))
    return faults


def _clients(s: Settings) -> list[tuple[Loc, Net4]]:
    if s.services is None:
        return [(("allowedClients", i), c) for i, c in enumerate(s.allowed_clients or ())]
    return [
        (("services", j, "allowedClients", i), c)
        for j, spec in enumerate(s.services)
        for i, c in enumerate(spec.allowed_clients)
    ]


def _ssh_endpoints(s: Settings) -> list[tuple[str, str, int]]:
    """(what, host, port) of every SSH hop to every LB node (lb_nodes): the LB
    itself and its jump host."""
    found = []
    for node in s.lb_nodes:
        ssh, at = node.ssh, key(node.ssh_at)
        found.append((f"{at}.host", ssh.host, ssh.port))
        if ssh.jump_host is not None:
            jump = parse_destination(ssh.jump_host)
            found.append((f"{at}.jumpHost", jump.host, jump.port or 22))
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
        Fault(key(loc), f"{cidr} overlaps internalSubnet {inner}: clients come from outside")
        for loc, cidr in _clients(s)
        if cidr.overlaps(inner)
    ]


def hairpin(s: Settings) -> list[Fault]:
    net = s.network
    src = net.hairpin_source
    where = "" if net.hairpin_source_config is not None else f" (defaults to the VIP {src})"
    faults = []
    lb_inside = (
        net.lb_internal_address,
        *s.check_sources,
        *(h.internal_address for h in s.lb.hosts),
    )
    if src in lb_inside:
        faults.append(
            Fault(
                key(("network", "hairpinSource")),
                f"{src}{where} is a health-check source or an LB's internal address "
                "(lbInternalAddress, a checkAddress or an LB host's internalAddress): "
                "hairpinned clients would pass as the LB's checks",
            )
        )
    for loc, cidr in _clients(s):
        if src in cidr:
            faults.append(
                Fault(
                    key(("network", "hairpinSource")),
                    f"{src}{where} is inside {key(loc)} {cidr}: the NetworkPolicy "
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
                "is set but no workload is managed here (workload.managedBy 'external', or "
                "services with realServers only): no Kubernetes provider is declared (remove "
                "it, or manage a workload here)",
            )
        ]
    return []


def verify_clients(s: Settings) -> list[Fault]:
    """verify's two clients: inside the external subnet, reachable targets; in
    a stack written the seed's way the first is admitted and the second is not.
    With services each is checked against each service's own allowedClients."""
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
    if s.allowed_clients is None:
        return faults
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


def metrics_port(s: Settings) -> list[Fault]:
    """The exporter's port is dropped on the LB's internal addresses for anyone
    but the scrapers: never SSH's (keepsource, operators and verify come in there)."""
    if s.metrics is None:
        return []
    ssh_ports = {22} | {node.ssh.port for node in s.lb_nodes}
    if s.metrics.port in ssh_ports:
        return [
            Fault(
                key(("metrics", "port")),
                f"{s.metrics.port} is an SSH port of the LB: keepsource's INPUT chain would drop "
                "SSH to the LB's internal address from everyone but the scrapers",
            )
        ]
    return []


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
    metrics_port,
)


def cross_faults(s: Settings) -> list[Fault]:
    """Every cross-field fault of a settings record that passed field validation.
    The LB layout first: the other rules read the LB host(s) it defines."""
    layout = lb_layout(s) or services_layout(s)
    if layout:
        return layout
    return [fault for rule in RULES for fault in rule(s)]
