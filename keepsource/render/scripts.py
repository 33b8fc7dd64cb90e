"""The LB host's steps: one idempotent bash script each, in a fixed order.

Each :class:`Step` is exactly what runs on the host: the command line (the
script, wrapped for sudo when the SSH user is not root) and its stdin. The
LoadBalancerHost component declares one ``remote.Command`` per step; the lab's
driver replays the commands the program declares. Every script ends with one
line ``keepsource: STEP: changed`` or ``... unchanged``.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from importlib import resources

from keepsource.render import gateway
from keepsource.settings import Settings


def _template(name: str) -> str:
    return resources.files("keepsource.scripts").joinpath(name).read_text()


#: The artifact a step reads on stdin (only keepalived-config takes one: the
#: rendered keepalived.conf, which depends on the Service's nodePort Output).
KEEPALIVED_CONF = "keepalived.conf"


@dataclass(frozen=True)
class Step:
    name: str
    script: str
    stdin_artifact: str | None
    depends_on: tuple[str, ...]
    description: str

    def command(self, user: str) -> str:
        """The remote command line; non-root users go through ``sudo -n`` (no TTY)."""
        prefix = "" if user == "root" else "sudo -n "
        return f"{prefix}/bin/bash -c {shlex.quote(self.script)} keepsource-{self.name}"

    def digest(self, stdin: str | None = None) -> str:
        """Content hash of script and stdin: the step re-runs when (and only
        when) this changes."""
        h = hashlib.sha256(self.script.encode())
        h.update(b"\0stdin\0")
        h.update((stdin or "").encode())
        return h.hexdigest()


def _script(name: str, body: str) -> str:
    return (
        "#!/bin/bash\n"
        f"# keepsource LB step '{name}': generated, do not edit.\n"
        f"KS_STEP={name}\n" + _template("lib.sh") + body
    )


def gateway_script(settings: Settings) -> str:
    body = _template("gateway.sh")
    values = {
        "__KS_SYSCTL_PATH__": gateway.SYSCTL_PATH,
        "__KS_RULES_PATH__": gateway.RULES_PATH,
        "__KS_CHAIN__": gateway.CHAIN,
        "__KS_SYSCTL__": gateway.render_sysctl(settings).rstrip("\n"),
        "__KS_RULES__": gateway.render_rules_v4(settings).rstrip("\n"),
    }
    for token, value in values.items():
        body = body.replace(token, value)
    return _script("gateway", body)


def steps(settings: Settings) -> list[Step]:
    """The LB host's steps in apply order."""
    return [
        Step(
            "packages",
            _script("packages", _template("packages.sh")),
            None,
            (),
            "install keepalived, ipvsadm, iptables-persistent",
        ),
        Step(
            "keepalived-config",
            _script("keepalived-config", _template("keepalived_config.sh")),
            KEEPALIVED_CONF,
            ("packages",),
            "check keepalived.conf on the host, then make it live",
        ),
        Step(
            "haproxy-off",
            _script("haproxy-off", _template("haproxy_off.sh")),
            None,
            ("keepalived-config",),
            "stop and disable HAProxy",
        ),
        Step(
            "keepalived-on",
            _script("keepalived-on", _template("keepalived_on.sh")),
            None,
            ("haproxy-off",),
            "enable and start keepalived",
        ),
        Step(
            "gateway",
            gateway_script(settings),
            None,
            ("packages",),
            "persist ip_forward and the MASQUERADE rule",
        ),
    ]
