"""Shared pieces of the settings model: the base class and checked scalar types.

Every string a stack can set is single-line printable text (a trailing newline
or a control character is an error, not silently kept): names end up in shell
commands, keepalived.conf and Kubernetes objects.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

IPv4 = ipaddress.IPv4Address
Net4 = ipaddress.IPv4Network

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _text(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must be one line of printable text (no newline or control character)")
    if value != value.strip():
        raise ValueError("must not start or end with a space")
    return value


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.fullmatch(value):
        raise ValueError("must be a DNS label: lower-case letters, digits and '-', 1-63 characters")
    return value


_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def _dns1035_label(value: str) -> str:
    if not _DNS1035_LABEL.fullmatch(value):
        raise ValueError(
            "must be a DNS-1035 label, as a Service name must: a lower-case letter first, "
            "then lower-case letters, digits and '-', 1-63 characters"
        )
    return value


def no_bool(value: object) -> object:
    """YAML's ``true`` is no number: pydantic would read it as 1."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


Text = Annotated[str, AfterValidator(_text)]
DnsLabel = Annotated[str, AfterValidator(_dns_label)]
ServiceName = Annotated[str, AfterValidator(_dns1035_label)]
Count = Annotated[int, BeforeValidator(no_bool)]
Port = Annotated[int, BeforeValidator(no_bool), Field(ge=1, le=65535)]


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        strict=False,
        allow_inf_nan=False,
    )
