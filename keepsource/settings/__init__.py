"""The stack's settings: one typed model of every value a lab has.

Stack config lives under the ``keepsource:`` namespace, one key per top-level
field of :class:`Settings` (camelCase, as ``pulumi config set`` writes them).
Unknown keys, at the top level or nested, and unknown namespaces are errors.
:func:`parse` turns a flat config map into :class:`Settings` or raises one
:class:`ConfigError` that lists every fault with the key it belongs to.

By concern: ``base`` (model base, checked scalars), ``network`` (address plan,
apiserver, workers), ``lb`` (SSH, host keys, take-over, cut-over), ``workload``
(the workload and its Kubernetes provider), ``checks`` (health checks, verify),
``model`` (the whole record), ``rules`` (cross-field rules), ``loader``
(decoding, secrets, parse), ``errors``, ``schema``.

This package imports no Pulumi: the render CLI, the lab and the components all
share it.
"""

from keepsource.settings.base import IPv4, Net4
from keepsource.settings.checks import Client, HealthCheck, Verify
from keepsource.settings.errors import NAMESPACE, ConfigError, Fault
from keepsource.settings.lb import Lb, Ssh
from keepsource.settings.loader import (
    ENCRYPTED,
    PRIVATE_KEY_KEY,
    PRIVATE_KEY_PASSWORD_KEY,
    SECRET_PATHS,
    parse,
)
from keepsource.settings.model import Settings, shared_check_warning
from keepsource.settings.network import Apiserver, Network, Worker
from keepsource.settings.rules import cross_faults
from keepsource.settings.schema import json_schema, project_config
from keepsource.settings.workload import SYSTEM_NAMESPACES, Kubernetes, Workload

__all__ = [
    "ENCRYPTED",
    "NAMESPACE",
    "PRIVATE_KEY_KEY",
    "PRIVATE_KEY_PASSWORD_KEY",
    "SECRET_PATHS",
    "SYSTEM_NAMESPACES",
    "Apiserver",
    "Client",
    "ConfigError",
    "Fault",
    "HealthCheck",
    "IPv4",
    "Kubernetes",
    "Lb",
    "Net4",
    "Network",
    "Settings",
    "Ssh",
    "Verify",
    "Worker",
    "Workload",
    "cross_faults",
    "json_schema",
    "parse",
    "project_config",
    "shared_check_warning",
]
