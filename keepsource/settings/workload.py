"""The workload behind the NodePort and the Kubernetes provider that manages it."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator

from keepsource.settings.base import Count, DnsLabel, Model, Port, ServiceName, Text

# name[:tag][@digest] with a registry/path; the tag must be explicit and not "latest".
_IMAGE = re.compile(
    r"(?P<name>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?"
)

#: Namespaces of the cluster itself. keepsource declares (and takes field
#: ownership of) the workload's Namespace object, so it refuses these.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _pinned_image(value: str) -> str:
    match = _IMAGE.fullmatch(value)
    if not match:
        raise ValueError("is not a container image reference")
    tag, digest = match.group("tag"), match.group("digest")
    if digest is None and (tag is None or tag == "latest"):
        raise ValueError("must pin a tag other than 'latest' (or a sha256 digest)")
    return value


def _own_namespace(value: str) -> str:
    if value in SYSTEM_NAMESPACES or value.startswith("kube-"):
        raise ValueError(
            f"{value!r} is a namespace of the cluster itself (kube-* and default are "
            "refused): keepsource manages the workload's Namespace object; use one of your own"
        )
    return value


class Workload(Model):
    """The application the NetworkPolicy guards."""

    namespace: Annotated[DnsLabel, AfterValidator(_own_namespace)] = Field(
        default="my-ns", description="Kubernetes namespace (not kube-* or default)."
    )
    name: ServiceName = Field(
        default="nginx",
        description="Name of the Deployment, Service and policy (DNS-1035: a letter first).",
    )
    image: Annotated[str, AfterValidator(_pinned_image)] = Field(
        description="Container image with a pinned tag (not 'latest')."
    )
    replicas: Count = Field(
        default=1,
        ge=1,
        le=100,
        description="Pod replicas (at least 1: with none, no pool ever gets healthy).",
    )
    container_port: Port = Field(default=80, description="The pod's port.")
    managed_by: Literal["keepsource", "external"] = Field(
        default="keepsource",
        description="'keepsource': this program declares the Kubernetes objects; "
        "'external': they are managed elsewhere (GitOps, the local lab): LB only, "
        "nodePort and check source from this config, no Kubernetes provider.",
    )


class Kubernetes(Model):
    """The explicit Kubernetes provider (never the ambient KUBECONFIG)."""

    kubeconfig: SecretStr | None = Field(
        default=None,
        description="Kubeconfig path (as given: '~' is expanded by the provider, not "
        "stored expanded) or contents (then only as a secret: pulumi config set "
        "--secret --path keepsource:kubernetes.kubeconfig). Default: ~/.kube/config.",
    )
    context: Text | None = Field(default=None, description="Kubeconfig context.")

    @field_validator("kubeconfig")
    @classmethod
    def _not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty")
        return value


def looks_like_contents(kubeconfig: str) -> bool:
    """Kubeconfig contents (credentials inside) rather than a path."""
    text = kubeconfig.lstrip()
    return "\n" in kubeconfig or text.startswith(("{", "apiVersion")) or "clusters:" in text
