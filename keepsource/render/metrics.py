"""Prometheus's view of an LB host (``keepsource:metrics``): Debian's
prometheus-node-exporter with its IPVS collector only, bound to the host's own
internal address (its health checks' source), started after the network is
online and restarted when it fails (binding needs the address). The gateway's
filter chain (render/gateway.py ``render_input_rules``) admits the scrapers."""

from __future__ import annotations

from keepsource.settings import Settings
from keepsource.settings.model import LbNode

PACKAGE = "prometheus-node-exporter"
UNIT = f"{PACKAGE}.service"
DROPIN_PATH = f"/etc/systemd/system/{UNIT}.d/keepsource.conf"
#: The collectors: IPVS (the pools) and, for a pair, the textfile the VRRP
#: notify writes (the rest is the host's business, and costs CPU at every scrape).
COLLECTORS = ("ipvs",)
#: Debian's node exporter's textfile directory (its package makes it).
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
#: keepalived's vrrp_notify_fifo_script (installed by the metrics step) and the
#: FIFO keepalived makes and writes each VRRP state change into, in order.
VRRP_NOTIFY_PATH = "/usr/local/lib/keepsource/vrrp-state"
VRRP_FIFO_PATH = "/run/keepsource-vrrp.fifo"
VRRP_COUNT_PATH = "/var/lib/keepsource/vrrp-transitions"


def vrrp_state_script() -> str:
    """The FIFO reader, exactly as installed on a pair's hosts."""
    from importlib import resources

    text = resources.files("keepsource.scripts").joinpath("vrrp_state.sh").read_text()
    return text.replace("__KS_TEXTFILE_DIR__", TEXTFILE_DIR).replace(
        "__KS_COUNT_FILE__", VRRP_COUNT_PATH
    )


def listen(settings: Settings, node: LbNode | None = None) -> str:
    """Where the exporter listens on ``node``: its own internal address."""
    assert settings.metrics is not None
    host = node or settings.lb_nodes[0]
    return f"{host.internal_address}:{settings.metrics.port}"


def render_dropin(settings: Settings, node: LbNode | None = None) -> str:
    flags = " ".join(
        [
            "--web.listen-address=" + listen(settings, node),
            "--collector.disable-defaults",
            *(f"--collector.{c}" for c in COLLECTORS),
            *(
                ["--collector.textfile", f"--collector.textfile.directory={TEXTFILE_DIR}"]
                if settings.is_pair
                else []
            ),
        ]
    )
    return "\n".join(
        [
            "# Managed by keepsource: the node exporter on this host's internal address,",
            "# for Prometheus (keepsource:metrics); IPVS collector only.",
            "[Unit]",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            "ExecStart=",
            f"ExecStart=/usr/bin/prometheus-node-exporter {flags}",
            "Restart=always",
            "RestartSec=2",
            "",
        ]
    )
