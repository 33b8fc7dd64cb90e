"""Property values pulumi-policy cannot turn into Python, made readable.

A property may hold NaN or an infinity (float64 in the engine; protobuf's Struct
carries them). pulumi-policy 1.21 reads each resource's properties with
``json_format.MessageToDict`` (policy.py:997, 1049, 1127), which raises
a ValueError for them ("Fail to serialize Infinity for
Value.number_value"), so the whole AnalyzeStack call fails and the user sees
an RPC error instead of a verdict. The pack wraps that function once: a Struct
that does not serialize is copied with each non-finite number as the string
JSON would use ("NaN", "Infinity", "-Infinity"), which the guard then names as
a value it cannot read (readable-guard-inputs), like any other bad port.
"""

from __future__ import annotations

import math
from typing import Any

_INSTALLED = False


def _finite(value: Any) -> None:
    """In place: non-finite numbers of a Struct/ListValue/Value as strings."""
    from google.protobuf import struct_pb2

    if isinstance(value, struct_pb2.Struct):
        for key in list(value.fields):
            _finite(value.fields[key])
    elif isinstance(value, struct_pb2.ListValue):
        for item in value.values:
            _finite(item)
    elif isinstance(value, struct_pb2.Value):
        kind = value.WhichOneof("kind")
        if kind == "number_value" and not math.isfinite(value.number_value):
            n = value.number_value
            value.string_value = "NaN" if math.isnan(n) else ("Infinity" if n > 0 else "-Infinity")
        elif kind == "struct_value":
            _finite(value.struct_value)
        elif kind == "list_value":
            _finite(value.list_value)


def install() -> bool:
    global _INSTALLED
    if _INSTALLED:
        return True
    from google.protobuf import json_format, struct_pb2

    original = json_format.MessageToDict

    def readable(message: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(message, *args, **kwargs)
        except (json_format.SerializeToJsonError, ValueError):
            if not isinstance(message, struct_pb2.Struct):
                raise
            copy = struct_pb2.Struct()
            copy.CopyFrom(message)
            _finite(copy)
            return original(copy, *args, **kwargs)

    json_format.MessageToDict = readable  # type: ignore[assignment]
    _INSTALLED = True
    return True
