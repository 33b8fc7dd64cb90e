"""Run the keepsource program under the Pulumi SDK's mocks and record it.

There is no Pulumi engine here. This runs ``__main__.py`` exactly as the
engine would (same config keys, same code path) against the SDK's mock
monitor, and records every resource it registers: type, name, parent,
provider, dependencies, inputs (deserialized and as sent on the wire), and
every ``register_outputs`` call, stack exports included. Tests, the policy
tests, the benchmark and the lab's driver all use it.
"""

from __future__ import annotations

import json
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
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    resources: list[Registered]
    exports: dict[str, Any]
    stack_urn: str

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name_suffix: str = "") -> Registered:
        found = [r for r in self.of_type(type_) if r.name.endswith(name_suffix)]
        if len(found) != 1:
            raise AssertionError(f"expected one {type_} *{name_suffix}, got {len(found)}")
        return found[0]


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self, allocated_node_port: int | None = None) -> None:
        self.allocated_node_port = allocated_node_port

    def new_resource(
        self, args: pulumi.runtime.MockResourceArgs
    ) -> tuple[str | None, dict[str, Any]]:
        # Outputs echo the inputs, as a create does for these resource types;
        # optionally the "cluster" hands the Service another nodePort, to show
        # that the LB follows the Service's output rather than the config.
        outputs = dict(args.inputs)
        if args.typ == "kubernetes:core/v1:Service" and self.allocated_node_port is not None:
            spec = dict(outputs["spec"])
            spec["ports"] = [{**p, "nodePort": self.allocated_node_port} for p in spec["ports"]]
            outputs["spec"] = spec
        return (f"{args.name}-id" if args.custom else None), outputs

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
        )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:  # noqa: N802
        outputs = rpc.deserialize_properties(request.outputs)
        if request.urn == self.stack_urn:
            self.stack_outputs = outputs
        elif request.urn in self.recorded:
            self.recorded[request.urn].outputs = outputs
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]


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
) -> Run:
    """Run the program once with this config (``{"keepsource:key": value}``)."""
    strings, secrets = pulumi_config_strings(config)
    mock = _Mocks(allocated_node_port)
    monitor = _Monitor(mock)
    runtime_settings.ROOT.set(None)
    pulumi.runtime.set_all_config(strings, secret_keys=secrets + list(secret_keys or []))
    pulumi.runtime.set_mocks(mock, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
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

    _go()
    return Run(list(monitor.recorded.values()), monitor.stack_outputs, monitor.stack_urn)


def run_stack(stack: str, root: Path = PROJECT_ROOT, **kwargs: Any) -> Run:
    """Run the program with the config of ``Pulumi.STACK.yaml``."""
    return run_program(load_config(stack, root), stack=stack, **kwargs)
