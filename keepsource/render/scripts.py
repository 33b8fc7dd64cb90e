"""The LB host's steps: one idempotent bash script each, in a fixed order.

Each :class:`Step` is exactly what runs on the host: the command line (the
script, wrapped for sudo when the SSH user is not root) and its stdin. The
LoadBalancerHost component declares one ``remote.Command`` per step; the
engine runs them over SSH. Every script ends with one
line ``keepsource: STEP: changed`` or ``... unchanged``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from keepsource.render import gateway, metrics
from keepsource.render.keepalived import HEADER, VirtualService
from keepsource.settings import Settings
from keepsource.settings.model import SINGLE_LB_NAME, LbNode
from keepsource.transport import as_root


def _template(name: str) -> str:
    return resources.files("keepsource.scripts").joinpath(name).read_text()


#: The longest command line sent as plain text (see ``Step.command_line``).
INLINE_MAX = 64 * 1024
#: What one argument may hold on Linux (MAX_ARG_STRLEN: 32 pages of 4 KiB).
ARG_MAX_ONE = 128 * 1024


#: The artifact a step reads on stdin (only keepalived-config takes one: the
#: rendered keepalived.conf, which depends on the Service's nodePort Output).
#: Also the name a stack gives in ``lb.takeOver`` to let keepsource replace a
#: keepalived.conf it did not write.
KEEPALIVED_CONF = "keepalived.conf"
#: The name in ``lb.takeOver`` that lets the cut-over stop a HAProxy that also
#: serves what keepsource does not take over.
HAPROXY = "haproxy"


@dataclass(frozen=True)
class Step:
    name: str
    script: str
    stdin_artifact: str | None
    depends_on: tuple[str, ...]
    description: str

    def command(self, user: str) -> str:
        return self.command_line(self.script, self.name, user)

    @staticmethod
    def command_line(script: str, name: str, user: str) -> str:
        """The remote command line; non-root users go through ``sudo -n`` (no TTY).

        sshd hands the whole command to the login shell as one argument, and
        Linux caps one argument at MAX_ARG_STRLEN (128 KiB). A script that
        fits in :data:`INLINE_MAX` travels as it is (readable in `pulumi
        preview`); a bigger one (thousands of real servers) travels gzipped
        and base64-encoded, checked whole (gzip's CRC) before bash reads it
        from a pipe, so stdin stays the step's own.
        """
        inline = as_root(user, ["/bin/bash", "-c", script, f"keepsource-{name}"])
        if len(inline.encode()) <= INLINE_MAX:
            return inline
        packed = base64.b64encode(gzip.compress(script.encode(), 9, mtime=0)).decode()
        loader = (
            f"z={packed}; "
            'printf %s "$z" | base64 -d | gzip -t 2>/dev/null || '
            "{ echo 'keepsource: the step script arrived damaged; nothing ran' >&2; exit 1; }; "
            'exec /bin/bash <(printf %s "$z" | base64 -d | gzip -dc)'
        )
        return as_root(user, ["/bin/bash", "-c", loader, f"keepsource-{name}"])

    def digest(self, stdin: str | None = None) -> str:
        return self.digest_of(self.script, stdin)

    @staticmethod
    def digest_of(script: str, stdin: str | None = None) -> str:
        """Content hash of script and stdin: the step re-runs when (and only
        when) this changes."""
        h = hashlib.sha256(script.encode())
        h.update(b"\0stdin\0")
        h.update((stdin or "").encode())
        return h.hexdigest()


def _script(name: str, body: str) -> str:
    return (
        "#!/bin/bash\n"
        f"# keepsource LB step '{name}': generated, do not edit.\n"
        f"KS_STEP={name}\n" + _template("lib.sh") + body
    )


#: Where the LB steps keep their own state on the host (staged config, the
#: digest keepalived last loaded, backups).
STATE_DIR = "/var/lib/keepsource"
#: Packages the LB needs (iptables-persistent no longer: keepsource persists
#: its own fragments with its own unit, and ufw conflicts with it).
PACKAGES = "keepalived ipvsadm"
#: Seconds HAProxy's open connections get to finish after the switch.
DRAIN_S = 10


def _fill(body: str, values: dict[str, str]) -> str:
    for token, value in values.items():
        body = body.replace(token, value)
    if "__KS_" in body:
        raise ValueError(f"unfilled token in a step script: {body[body.index('__KS_') :][:40]}")
    return body


def net_loader() -> str:
    """The loader script (boot unit and apply), exactly as installed on the host."""
    return _fill(
        _template("net_load.sh"),
        {
            "__KS_SYSCTL_PATH__": gateway.SYSCTL_PATH,
            "__KS_IPVS_SYSCTL_PATH__": gateway.IPVS_SYSCTL_PATH,
            "__KS_RULES_PATH__": gateway.RULES_PATH,
            "__KS_SWITCH_PATH__": gateway.SWITCH_PATH,
            "__KS_HAIRPIN_CHAIN__": gateway.HAIRPIN_CHAIN,
            "__KS_SWITCH_CHAIN__": gateway.SWITCH_CHAIN,
            "__KS_INPUT_CHAIN__": gateway.INPUT_CHAIN,
            "__KS_CHAIN__": gateway.CHAIN,
            "__KS_UNIT__": gateway.UNIT,
        },
    )


def gateway_script(settings: Settings) -> str:
    body = _fill(
        _template("gateway.sh"),
        {
            "__KS_SYSCTL_PATH__": gateway.SYSCTL_PATH,
            "__KS_IPVS_SYSCTL_PATH__": gateway.IPVS_SYSCTL_PATH,
            "__KS_RULES_PATH__": gateway.RULES_PATH,
            "__KS_LEGACY_RULES_PATH__": gateway.LEGACY_RULES_PATH,
            "__KS_LOADER_PATH__": gateway.LOADER_PATH,
            "__KS_UNIT_PATH__": gateway.UNIT_PATH,
            "__KS_UNIT_TEXT__": gateway.render_unit().rstrip("\n"),
            "__KS_UNIT__": gateway.UNIT,
            "__KS_ETC__": gateway.ETC,
            "__KS_SYSCTL__": gateway.render_sysctl(settings).rstrip("\n"),
            "__KS_IPVS_SYSCTL__": gateway.render_ipvs_sysctl(settings).rstrip("\n"),
            "__KS_RULES__": gateway.render_rules_v4(settings).rstrip("\n"),
            "__KS_LOADER__": net_loader().rstrip("\n"),
        },
    )
    return _script("gateway", body)


def conf_sha(conf: str) -> str:
    return hashlib.sha256(conf.encode()).hexdigest()


def _take_over(settings: Settings) -> str:
    return "yes" if KEEPALIVED_CONF in settings.lb.take_over else "no"


def keepalived_config_script(settings: Settings, conf: str, node: LbNode | None = None) -> str:
    # One LB: the VIP, the gateway and the hairpin source are its own. A pair:
    # each host's own addresses (the VIP and the gateway float between them).
    node = node or settings.lb_nodes[0]
    lines = [f"{addr} {key}" for addr, key in node.own_addresses]
    body = _fill(
        _template("keepalived_config.sh"),
        {
            "__KS_STATE_DIR__": STATE_DIR,
            "__KS_CONF_SHA__": conf_sha(conf),
            "__KS_HEADER__": HEADER,
            "__KS_TAKE_OVER__": _take_over(settings),
            "__KS_ADDRESSES__": "\n".join(lines),
        },
    )
    return _script("keepalived-config", body)


def cutover_script(
    settings: Settings, node: LbNode, services: Sequence[VirtualService], conf: str
) -> str:
    by_pool = [f"{vs.fwmark} {vs.name} {vs.vip} {vs.port} {vs.protocol.lower()}" for vs in services]
    real = [
        f"{vs.fwmark} {rs.address} {rs.port} {rs.name}" for vs in services for rs in vs.real_servers
    ]
    ports = " or ".join(f"sport = :{vs.port}" for vs in services)
    body = _fill(
        _template("cutover.sh"),
        {
            "__KS_STATE_DIR__": STATE_DIR,
            "__KS_SWITCH_PATH__": gateway.SWITCH_PATH,
            "__KS_LOADER_PATH__": gateway.LOADER_PATH,
            "__KS_CONF_SHA__": conf_sha(conf),
            "__KS_HEADER__": HEADER,
            "__KS_TAKE_OVER__": _take_over(settings),
            "__KS_TIMEOUT__": str(math.ceil(settings.lb.cutover_timeout)),
            "__KS_DRAIN__": str(DRAIN_S),
            "__KS_CHECK_SOURCE__": str(node.check_source),
            "__KS_POOLS__": "\n".join(by_pool),
            "__KS_REAL_SERVERS__": "\n".join(real),
            "__KS_SWITCH__": gateway.render_switch_rules(services).rstrip("\n"),
            "__KS_SS_FILTER__": ports,
            "__KS_STOP_HAPROXY__": "yes" if HAPROXY in settings.lb.take_over else "no",
            "__KS_VIP__": str(settings.network.vip),
            "__KS_FLOATING__": f"{settings.network.vip} {settings.network.lb_internal_address}",
            "__KS_PAIR__": "yes" if settings.is_pair else "no",
            "__KS_OWN_PORTS__": " ".join(sorted({str(vs.port) for vs in services})),
        },
    )
    return _script("cutover", body)


def _exporter_dropin(settings: Settings, node: LbNode | None) -> str:
    """The node exporter's systemd drop-in, written by ``ks_dropin`` (the
    packages step before the first install, the metrics step every run)."""
    return "\n".join(
        [
            f"ks_dropin {metrics.DROPIN_PATH} <<'KEEPSOURCE_DROPIN'",
            metrics.render_dropin(settings, node).rstrip("\n"),
            "KEEPSOURCE_DROPIN",
        ]
    )


def metrics_script(settings: Settings, node: LbNode | None = None) -> str:
    address, port = metrics.listen(settings, node).rsplit(":", 1)
    body = _fill(
        _template("metrics.sh"),
        {
            "__KS_PUT_DROPIN__": _exporter_dropin(settings, node),
            "__KS_PACKAGE__": metrics.PACKAGE,
            "__KS_UNIT__": metrics.UNIT,
            "__KS_LISTEN__": address,
            "__KS_PORT__": port,
            "__KS_VRRP_NOTIFY__": _vrrp_notify() if settings.is_pair else "",
        },
    )
    return _script("metrics", body)


def packages_script(settings: Settings, node: LbNode | None = None) -> str:
    """keepalived and ipvsadm; with metrics, the node exporter in the same apt
    run, its drop-in written first (only before its first install: later
    changes to it are the metrics step's, which restarts it)."""
    if settings.metrics is None:
        fills = {"__KS_BEFORE_INSTALL__": "", "__KS_PACKAGES__": PACKAGES}
    else:
        before = "\n".join(
            [
                "# The node exporter's drop-in before its package: it never listens anywhere else.",
                f"if ! ks_installed {metrics.PACKAGE}; then",
                "  " + _exporter_dropin(settings, node),
                "fi",
            ]
        )
        fills = {
            "__KS_BEFORE_INSTALL__": before,
            "__KS_PACKAGES__": f"{PACKAGES} {metrics.PACKAGE}",
        }
    return _script("packages", _fill(_template("packages.sh"), fills))


def _vrrp_notify() -> str:
    """The metrics step's part for a pair: keepalived's VRRP FIFO reader."""
    path = metrics.VRRP_NOTIFY_PATH
    return "\n".join(
        [
            f'install -d -m 0755 "$(dirname {path})"',
            f"ks_put {path} 0755 <<'KEEPSOURCE_VRRP_NOTIFY'",
            metrics.vrrp_state_script().rstrip("\n"),
            "KEEPSOURCE_VRRP_NOTIFY",
        ]
    )


def host_steps(settings: Settings, node: LbNode | None = None) -> list[Step]:
    """The steps that need nothing from Kubernetes (known at preview)."""
    return [
        # The gateway needs nothing of the packages step (iptables, the ip_vs
        # and xt_ipvs modules are the host's own): the engine starts it at once (on
        # the host the steps take turns: lib.sh's lock).
        Step(
            "gateway",
            gateway_script(settings),
            None,
            (),
            "ip_forward, MASQUERADE and the hairpin SNAT, loaded now and at boot by a unit",
        ),
        Step(
            "packages",
            packages_script(settings, node),
            None,
            # With metrics the exporter starts in this step: after the
            # gateway's filter chain admits only the scrapers.
            ("gateway",) if settings.metrics is not None else (),
            "install keepalived and ipvsadm (and the node exporter, with metrics);"
            " refuse if apt would remove a package",
        ),
        *(
            [
                Step(
                    "metrics",
                    metrics_script(settings, node),
                    None,
                    ("packages", "gateway"),
                    "Debian's node exporter (IPVS collector) on the host's internal address,"
                    " for the scrapers only",
                )
            ]
            if settings.metrics is not None
            else []
        ),
    ]


def service_steps(
    settings: Settings, node: LbNode, services: Sequence[VirtualService], conf: str
) -> list[Step]:
    """The steps that load the pools (the cut-over waits for the Workload)."""
    return [
        Step(
            "keepalived-config",
            keepalived_config_script(settings, conf, node),
            KEEPALIVED_CONF,
            # With metrics, a pair's keepalived.conf names the metrics step's VRRP FIFO reader.
            ("packages", "metrics") if settings.metrics is not None else ("packages",),
            "check keepalived.conf on the host (digest, local addresses, owner, keepalived -t)"
            " and stage it",
        ),
        Step(
            "cutover",
            cutover_script(settings, node, services, conf),
            None,
            ("keepalived-config", "gateway"),
            "keepalived up beside HAProxy, wait for healthy pools, switch the VIP to IPVS,"
            " then HAProxy drained, stopped, disabled, masked",
        ),
    ]


#: Steps that switch traffic: they wait for the Workload (Deployment, NetworkPolicy).
CUTOVER_STEPS = frozenset({"cutover"})
#: Every step, in apply order ("metrics" only with ``keepsource:metrics``).
STEP_NAMES = ("gateway", "packages", "metrics", "keepalived-config", "cutover")
#: The program's project, LoadBalancerHost resource name and type (__main__.py, components/lb.py).
PROJECT = "keepsource"
LB_NAME = SINGLE_LB_NAME
LB_TYPE = "keepsource:lb:LoadBalancerHost"
COMMAND_TYPE = "command:remote:Command"


def step_urn(stack: str, step: str, lb: str = LB_NAME) -> str:
    """The engine's URN of a step's remote Command. The engine leaves the root
    stack out of a URN and joins a child's type to its parent's with "$"
    (pulumi/pulumi sdk/go/common/resource/urn.go, NewURN; the Python SDK's
    create_urn does the same, pulumi 3.272.0 runtime/resource.py:520-551).
    The mocks' URNs keep the stack type in, so tests compare names, not URNs."""
    return f"urn:pulumi:{stack}::{PROJECT}::{LB_TYPE}${COMMAND_TYPE}::{lb}-{step}"


def steps(
    settings: Settings, node: LbNode, services: Sequence[VirtualService], conf: str
) -> list[Step]:
    """An LB host's steps in apply order, each with the steps it waits for:
    the one declaration of the step graph (read through
    :class:`keepsource.host.LbHost`)."""
    return [*host_steps(settings, node), *service_steps(settings, node, services, conf)]
