"""keepsource: keepalived/LVS NAT in front of an ipBlock-guarded NodePort workload."""

from collections.abc import Callable

import pulumi

from components import LoadBalancerHost, LoadBalancerHostArgs, Workload, WorkloadArgs
from components.config import load_settings

settings, private_key = load_settings()

# The LB reads the Service's nodePort; the NetworkPolicy reads the LB's check
# source. The nodePort is handed over once the Service is declared.
node_port: pulumi.Output[int]
resolve_node_port: Callable[[pulumi.Output[int]], None]
node_port, resolve_node_port = pulumi.deferred_output()
lb = LoadBalancerHost(
    "lb", LoadBalancerHostArgs(settings=settings, node_port=node_port, private_key=private_key)
)
workload = Workload(
    "workload", WorkloadArgs(settings=settings, check_source=lb.health_check_source)
)
resolve_node_port(workload.node_port)

pulumi.export("vipUrl", f"http://{settings.network.vip}:{settings.node_port}/")
pulumi.export("keepalivedConf", lb.keepalived_conf)
pulumi.export("admittedSources", workload.admitted_sources)
pulumi.export("virtualServices", lb.virtual_services)
