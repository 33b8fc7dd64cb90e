"""Everything ``render`` writes, as text, computed before anything is written."""

from __future__ import annotations

from keepsource.render import gateway, kube
from keepsource.render.keepalived import render_keepalived
from keepsource.render.scripts import net_loader, steps
from keepsource.settings import Settings


def artifacts(settings: Settings) -> dict[str, str]:
    """File name -> content; the node port and check source come from the config,
    as they do when the program wires the Service's and the LB's outputs."""
    files = {
        "rules.v4": gateway.render_rules_v4(settings),
        "switch.rules": gateway.render_switch_rules(settings, settings.node_port),
        "90-keepsource-gateway.conf": gateway.render_sysctl(settings),
        "ipvs.sysctl": gateway.render_ipvs_sysctl(settings),
        "net-load": net_loader(),
        gateway.UNIT: gateway.render_unit(),
        "manifests.yaml": kube.to_yaml(kube.objects(settings)),
    }
    if not settings.is_pair:
        files["keepalived.conf"] = render_keepalived(settings, settings.node_port)
        for i, step in enumerate(steps(settings), start=1):
            files[f"steps/{i:02d}-{step.name}.sh"] = step.script
        return files
    # An LB pair: each host its own keepalived.conf and steps, under its name.
    for node in settings.lb_nodes:
        files[f"{node.name}/keepalived.conf"] = render_keepalived(
            settings, settings.node_port, node
        )
        for i, step in enumerate(steps(settings, node=node), start=1):
            files[f"{node.name}/steps/{i:02d}-{step.name}.sh"] = step.script
    return dict(sorted(files.items()))
