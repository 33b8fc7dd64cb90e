"""Run the keepsource program under the Pulumi SDK's mocks and record it.

There is no Pulumi engine here. This runs ``__main__.py`` exactly as the
engine would (same config keys, same code path) against the SDK's mock
monitor, and records every resource it registers: type, name, parent,
provider, dependencies, inputs (deserialized and as sent on the wire), and
every ``register_outputs`` call, stack exports included. Tests, the policy
tests, the benchmark and the lab's driver all use it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import runpy
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks, rpc
from pulumi.runtime import settings as runtime_settings

from keepsource.stackfile import PROJECT_ROOT, load_config

PROJECT = "keepsource"
#: Where run_program runs the program by default (the project root, as the
#: CLI does; tests point it at a stand-in when the lab's files do not exist).
PROJECT_DIR = PROJECT_ROOT
#: What the last run registered, also when it raised (see :func:`last_registered`).
LAST_REGISTERED: list[dict[str, Registered]] = []


@dataclass
class Registered:
    urn: str
    type: str
    name: str
    custom: bool
    parent: str
    provider: str
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    inputs: dict[str, Any]
    wire: dict[str, Any]
    retain_on_delete: bool = False
    protect: bool = False
    outputs: dict[str, Any] = field(default_factory=dict)
    aliases: list[dict[str, Any]] = field(default_factory=list)
    """The request's alias specs (``aliases``), as the engine receives them."""


@dataclass
class Run:
    resources: list[Registered]
    exports: dict[str, Any]
    stack_urn: str
    warnings: list[str] = field(default_factory=list)

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name_suffix: str = "") -> Registered:
        found = [r for r in self.of_type(type_) if r.name.endswith(name_suffix)]
        if len(found) != 1:
            raise AssertionError(f"expected one {type_} *{name_suffix}, got {len(found)}")
        return found[0]


#: Output properties a provider computes, per resource type: at preview the
#: mocks leave them out, which is how an Output becomes unknown under mocks.
#: pulumi-command computes stdout/stderr when a command runs (never at preview).
COMPUTED = {"command:remote:Command": ("stdout", "stderr")}


class _Mocks(pulumi.runtime.Mocks):
    """Outputs echo the inputs, as a create does for these resource types, plus
    what the provider computes: at preview (``preview=True``) those are left
    out, so they are unknown, as the engine's preview makes them.

    ``allocated_node_port``: the "cluster" hands the Service another nodePort
    (the LB must follow the Service's output, not the config).
    ``unknown_service_spec``: at preview the Service's whole spec is unknown,
    as when the cluster allocates the nodePort (not set in the inputs) or the
    provider cannot reach the cluster to dry-run the object."""

    def __init__(
        self,
        allocated_node_port: int | None = None,
        preview: bool = False,
        unknown_service_spec: bool = False,
    ) -> None:
        self.allocated_node_port = allocated_node_port
        self.preview = preview
        self.unknown_service_spec = unknown_service_spec

    def new_resource(
        self, args: pulumi.runtime.MockResourceArgs
    ) -> tuple[str | None, dict[str, Any]]:
        outputs = dict(args.inputs)
        if args.typ == "kubernetes:core/v1:Service":
            outputs = self._service(outputs)
        computed = COMPUTED.get(args.typ, ())
        if not self.preview:
            outputs.update({name: f"{args.name}: {name}" for name in computed})
        return (f"{args.name}-id" if args.custom else None), outputs

    def _service(self, outputs: dict[str, Any]) -> dict[str, Any]:
        ports = outputs["spec"]["ports"]
        allocated = all("nodePort" in p for p in ports) and self.allocated_node_port is None
        if self.preview and (self.unknown_service_spec or not allocated):
            del outputs["spec"]  # computed by the cluster: unknown at preview
            return outputs
        spec = dict(outputs["spec"])
        spec["ports"] = [
            {**p, "nodePort": self.allocated_node_port or p.get("nodePort", 31000)} for p in ports
        ]
        outputs["spec"] = spec
        return outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        return {}


class _Monitor(mocks.MockMonitor):
    """The stock monitor drops parent, dependencies and register_outputs: keep them."""

    def __init__(self, mock: pulumi.runtime.Mocks) -> None:
        super().__init__(mock)
        self.recorded: dict[str, Registered] = {}
        self.stack_urn = ""
        self.stack_outputs: dict[str, Any] = {}

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC name)
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type == "pulumi:pulumi:Stack":
            self.stack_urn = response.urn
            return response
        self.recorded[response.urn] = Registered(
            urn=response.urn,
            type=request.type,
            name=request.name,
            custom=bool(request.custom),
            parent=request.parent,
            provider=request.provider,
            dependencies=list(request.dependencies),
            property_dependencies={
                k: list(v.urns) for k, v in request.propertyDependencies.items()
            },
            inputs=rpc.deserialize_properties(request.object),
            wire=json_format.MessageToDict(request.object),
            retain_on_delete=bool(request.retainOnDelete),
            protect=bool(request.protect),
            aliases=[json_format.MessageToDict(a) for a in request.aliases],
        )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:  # noqa: N802
        outputs = rpc.deserialize_properties(request.outputs)
        if request.urn == self.stack_urn:
            self.stack_outputs = outputs
        elif request.urn in self.recorded:
            self.recorded[request.urn].outputs = outputs
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]


class _Collect(logging.Logger):
    """The mock engine's logger: keeps the program's warnings (pulumi.log.warn)."""

    def __init__(self) -> None:
        super().__init__("keepsource-mockrun", logging.DEBUG)
        self.warnings: list[str] = []

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.warnings.append(str(msg))


def pulumi_config_strings(config: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """A stack file's config as the engine hands it to a program: strings,
    objects and lists as JSON; ``{secure: ...}`` values become secret keys."""
    strings: dict[str, str] = {}
    secrets: list[str] = []
    for key, value in config.items():
        if isinstance(value, Mapping) and set(value) == {"secure"}:
            secrets.append(key)
            strings[key] = str(value["secure"])
        elif isinstance(value, str):
            strings[key] = value
        else:
            strings[key] = json.dumps(value)
    return strings, secrets


def run_program(
    config: Mapping[str, Any],
    *,
    stack: str = "dev",
    secret_keys: list[str] | None = None,
    preview: bool = False,
    program: Path = PROJECT_ROOT / "__main__.py",
    allocated_node_port: int | None = None,
    unknown_service_spec: bool = False,
    cwd: Path | None = None,
    agent: str | None = "/run/mockrun-ssh-agent.sock",
) -> Run:
    """Run the program once with this config (``{"keepsource:key": value}``).

    ``agent``: SSH_AUTH_SOCK during the run (the engine's environment, which
    the program reads when the stack holds no private key); None: unset.

    ``cwd``: the working directory during the run (default :data:`PROJECT_DIR`),
    as the Pulumi CLI runs a program in its project root."""
    strings, secrets = pulumi_config_strings(config)
    mock = _Mocks(allocated_node_port, preview, unknown_service_spec)
    monitor = _Monitor(mock)
    LAST_REGISTERED.clear()
    LAST_REGISTERED.append(monitor.recorded)
    runtime_settings.ROOT.set(None)
    pulumi.runtime.set_all_config(strings, secret_keys=secrets + list(secret_keys or []))
    logger = _Collect()
    pulumi.runtime.set_mocks(
        mock, project=PROJECT, stack=stack, preview=preview, monitor=monitor, logger=logger
    )
    root = str(program.parent)
    if root not in sys.path:
        sys.path.insert(0, root)

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def _go() -> None:
        runpy.run_path(str(program), run_name="__main__")
        # The engine registers the stack's exports when the program returns.
        stack_resource = runtime_settings.get_root_resource()
        assert isinstance(stack_resource, pulumi.runtime.stack.Stack)
        stack_resource._outputs_registered = False
        stack_resource._finish()

    saved = os.environ.pop("SSH_AUTH_SOCK", None)
    if agent is not None:
        os.environ["SSH_AUTH_SOCK"] = agent
    try:
        with contextlib.chdir(cwd or PROJECT_DIR):
            _go()
    finally:
        os.environ.pop("SSH_AUTH_SOCK", None)
        if saved is not None:
            os.environ["SSH_AUTH_SOCK"] = saved
    return Run(
        list(monitor.recorded.values()), monitor.stack_outputs, monitor.stack_urn, logger.warnings
    )


def last_registered() -> list[Registered]:
    """Every resource the last run registered, also when the program raised."""
    return [r for recorded in LAST_REGISTERED for r in recorded.values()]


def run_stack(stack: str, root: Path = PROJECT_ROOT, **kwargs: Any) -> Run:
    """Run the program with the config of ``Pulumi.STACK.yaml``."""
    return run_program(load_config(stack, root), stack=stack, **kwargs)
