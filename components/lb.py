"""LoadBalancerHost: the LB host driven over SSH, one remote command per step."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pulumi

from keepsource.connection import lb_connection
from keepsource.render.keepalived import (
    CLIENT_ADDRESS_PRESERVED,
    FORWARDING_METHOD,
    render_keepalived,
    virtual_services,
)
from keepsource.render.scripts import (
    CUTOVER_STEPS,
    KEEPALIVED_CONF,
    LB_TYPE,
    Step,
    host_steps,
    service_steps,
)
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
    """The validated stack settings: addresses, workers, SSH and check timing."""

    node_port: pulumi.Input[int]
    """The Service's nodePort: the port of VIP:nodePort and of every worker."""

    private_key: pulumi.Input[str] | None = None
    """SSH private key of the LB host (and of the jump host): a secret Output.
    None: the SSH agent is used."""

    cutover_after: Sequence[pulumi.Resource] = ()
    """Resources the cut-over (switching traffic from HAProxy to IPVS) waits
    for: the Workload's Deployment and NetworkPolicy. Package installation
    does not wait for them."""

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
    proxy = None
    if conn.jump is not None:
        proxy = remote.ProxyConnectionArgs(
            host=conn.jump.host,
            port=conn.jump.port,
            user=conn.jump.user,
            private_key=key,
            host_key=conn.jump.host_key,
        )
    return remote.ConnectionArgs(
        host=conn.lb.host,
        port=conn.lb.port,
        user=conn.lb.user,
        private_key=key,
        host_key=conn.lb.host_key,
        proxy=proxy,
        dial_error_limit=10,
        per_dial_timeout=15,
    )


def _pick(name: str, by_name: dict[str, Step]) -> Step:
    return by_name[name]


def _digest(step_and_conf: list[Any]) -> str:
    step, conf = step_and_conf
    assert isinstance(step, Step)
    return step.digest(conf if step.stdin_artifact == KEEPALIVED_CONF else None)


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
        settings = args.settings
        node = args.host()
        source = str(node.check_source)
        node_port = pulumi.Output.from_input(args.node_port).apply(int)
        services = node_port.apply(lambda p: virtual_services(settings, p, node))
        # Facts a policy needs. All but virtualServices are plain values, known at
        # preview; virtualServices follows the Service's nodePort.
        facts: dict[str, Any] = {
            "forwardingMethod": FORWARDING_METHOD,
            "preservesClientAddress": CLIENT_ADDRESS_PRESERVED,
            "healthCheckSource": source,
            # Every host of a pair checks from its own address: all are admitted.
            "healthCheckSources": [str(a) for a in settings.check_sources],
            "healthCheckType": "TCP",
            "vip": str(settings.network.vip),
            "virtualServices": services,
        }
        super().__init__(TYPE, name, facts, opts)

        conf = node_port.apply(lambda p: render_keepalived(settings, p, node))
        connection = _connection(args)
        user = node.ssh.user
        self.commands = {}

        def declare(
            step_name: str,
            script: pulumi.Input[str],
            stdin: pulumi.Input[str] | None,
            digest: pulumi.Input[str],
            after: list[pulumi.Resource],
        ) -> None:
            command = pulumi.Output.from_input(script).apply(
                lambda text: Step.command_line(text, step_name, user)
            )
            self.commands[step_name] = remote.Command(
                f"{name}-{step_name}",
                connection=connection,
                create=command,
                update=command,
                stdin=stdin,
                triggers=[digest],
                # Command output is not kept in logs; failures still carry it.
                logging=remote.Logging.NONE,
                add_previous_output_in_env=False,
                opts=pulumi.ResourceOptions(parent=self, depends_on=after),
            )

        # Host steps are plain text, known at preview: they do not wait for
        # Kubernetes. The service steps follow the Service's nodePort; the
        # cut-over also waits for the Workload (args.cutover_after).
        for step in host_steps(settings):
            after = [self.commands[d] for d in step.depends_on]
            declare(step.name, step.script, None, step.digest(), after)
        # The steps' names and order do not depend on the port: declare them
        # from the config's, fill in each script from the Service's.
        rendered = node_port.apply(lambda p: {s.name: s for s in service_steps(settings, p, node)})
        for shape in service_steps(settings, settings.node_port, node):
            after = [self.commands[d] for d in shape.depends_on]
            if shape.name in CUTOVER_STEPS:
                after += list(args.cutover_after)
            picked = rendered.apply(partial(_pick, shape.name))
            stdin = conf if shape.stdin_artifact == KEEPALIVED_CONF else None
            script = picked.apply(lambda s: s.script)
            digest = pulumi.Output.all(picked, conf).apply(_digest)
            declare(shape.name, script, stdin, digest, after)

        self.keepalived_conf = conf
        self.virtual_services = services
        self.health_check_source = pulumi.Output.from_input(source)
        self.forwarding_method = pulumi.Output.from_input(FORWARDING_METHOD)
        self.preserves_client_address = pulumi.Output.from_input(CLIENT_ADDRESS_PRESERVED)
        self.register_outputs(
            {
                **facts,
                "keepalivedConf": conf,
                "commands": list(self.commands),
            }
        )
