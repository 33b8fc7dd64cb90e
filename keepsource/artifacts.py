"""Everything ``render`` writes, as text, computed before anything is written."""

from __future__ import annotations

from keepsource.host import lb_hosts
from keepsource.render import gateway, kube
from keepsource.render.scripts import net_loader
from keepsource.settings import Settings


def artifacts(settings: Settings) -> dict[str, str]:
    """File name -> content; the node port and check source come from the config,
    as they do when the program wires the Service's and the LB's outputs."""
    hosts = lb_hosts(settings)
    files = {
        "rules.v4": gateway.render_rules_v4(settings),
        "switch.rules": gateway.render_switch_rules(hosts[0].pools),
        "90-keepsource-gateway.conf": gateway.render_sysctl(settings),
        "ipvs.sysctl": gateway.render_ipvs_sysctl(settings),
        "net-load": net_loader(),
        gateway.UNIT: gateway.render_unit(),
        "manifests.yaml": kube.to_yaml(kube.objects(settings)),
    }
    if not settings.is_pair:
        files["keepalived.conf"] = hosts[0].keepalived_conf
        for i, step in enumerate(hosts[0].steps, start=1):
            files[f"steps/{i:02d}-{step.name}.sh"] = step.script
        return files
    # An LB pair: each host its own keepalived.conf and steps, under its name.
    for host in hosts:
        files[f"{host.name}/keepalived.conf"] = host.keepalived_conf
        for i, step in enumerate(host.steps, start=1):
            files[f"{host.name}/steps/{i:02d}-{step.name}.sh"] = step.script
    return dict(sorted(files.items()))
