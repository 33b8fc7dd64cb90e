"""Health-check timing and the end-state check's clients."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator

from keepsource.settings.base import Count, DnsLabel, IPv4, Model, Text, no_bool
from keepsource.settings.lb import SshWord

#: The shortest check timing keepsource renders: keepalived reads timers as
#: decimals (a rendered ``1e-05`` is refused), and a check every 100 µs is no
#: health check but a flood.
MIN_SECONDS = 0.01
Seconds = Annotated[float, BeforeValidator(no_bool)]


class HealthCheck(Model):
    """keepalived TCP_CHECK timing for every real server (seconds)."""

    delay_loop: Seconds = Field(
        default=0.5, ge=MIN_SECONDS, le=60, description="Seconds between two checks."
    )
    connect_timeout: Seconds = Field(
        default=1.0, ge=MIN_SECONDS, le=30, description="Seconds a connect may take."
    )
    retry: Count = Field(default=1, ge=0, le=10, description="Retries before a server is failed.")
    delay_before_retry: Seconds = Field(
        default=0.5, ge=0, le=30, description="Seconds before a retry (0, or at least 0.01)."
    )

    @field_validator("delay_before_retry")
    @classmethod
    def _zero_or_resolvable(cls, value: float) -> float:
        if 0 < value < MIN_SECONDS:
            raise ValueError(f"must be 0 or at least {MIN_SECONDS} s")
        return value


class Client(Model):
    """A client host the end-state check runs curl from."""

    name: DnsLabel = Field(description="Client name, e.g. host01.")
    address: IPv4 = Field(description="The client's address on the external subnet.")
    target: SshWord = Field(
        min_length=1,
        description="How to run a command there: a network namespace name (via: netns) "
        "or user@host[:port] (via: ssh).",
    )


class Verify(Model):
    """Where `python -m keepsource verify` runs its client checks from. The LB is
    reached exactly as the program reaches it (lb.ssh: jump host, pinned keys,
    sudo for a non-root user)."""

    via: Literal["netns", "ssh"] = Field(description="netns on the local lab, ssh on a real lab.")
    allowed_client: Client = Field(description="A client the policy admits: must get the page.")
    denied_client: Client = Field(description="A client the policy refuses: must time out.")
    ssh_identity: Text | None = Field(
        default=None, description="Private key file for verify's SSH logins (not a secret value)."
    )
    known_hosts_file: Text | None = Field(
        default=None,
        description="known_hosts file pinning the clients' host keys (via: ssh; default: "
        "the user's). Unknown client keys are refused, never trusted on first use.",
    )
