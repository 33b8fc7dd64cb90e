"""The desired state of one LB host, computed once from the settings.

What an LB host should be (its pools, that is the IPVS virtual services with
their real servers and checks; its keepalived.conf; its steps, each a script
with what it waits for; the facts a policy reads of it) is derived here, once
per host, from the validated :class:`~keepsource.settings.Settings`. The
component (``components/lb.py``), ``render``/``artifacts``, ``verify``,
``status`` and the lab read an :class:`LbHost`; none derives these again, and
keepalived.conf is rendered only here.

Every value is plain and known at preview: the workload's nodePort is the
config's (the Workload declares its Service with exactly that port), so no
Output of another resource reaches an LB step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keepsource.render.keepalived import (
    CLIENT_ADDRESS_PRESERVED,
    FORWARDING_METHOD,
    VirtualService,
    pools,
    render_keepalived,
)
from keepsource.render.scripts import ARG_MAX_ONE, KEEPALIVED_CONF, Step, steps
from keepsource.settings import NAMESPACE, Fault, Settings
from keepsource.settings.model import LbNode


@dataclass(frozen=True)
class LbHost:
    """One LB host's desired state (the only host, or one of a pair)."""

    settings: Settings
    node: LbNode
    pools: tuple[VirtualService, ...]
    """The IPVS virtual services, in fwmark order, as checked from this host."""
    keepalived_conf: str
    """The whole /etc/keepalived/keepalived.conf of this host."""
    steps: tuple[Step, ...]
    """The steps in apply order, each with the steps it waits for."""

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def check_source(self) -> str:
        """The address this host's health checks come from."""
        return str(self.node.check_source)

    def step(self, name: str) -> Step:
        return next(st for st in self.steps if st.name == name)

    def stdin(self, step: Step) -> str | None:
        """What a step reads on its stdin (the keepalived-config step: the conf)."""
        return self.keepalived_conf if step.stdin_artifact == KEEPALIVED_CONF else None

    def virtual_services(self) -> list[dict[str, object]]:
        """The pools as plain facts (camelCase, as a policy sees them)."""
        return [vs.facts() for vs in self.pools]

    def facts(self) -> dict[str, Any]:
        """What the policy pack reads of the LB (the component's own props)."""
        return {
            "forwardingMethod": FORWARDING_METHOD,
            "preservesClientAddress": CLIENT_ADDRESS_PRESERVED,
            "healthCheckSource": self.check_source,
            # Every host of a pair checks from its own address: all are admitted.
            "healthCheckSources": [str(a) for a in self.settings.check_sources],
            "healthCheckType": "TCP",
            "vip": str(self.settings.network.vip),
            "virtualServices": self.virtual_services(),
        }


def lb_host(settings: Settings, node: LbNode | None = None) -> LbHost:
    """The desired state of ``node`` (by default the only LB host)."""
    node = node or settings.lb_nodes[0]
    services = tuple(pools(settings, node))
    conf = render_keepalived(settings, node, services)
    return LbHost(settings, node, services, conf, tuple(steps(settings, node, services, conf)))


def lb_hosts(settings: Settings) -> tuple[LbHost, ...]:
    """Every LB host of the stack (one, or the pair's), in declaration order."""
    return tuple(lb_host(settings, node) for node in settings.lb_nodes)


def oversize_faults(settings: Settings) -> list[Fault]:
    """A step whose command would not fit in one argument even compressed:
    one fault naming the list that makes it big (checked when parsing, before
    any resource is declared). Under a thousand real servers every script fits
    inline (measured: 1,000 workers make a 50 KiB cut-over), so nothing is
    rendered then."""
    real_servers = sum(len(vs.real_servers) for vs in pools(settings))
    if real_servers < 1000:
        return []
    key = f"{NAMESPACE}:services" if settings.services is not None else f"{NAMESPACE}:workers"
    for host in lb_hosts(settings):
        for step in host.steps:
            size = len(step.command(host.node.ssh.user).encode())
            if size >= ARG_MAX_ONE:
                return [
                    Fault(
                        key,
                        f"{real_servers} real servers make the LB's {step.name} command "
                        f"{size // 1024} KiB even compressed; one SSH command holds at most "
                        f"{ARG_MAX_ONE // 1024} KiB (Linux's MAX_ARG_STRLEN): fewer workers per "
                        "LB stack, or the services split across LB stacks",
                    )
                ]
    return []
