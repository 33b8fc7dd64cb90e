"""LoadBalancerHost: the LB host driven over SSH, one remote command per step."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from keepsource.connection import Hop, lb_connection
from keepsource.host import lb_host
from keepsource.render.keepalived import CLIENT_ADDRESS_PRESERVED, FORWARDING_METHOD
from keepsource.render.scripts import CUTOVER_STEPS, LB_TYPE
from keepsource.settings import Settings
from keepsource.settings.model import LbNode

with warnings.catch_warnings():
    # pulumi_command.remote imports its deprecated CopyFile; keepsource does not use it.
    warnings.simplefilter("ignore", DeprecationWarning)
    from pulumi_command import remote

    remote.Command  # noqa: B018 (the package loads lazily: load it here)

TYPE = LB_TYPE


@dataclass
class LoadBalancerHostArgs:
    settings: Settings
    """The validated stack settings: addresses, workers, SSH, check timing and
    the nodePort (the Workload declares its Service with exactly that port, so
    the LB never waits for the Service to learn it)."""

    private_key: pulumi.Input[str] | None = None
    """SSH private key of the LB host (and of the jump host): a secret Output.
    None: the SSH agent is used."""

    private_key_password: pulumi.Input[str] | None = None
    """The passphrase of an encrypted ``private_key``: a secret Output."""

    cutover_after: Sequence[pulumi.Resource] = ()
    """Resources the cut-over (switching traffic from HAProxy to IPVS) waits
    for: the Workload's Deployment, Service and NetworkPolicy. No other step
    waits for them."""

    node: LbNode | None = None
    """Which LB host (``settings.lb_nodes``): one component per host of a pair.
    None: the only one."""

    def host(self) -> LbNode:
        return self.node or self.settings.lb_nodes[0]


def _connection(args: LoadBalancerHostArgs) -> remote.ConnectionArgs:
    """pulumi-command's connection from keepsource's connection model
    (keepsource/connection.py, shared with ``keepsource verify``): the LB's and
    the jump host's pinned host keys (``host_key``: without it pulumi-command
    does not check the key), the jump host as ``proxy``, one secret key."""
    conn = lb_connection(args.settings, args.host())
    key = pulumi.Output.secret(args.private_key) if args.private_key is not None else None
    password = (
        pulumi.Output.secret(args.private_key_password)
        if args.private_key_password is not None
        else None
    )

    def hop(h: Hop) -> dict[str, Any]:
        """One endpoint: the same key (and passphrase) for the LB and the jump."""
        return dict(
            host=h.host,
            port=h.port,
            user=h.user,
            private_key=key,
            private_key_password=password,
            host_key=h.host_key,
        )

    proxy = remote.ProxyConnectionArgs(**hop(conn.jump)) if conn.jump is not None else None
    return remote.ConnectionArgs(
        **hop(conn.lb), proxy=proxy, dial_error_limit=10, per_dial_timeout=15
    )


class LoadBalancerHost(pulumi.ComponentResource):
    """keepalived/LVS NAT on the LB host, HAProxy off, the gateway role kept."""

    keepalived_conf: pulumi.Output[str]
    """The rendered keepalived.conf, as made live on the host."""
    virtual_services: pulumi.Output[list[dict[str, Any]]]
    """VIP:port -> real servers, with their checks."""
    health_check_source: pulumi.Output[str]
    """The address the LB's health checks come from (admit it in the NetworkPolicy)."""
    forwarding_method: pulumi.Output[str]
    """LVS forwarding method ("NAT")."""
    preserves_client_address: pulumi.Output[bool]
    """Whether the real servers see the client's own address (LVS NAT: yes)."""
    commands: dict[str, remote.Command]
    """The remote commands by step name."""

    def __init__(
        self, name: str, args: LoadBalancerHostArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        host = lb_host(args.settings, args.host())
        # Everything here is a plain value, known at preview. The component's
        # props must not hold an Output of another resource: the SDK registers
        # a component only once its props resolve, and its children need its
        # URN, so a prop that followed the Service would hold every LB step
        # back until the Service is ready (pulumi 3.272.0 runtime/resource.py,
        # register_resource -> prepare_resource awaits all props).
        # Facts a policy needs, as the component's own props.
        facts = host.facts()
        super().__init__(TYPE, name, facts, opts)

        connection = _connection(args)
        user = host.node.ssh.user
        self.commands = {}
        # The step graph as the host declares it; packages and gateway wait
        # for nothing in Kubernetes, the cut-over also waits for the Workload
        # (args.cutover_after).
        for step in host.steps:
            after: list[pulumi.Resource] = [self.commands[d] for d in step.depends_on]
            if step.name in CUTOVER_STEPS:
                after += list(args.cutover_after)
            stdin = host.stdin(step)
            command = step.command(user)
            self.commands[step.name] = remote.Command(
                f"{name}-{step.name}",
                connection=connection,
                create=command,
                update=command,
                stdin=stdin,
                triggers=[step.digest(stdin)],
                # Command output is not kept in logs; failures still carry it.
                logging=remote.Logging.NONE,
                add_previous_output_in_env=False,
                opts=pulumi.ResourceOptions(parent=self, depends_on=after),
            )

        self.keepalived_conf = pulumi.Output.from_input(host.keepalived_conf)
        self.virtual_services = pulumi.Output.from_input(host.virtual_services())
        self.health_check_source = pulumi.Output.from_input(host.check_source)
        self.forwarding_method = pulumi.Output.from_input(FORWARDING_METHOD)
        self.preserves_client_address = pulumi.Output.from_input(CLIENT_ADDRESS_PRESERVED)
        self.register_outputs(
            {
                **facts,
                "keepalivedConf": host.keepalived_conf,
                "commands": list(self.commands),
            }
        )
