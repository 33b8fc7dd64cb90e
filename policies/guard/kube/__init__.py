"""The Kubernetes model: pods, Services, NetworkPolicies, and what routes to Services.

NetworkPolicy semantics as Kubernetes defines them: a policy selects pods in
its own namespace by ``podSelector`` (matchLabels and matchExpressions; empty
selects all); a pod is isolated for ingress once any policy whose
``policyTypes`` include Ingress (the default when policyTypes is absent)
selects it; then the union of all those policies' ingress rules admits
traffic (policies add up). A rule without ``from`` admits every source, one
without ``ports`` every port; an ``ipBlock`` admits its CIDR minus ``except``;
pod/namespace selectors admit in-cluster pods only. Built once per stack with
indexes, so lookups do not grow with the stack.
"""

from __future__ import annotations

from guard.kube.cluster import Cluster as Cluster
from guard.kube.cluster import service_port as service_port
from guard.kube.model import CNI_NAMESPACE_KEYS as CNI_NAMESPACE_KEYS
from guard.kube.model import Addr as Addr
from guard.kube.model import Block as Block
from guard.kube.model import Net as Net
from guard.kube.model import Note as Note
from guard.kube.model import Pods as Pods
from guard.kube.model import Policy as Policy
from guard.kube.model import Route as Route
from guard.kube.model import Rule as Rule
from guard.kube.model import Selector as Selector
from guard.kube.model import Svc as Svc
from guard.kube.model import SvcPort as SvcPort
from guard.kube.model import Unk as Unk
from guard.kube.model import View as View
from guard.kube.model import name_of as name_of
from guard.kube.model import namespace_of as namespace_of
from guard.kube.read import LB_IP_ANNOTATIONS as LB_IP_ANNOTATIONS
from guard.kube.read import selector as selector
from guard.kube.routes import INGRESS_TYPES as INGRESS_TYPES
from guard.kube.routes import ROUTER_KINDS as ROUTER_KINDS
from guard.kube.routes import crd_kind as crd_kind
from guard.kube.routes import is_router as is_router
from guard.kube.stack import CONFIGMAP as CONFIGMAP
from guard.kube.stack import HELM_V3 as HELM_V3
from guard.kube.stack import NAMESPACE as NAMESPACE
from guard.kube.stack import NETPOL as NETPOL
from guard.kube.stack import SERVICE as SERVICE
from guard.kube.stack import WORKLOADS as WORKLOADS
from guard.kube.stack import build as build
