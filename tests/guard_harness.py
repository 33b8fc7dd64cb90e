"""The policy pack as the Pulumi CLI runs it, and the engine's side of the analyzer gRPC.

`python -m pulumi.policy ENGINE_ADDRESS policies/` prints its port; the tests
then call GetAnalyzerInfo, Configure and AnalyzeStack as the engine does, with
resources in the engine's wire shape (camelCase, floats, assets and secrets as
signature objects, unknowns as the engine's unknown sentinels), parents and
dependencies included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

POLICIES = Path(__file__).resolve().parent.parent / "policies"

# What the engine puts on the wire for a value unknown at preview (the test plays
# the engine; the pack itself never reads these: it uses UnknownValueError).
UNKNOWN_WIRE = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
UNKNOWN_MARK = "$unknown"


@dataclass
class WireResource:
    type: str
    name: str
    urn: str
    props: dict[str, Any]
    parent: str = ""
    dependencies: list[str] = field(default_factory=list)


def _unknowns(value: Any) -> Any:
    if value == UNKNOWN_MARK:
        return UNKNOWN_WIRE
    if isinstance(value, dict):
        return {k: _unknowns(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unknowns(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # the wire has only doubles
    return value


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(_unknowns(json.loads(json.dumps(value))))
    return s


class Pack:
    def __init__(self, stub: analyzer_pb2_grpc.AnalyzerStub) -> None:
        self.stub = stub

    def analyze(self, resources: list[WireResource]) -> list[Any]:
        return self.analyze_request(self.request(resources))

    @staticmethod
    def request(resources: list[WireResource]) -> Any:
        """The AnalyzeStackRequest the engine would send for these resources."""
        return analyzer_pb2.AnalyzeStackRequest(
            resources=[
                analyzer_pb2.AnalyzerResource(
                    type=r.type,
                    urn=r.urn,
                    name=r.name,
                    properties=_struct(r.props),
                    parent=r.parent,
                    dependencies=r.dependencies,
                )
                for r in resources
            ]
        )

    def analyze_request(self, request: Any) -> list[Any]:
        return list(self.stub.AnalyzeStack(request, timeout=60).diagnostics)

    def configure(self, config: dict[str, Any]) -> None:
        """As the CLI sends --policy-pack-config: per policy, a level and/or properties."""
        levels = {
            "advisory": analyzer_pb2.ADVISORY,
            "mandatory": analyzer_pb2.MANDATORY,
            "disabled": analyzer_pb2.DISABLED,
        }
        request = analyzer_pb2.ConfigureAnalyzerRequest()
        for name, value in config.items():
            pc = request.policyConfig[name]
            pc.enforcementLevel = levels[value.get("enforcementLevel", "mandatory")]
            props = {k: v for k, v in value.items() if k != "enforcementLevel"}
            if props:
                pc.properties.update(props)
        self.stub.Configure(request, timeout=20)


def start_pack() -> Iterator[Pack]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pulumi.policy", "127.0.0.1:1", str(POLICIES)],
        cwd=POLICIES,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            proc.kill()
            raise RuntimeError(
                f"the pack did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
            )
        channel = grpc.insecure_channel(f"127.0.0.1:{line}")
        grpc.channel_ready_future(channel).result(timeout=20)
        yield Pack(analyzer_pb2_grpc.AnalyzerStub(channel))
        channel.close()
    finally:
        proc.kill()
        proc.wait(timeout=10)


LEVELS = {analyzer_pb2.MANDATORY: "mandatory", analyzer_pb2.ADVISORY: "advisory"}


def level(diag: Any) -> str:
    return LEVELS.get(diag.enforcementLevel, str(diag.enforcementLevel))
