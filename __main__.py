"""keepsource: keepalived/LVS NAT in front of an ipBlock-guarded NodePort workload.

Plain, acyclic wiring: the Workload's NetworkPolicy admits the LB's check
source, a plain value from the settings; the Service declares the config's
nodePort, which the LB reads from the config too, so only the LB's cut-over
waits for Kubernetes (the Deployment Ready, the Service and the NetworkPolicy
applied); packages, gateway and keepalived-config start at once. With
``workload.managedBy: external`` (GitOps) no Kubernetes provider is declared.
"""

import pulumi

from components import LoadBalancerHost, LoadBalancerHostArgs, Workload, WorkloadArgs
from components.config import load_settings
from keepsource.render import kube

settings, credentials = load_settings()
check_sources = kube.check_sources(settings)

cutover_after: list[pulumi.Resource] = []
if settings.manages_workload:
    assert credentials.kubeconfig is not None
    workload = Workload(
        "workload",
        WorkloadArgs(
            settings=settings,
            check_sources=check_sources,
            kubeconfig=credentials.kubeconfig,
            context=credentials.context,
        ),
    )
    cutover_after = [r for parts in workload.parts.values() for r in parts]

# One LoadBalancerHost per LB host: the only one ("lb"), or each of a pair. In
# a pair the second host's cut-over waits for the first's: the first holds the
# VIPs in the fault state (HAProxy), so it must become the VRRP master before
# its peer's keepalived can claim them (make before break).
lbs: list[LoadBalancerHost] = []
for node in settings.lb_nodes:
    after = [*cutover_after, lbs[0].commands["cutover"]] if lbs else cutover_after
    lbs.append(
        LoadBalancerHost(
            node.name,
            LoadBalancerHostArgs(
                settings=settings,
                private_key=credentials.private_key,
                private_key_password=credentials.private_key_password,
                cutover_after=after,
                node=node,
            ),
        )
    )

if settings.services is None:
    pulumi.export("vipUrl", f"http://{settings.network.vip}:{settings.node_port}/")
if settings.is_pair:
    pulumi.export(
        "keepalivedConf",
        {n.name: lb.keepalived_conf for n, lb in zip(settings.lb_nodes, lbs, strict=True)},
    )
else:
    pulumi.export("keepalivedConf", lbs[0].keepalived_conf)
pulumi.export("virtualServices", lbs[0].virtual_services)
if settings.services is None:
    pulumi.export("admittedSources", kube.admitted_sources(settings, check_sources))
    pulumi.export("workloadManagedBy", settings.single.managed_by)
else:
    pulumi.export(
        "services",
        {
            ex.name: {
                "ports": [
                    f"{settings.network.vip}:{p.port}/{p.protocol.lower()}" for p in ex.ports
                ],
                "admittedSources": kube.admitted_sources(ex, check_sources) if ex.workload else [],
                "managedBy": ex.workload.managed_by if ex.workload else "realServers",
            }
            for ex in settings.exposed
        },
    )
