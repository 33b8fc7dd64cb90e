"""Prometheus's view of the LB (``keepsource:metrics``): Debian's
prometheus-node-exporter on each LB host, its IPVS collector only, bound to
the host's own internal address and reachable from the named scrapers only."""

from __future__ import annotations

from pydantic import Field

from keepsource.settings.base import Model, Port
from keepsource.settings.services import ClientNet


class Metrics(Model):
    """The exporter's port and who may scrape it."""

    scrapers: list[ClientNet] = Field(
        min_length=1,
        max_length=32,
        description="CIDRs that may scrape the exporter (Prometheus); every other source is "
        "dropped on the port. Not the whole world.",
    )
    port: Port = Field(
        default=9100, description="The node exporter's port on each LB host's internal address."
    )
