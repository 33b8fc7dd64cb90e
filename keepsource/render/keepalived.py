"""keepalived.conf for LVS in NAT mode: the client's address reaches the pod.

Timing of the health checks (every real server gets a TCP_CHECK from the LB's
internal address, on the very port the traffic uses):

keepalived runs a check every ``delay_loop`` seconds; a check that fails is
retried ``retry`` times, ``delay_before_retry`` seconds apart, and only when
every attempt failed is the server taken out of the IPVS table. A success
re-adds it at once.

* A worker that refuses (RST: nothing listens) fails each attempt at once:
  worst case ``delay_loop + retry * delay_before_retry``.
* A worker that silently drops (``externalTrafficPolicy: Local`` and no local
  pod: kube-proxy drops the SYN) makes each attempt wait ``connect_timeout``:
  worst case ``delay_loop + (retry + 1) * connect_timeout + retry * delay_before_retry``.
* A recovered worker comes back after at most ``delay_loop`` (plus one RTT).

With the defaults (0.5 s, 1 retry, 0.5 s, 1.0 s) that is 1.0 s for a refusing
worker, 3.0 s for a dropping one, 0.5 s to re-add: within the 2 s / 3 s / 2 s
budget. The rendered file repeats the numbers for its own settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keepsource.render.metrics import VRRP_FIFO_PATH, VRRP_NOTIFY_PATH
from keepsource.settings import HealthCheck, Settings
from keepsource.settings.model import LbNode
from keepsource.settings.services import check_payload

#: The first line of every keepalived.conf keepsource writes: the LB steps
#: refuse to replace a keepalived.conf without it (unless the stack opts in).
HEADER = "# Managed by keepsource; changes here are overwritten."

#: Firewall marks of keepsource's virtual services ("ks" in the high half).
#: keepalived serves ``virtual_server fwmark N``; a mangle rule per VIP:port
#: sets N. Until the cut-over loads those rules, IPVS sees no marked packet and
#: HAProxy keeps serving: the rules are the switch (docs/design.md, "Cut-over").
FWMARK_BASE = 0x6B730000

#: What a keepsource LB does to a connection: LVS NAT rewrites the destination
#: only; the client's source address is kept end to end.
FORWARDING_METHOD = "NAT"
CLIENT_ADDRESS_PRESERVED = True


@dataclass(frozen=True)
class CheckBudget:
    refused_s: float
    dropped_s: float
    readd_s: float


def check_budget(hc: HealthCheck) -> CheckBudget:
    """Worst-case seconds for a real server to leave or rejoin the pool."""
    refused = hc.delay_loop + hc.retry * hc.delay_before_retry
    dropped = refused + (hc.retry + 1) * hc.connect_timeout
    return CheckBudget(refused_s=refused, dropped_s=dropped, readd_s=hc.delay_loop)


def fwmark(index: int) -> int:
    """The firewall mark of the index-th virtual service."""
    return FWMARK_BASE + index + 1


#: The seed's layout: the apiserver's and the workload's virtual services, in
#: this order (a stack with ``services`` numbers its own in list order).
APISERVER_FWMARK = fwmark(0)
WORKLOAD_FWMARK = fwmark(1)


_DEFAULT_CHECK = HealthCheck()


@dataclass(frozen=True)
class RealServer:
    name: str
    address: str
    port: int


@dataclass(frozen=True)
class VirtualService:
    """One IPVS virtual service: packets to ``vip:port``/``protocol`` are
    marked ``fwmark`` (the cut-over's switch) and spread over the real
    servers, each checked from ``check_source``."""

    name: str
    fwmark: int
    vip: str
    port: int
    check_source: str
    real_servers: tuple[RealServer, ...]
    protocol: str = "TCP"
    service: str = ""  # the exposed service it belongs to
    health_check: HealthCheck = _DEFAULT_CHECK
    udp_payload: str | None = None  # a UDP check's request (hex)

    def facts(self) -> dict[str, object]:
        """As a policy sees it (camelCase wire names)."""
        return {
            "name": self.name,
            "fwmark": self.fwmark,
            "vip": self.vip,
            "port": self.port,
            "protocol": self.protocol,
            "method": FORWARDING_METHOD,
            "check": {"type": self.protocol, "source": self.check_source},
            "realServers": [
                {"name": rs.name, "address": rs.address, "port": rs.port}
                for rs in self.real_servers
            ],
        }


def pools(settings: Settings, node: LbNode | None = None) -> list[VirtualService]:
    """The virtual services, one per exposed port (the apiserver's, then the
    workload's in the seed's layout), as checked from ``node`` (an LB host; by
    default the only one). Read them from :class:`keepsource.host.LbHost`,
    which computes them once per host."""
    vip = str(settings.network.vip)
    source = str((node or settings.lb_nodes[0]).check_source)
    found: list[VirtualService] = []
    for ex in settings.exposed:
        for port in ex.ports:
            backend = port.backend_port
            found.append(
                VirtualService(
                    ex.pool_name(port),
                    fwmark(len(found)),
                    vip,
                    backend if ex.legacy else port.port,
                    source,
                    tuple(RealServer(name, addr, backend) for name, addr in ex.real_servers),
                    port.protocol,
                    ex.name,
                    ex.health_check,
                    check_payload(ex.check) if port.protocol == "UDP" else None,
                )
            )
    return found


#: VRRP instance names of a pair (docs/pair.md).
VRRP_EXTERNAL = "KEEPSOURCE_EXT"
VRRP_INTERNAL = "KEEPSOURCE_INT"


def _vrrp(settings: Settings, node: LbNode) -> list[str]:
    """A pair's VRRP: the VIP and the nodes' gateway address move together (a
    sync group), unicast adverts to the peer (many networks drop multicast),
    sub-second adverts (VRRPv3), both BACKUP with nopreempt so a returning
    host never takes the addresses back."""
    net, vrrp = settings.network, settings.lb.vrrp
    assert node.external_interface and node.internal_interface
    instances = [
        (VRRP_EXTERNAL, node.external_interface, vrrp.virtual_router_id, node.external_address,
         node.peer_external, net.vip, net.external_subnet.prefixlen),
        (VRRP_INTERNAL, node.internal_interface, vrrp.virtual_router_id + 1, node.internal_address,
         node.peer_internal, net.lb_internal_address, net.internal_subnet.prefixlen),
    ]  # fmt: skip
    lines = [
        "",
        "# The VIP and the nodes' gateway address float together.",
        "vrrp_sync_group KEEPSOURCE {",
        "    group {",
        f"        {VRRP_EXTERNAL}",
        f"        {VRRP_INTERNAL}",
        "    }",
        "}",
    ]
    for name, iface, vrid, own, peer, address, prefix in instances:
        lines += [
            "",
            f"vrrp_instance {name} {{",
            "    state BACKUP",
            "    nopreempt",
            f"    interface {iface}",
            f"    virtual_router_id {vrid}",
            f"    priority {node.priority}",
            f"    advert_int {_num(vrrp.advert_interval)}",
            # Adverts only from the declared peer: without it any host on the
            # link that sends a higher-priority advert for the VRID takes the
            # VIP and the nodes' gateway (keepalived's own source check).
            "    check_unicast_src",
            f"    unicast_src_ip {own}",
            "    unicast_peer {",
            f"        {peer}",
            "    }",
            "    virtual_ipaddress {",
            f"        {address}/{prefix} dev {iface}",
            "    }",
            "}",
        ]
    return lines


def _num(value: float) -> str:
    return f"{value:g}"


def render_keepalived(settings: Settings, node: LbNode, services: Sequence[VirtualService]) -> str:
    """The whole /etc/keepalived/keepalived.conf of the LB host ``node`` with
    its ``services`` (called once per host, by :func:`keepsource.host.lb_host`)."""
    hc = settings.health_check
    budget = check_budget(hc)
    lines = [
        HEADER,
        "# LVS NAT: the client's address reaches the real server (no proxy ends the",
        "# connection), so the pod's NetworkPolicy sees the real client.",
        "# Health checks: TCP connect from the LB's internal address to the real",
        "# server's port. Worst case to leave the pool:",
        f"#   refusing worker: delay_loop {_num(hc.delay_loop)} + retry {hc.retry}"
        f" x delay_before_retry {_num(hc.delay_before_retry)} = {_num(budget.refused_s)} s",
        f"#   dropping worker: {_num(budget.refused_s)} + (retry {hc.retry} + 1)"
        f" x connect_timeout {_num(hc.connect_timeout)} = {_num(budget.dropped_s)} s",
        f"#   re-add a recovered worker: delay_loop = {_num(budget.readd_s)} s",
        "",
        "global_defs {",
        f"    router_id keepsource-{node.name}" if settings.is_pair else "    router_id keepsource",
    ]
    if settings.is_pair and settings.metrics is not None:
        # Each VRRP state change, in order, into a FIFO that one reader of
        # keepsource's turns into the node exporter's textfile (notify scripts,
        # one process per change, can finish out of order). It runs as root;
        # keepalived checks no one else can write it.
        lines += [
            "    script_user root",
            "    enable_script_security",
            f"    vrrp_notify_fifo {VRRP_FIFO_PATH}",
            f"    vrrp_notify_fifo_script {VRRP_NOTIFY_PATH}",
        ]
    if settings.is_pair:
        lines += [
            "    vrrp_version 3",
            # IPVS connections are synced to the peer (kernel sync daemon,
            # multicast on the internal link), so open ones survive a failover.
            f"    lvs_sync_daemon {node.internal_interface} {VRRP_INTERNAL}"
            f" id {settings.lb.vrrp.virtual_router_id}",
        ]
    lines.append("}")
    if settings.is_pair:
        lines += _vrrp(settings, node)
    for vs in services:
        lines += _virtual_server(vs, hc)
    return "\n".join(lines) + "\n"


def _virtual_server(vs: VirtualService, default: HealthCheck) -> list[str]:
    hc = vs.health_check
    lines = [
        "",
        f"# {vs.name}: {vs.vip}:{vs.port}/{vs.protocol.lower()} (packets marked {vs.fwmark:#x})",
        f"virtual_server fwmark {vs.fwmark} {{",
        f"    delay_loop {_num(hc.delay_loop)}",
        "    lvs_sched rr",
        f"    lvs_method {FORWARDING_METHOD}",
    ]
    # no `protocol`: a fwmark service has none (keepalived ignores it and
    # warns); the switch rule marks UDP or TCP packets.
    lines += [
        "    # no traffic to a real server until its first check passed",
        "    alpha",
    ]
    if hc != default:
        lines.insert(
            2,
            f"# its own check timing: leaves the pool within {_num(check_budget(hc).dropped_s)} s",
        )
    for rs in vs.real_servers:
        check = ["        TCP_CHECK {"]
        if vs.protocol == "UDP":
            # A reply is required: a node that drops the datagram (no local pod
            # with externalTrafficPolicy: Local) sends no ICMP error either.
            check = [
                "        UDP_CHECK {",
                f"            payload {vs.udp_payload}",
                "            require_reply",
            ]
        lines += [
            "",
            f"    real_server {rs.address} {rs.port} {{",
            "        weight 1",
            *check,
            f"            connect_port {rs.port}",
            f"            bindto {vs.check_source}",
            f"            connect_timeout {_num(hc.connect_timeout)}",
            f"            retry {hc.retry}",
            f"            delay_before_retry {_num(hc.delay_before_retry)}",
            "        }",
            "    }",
        ]
    lines.append("}")
    return lines
