"""The LB host's netfilter and sysctl fragments: the gateway role, the hairpin
for internal clients of the VIP, and the traffic switch of the cut-over.

Decision (docs/design.md, "The host's rules stay the host's"): keepsource owns only
chains of its own and the jumps into them, never the host's rule set:

* nat ``KEEPSOURCE-POSTROUTING``: MASQUERADE of the internal subnet (the
  gateway role). Its jump is *appended* to POSTROUTING, so the host's own NAT
  rules (exemptions, its own MASQUERADE) keep deciding first.
* nat ``KEEPSOURCE-HAIRPIN``: internal clients of a VIP service are
  source-NATed to ``network.hairpinSource`` (default: the VIP), so the real
  server's reply comes back through the LB. Its jump goes *first*: it matches
  only packets keepsource itself marked for IPVS, so it shadows nothing of the
  host's, and no host MASQUERADE can rewrite them to the check source (which
  the NetworkPolicy admits).
* filter ``KEEPSOURCE-INPUT``: with ``metrics``, the exporter's port on each
  LB host's internal address is accepted from the scrapers and dropped from
  anyone else (jump first: no host rule opens it wider); empty otherwise.
* mangle ``KEEPSOURCE-SWITCH``: one MARK rule per VIP:port. keepalived's
  virtual servers are ``fwmark`` services, so IPVS takes a VIP's traffic only
  once these rules are live; the cut-over loads them after the pools are
  healthy. Jump first in PREROUTING (MARK does not end the chain).

Each fragment is loaded with ``iptables-restore --noflush`` (declaring a
chain flushes only that chain) by one loader script, ``net-load``, which the
gateway step runs at apply and the unit ``keepsource-net.service`` runs at
boot (after the network and the host's own rules, before keepalived). Nothing
saves the host's live rule set.
"""

from __future__ import annotations

from collections.abc import Sequence

from keepsource.render.keepalived import FWMARK_BASE, VirtualService
from keepsource.settings import Settings

CHAIN = "KEEPSOURCE-POSTROUTING"
HAIRPIN_CHAIN = "KEEPSOURCE-HAIRPIN"
SWITCH_CHAIN = "KEEPSOURCE-SWITCH"
#: filter: who may reach keepsource's own listeners on the LB (the metrics
#: exporter); empty without ``metrics``. Jump first in INPUT.
INPUT_CHAIN = "KEEPSOURCE-INPUT"
ETC = "/etc/keepsource"
SYSCTL_PATH = "/etc/sysctl.d/90-keepsource-gateway.conf"
IPVS_SYSCTL_PATH = f"{ETC}/ipvs.sysctl"
RULES_PATH = f"{ETC}/gateway.rules"
SWITCH_PATH = f"{ETC}/switch.rules"
LOADER_PATH = "/usr/local/lib/keepsource/net-load"
UNIT = "keepsource-net.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
#: Where the previous release kept its fragment (removed by the gateway step).
LEGACY_RULES_PATH = "/etc/iptables/keepsource.rules.v4"
MARK_MASK = 0xFFFF0000


def render_sysctl(settings: Settings) -> str:
    del settings  # the same for every lab; kept for a uniform renderer signature
    return (
        "# Managed by keepsource: the LB host is the nodes' default gateway.\n"
        "net.ipv4.ip_forward = 1\n"
    )


def render_ipvs_sysctl(settings: Settings) -> str:
    """Applied by net-load after ``modprobe ip_vs`` (systemd-sysctl runs before
    the module exists): IPVS connections get conntrack entries, which the
    hairpin SNAT needs."""
    del settings
    return (
        "# Managed by keepsource: conntrack for IPVS connections (hairpin SNAT).\n"
        "net.ipv4.vs.conntrack = 1\n"
    )


def render_rules_v4(settings: Settings) -> str:
    """The nat fragment (hairpin SNAT and the gateway's MASQUERADE) and the
    filter fragment (keepsource's listeners)."""
    net = settings.network
    inner = net.internal_subnet
    return "\n".join(
        [
            "# Managed by keepsource: loaded with iptables-restore --noflush by net-load.",
            f"# {HAIRPIN_CHAIN}: internal clients of a VIP service (packets marked by",
            f"# {SWITCH_CHAIN}) leave towards the real server as {net.hairpin_source}.",
            f"# {CHAIN}: the internal subnet {inner} leaves the LB masqueraded.",
            "*nat",
            f":{HAIRPIN_CHAIN} - [0:0]",
            f":{CHAIN} - [0:0]",
            f"-A {HAIRPIN_CHAIN} -s {inner} -m mark --mark {FWMARK_BASE:#x}/{MARK_MASK:#x}"
            f" -j SNAT --to-source {net.hairpin_source}",
            f"-A {CHAIN} -s {inner} ! -d {inner} -j MASQUERADE",
            "COMMIT",
            *render_input_rules(settings),
            "",
        ]
    )


def render_input_rules(settings: Settings) -> list[str]:
    """The filter fragment: the metrics port for the scrapers only; a pair's
    VRRP and IPVS sync from the pair only."""
    lines = [f"# {INPUT_CHAIN}: keepsource's listeners on the LB, for their clients only.",
             "*filter", f":{INPUT_CHAIN} - [0:0]"]  # fmt: skip
    m = settings.metrics
    if m is not None:
        listen = [str(a) for a in dict.fromkeys(n.internal_address for n in settings.lb_nodes)]
        port = f"-p tcp -m tcp --dport {m.port}"
        for dest in listen:
            # The host itself (the metrics step's own check, a local agent).
            lines.append(f"-A {INPUT_CHAIN} -d {dest}/32 -i lo {port} -j ACCEPT")
            for cidr in m.scrapers:
                lines.append(f"-A {INPUT_CHAIN} -s {cidr} -d {dest}/32 {port} -j ACCEPT")
        for dest in listen:
            lines.append(f"-A {INPUT_CHAIN} -d {dest}/32 {port} -j DROP")
    if settings.is_pair:
        lines += _pair_rules(settings)
    return [*lines, "COMMIT"]


#: The IPVS sync daemon's UDP port (the kernel's default; keepalived's
#: lvs_sync_daemon uses it unless told otherwise).
SYNC_PORT = 8848


def _pair_rules(settings: Settings) -> list[str]:
    """A pair's VRRP adverts and IPVS sync messages from the pair's own
    addresses only: anyone else on the link could take the VIPs (keepalived's
    check_unicast_src refuses them too) or write the backup's connection table
    (the sync daemon itself checks no source). The same rules on both hosts."""
    nodes = settings.lb_nodes
    own = sorted({str(a) for n in nodes for a in (n.external_address, n.internal_address) if a})
    internal = sorted({str(n.internal_address) for n in nodes})
    sync = f"-p udp -m udp --dport {SYNC_PORT}"
    return [
        *(f"-A {INPUT_CHAIN} -s {a}/32 -p vrrp -j ACCEPT" for a in own),
        f"-A {INPUT_CHAIN} -p vrrp -j DROP",
        *(f"-A {INPUT_CHAIN} -s {a}/32 {sync} -j ACCEPT" for a in internal),
        f"-A {INPUT_CHAIN} {sync} -j DROP",
    ]


def render_switch_rules(services: Sequence[VirtualService]) -> str:
    """The mangle fragment that hands VIP:port to IPVS (the cut-over's switch),
    for an LB host's pools."""
    lines = [
        "# Managed by keepsource: the cut-over's switch. Each rule marks one VIP:port",
        "# for keepalived's fwmark virtual server; without it HAProxy (if any) serves.",
        "*mangle",
        f":{SWITCH_CHAIN} - [0:0]",
    ]
    for vs in services:
        lines.append(
            f"-A {SWITCH_CHAIN} -d {vs.vip}/32 -p {vs.protocol.lower()} -m {vs.protocol.lower()}"
            f" --dport {vs.port}"
            f" -j MARK --set-xmark {vs.fwmark:#x}/0xffffffff"
        )
    return "\n".join([*lines, "COMMIT", ""])


def render_unit() -> str:
    return "\n".join(
        [
            "# Managed by keepsource.",
            "[Unit]",
            "Description=keepsource: LB forwarding, IPVS conntrack and netfilter fragments",
            "After=network.target netfilter-persistent.service ufw.service",
            "Before=keepalived.service",
            "",
            "[Service]",
            "Type=oneshot",
            "RemainAfterExit=yes",
            f"ExecStart={LOADER_PATH}",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )
