"""Thin Pulumi ComponentResources that wire Outputs into keepsource's renderers."""

from components.lb import LoadBalancerHost, LoadBalancerHostArgs
from components.workload import Workload, WorkloadArgs

__all__ = ["LoadBalancerHost", "LoadBalancerHostArgs", "Workload", "WorkloadArgs"]
