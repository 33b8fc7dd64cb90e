"""The LB host's gateway role: forwarding on, the internal subnet masqueraded.

Decision (see README, "Gateway rules"): keepsource keeps whatever rules the
host already has. Its own rules live in one chain of its own,
``KEEPSOURCE-POSTROUTING`` in the nat table, reached by one jump at the top
of POSTROUTING. ``rules.v4`` is that fragment, loaded with
``iptables-restore --noflush`` (declaring the chain flushes only that chain),
and the whole live rule set is then saved for iptables-persistent, so the
host's other rules survive both the apply and a reboot.
"""

from __future__ import annotations

from keepsource.settings import Settings

CHAIN = "KEEPSOURCE-POSTROUTING"
SYSCTL_PATH = "/etc/sysctl.d/90-keepsource-gateway.conf"
RULES_PATH = "/etc/iptables/keepsource.rules.v4"


def render_sysctl(settings: Settings) -> str:
    del settings  # the same for every lab; kept for a uniform renderer signature
    return (
        "# Managed by keepsource: the LB host is the nodes' default gateway.\n"
        "net.ipv4.ip_forward = 1\n"
    )


def jump_rule() -> str:
    """The rule (in iptables-save syntax, minus -A/-I) that enters our chain."""
    return f"-j {CHAIN}"


def render_rules_v4(settings: Settings) -> str:
    inner = settings.network.internal_subnet
    return "\n".join(
        [
            "# Managed by keepsource: load with iptables-restore --noflush.",
            f"# The internal subnet {inner} leaves the LB masqueraded; IPVS",
            "# replies are untracked and keep the VIP as their source.",
            "*nat",
            f":{CHAIN} - [0:0]",
            f"-I POSTROUTING 1 {jump_rule()}",
            f"-A {CHAIN} -s {inner} ! -d {inner} -j MASQUERADE",
            "COMMIT",
            "",
        ]
    )
