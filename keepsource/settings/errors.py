"""Config faults: every one names its full key (``keepsource:network.vip``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import ValidationError

NAMESPACE = "keepsource"


@dataclass(frozen=True)
class Fault:
    key: str  # full config key, e.g. "keepsource:network.vip"
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"


class ConfigError(ValueError):
    """One error for a bad config: every fault, each naming its key."""

    def __init__(self, faults: Iterable[Fault]) -> None:
        self.faults = sorted(set(faults), key=lambda f: (f.key, f.reason))
        lines = "\n".join(f"  - {f}" for f in self.faults)
        super().__init__(f"invalid keepsource config ({len(self.faults)} faults):\n{lines}")


Loc = tuple[int | str, ...]


def key(loc: Loc) -> str:
    """``("workers", 1, "address")`` -> ``keepsource:workers[1].address``."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + item)
    text = "".join(parts)
    return f"{NAMESPACE}:{text}" if text else NAMESPACE


def faults_from(error: ValidationError) -> list[Fault]:
    faults = []
    for item in error.errors():
        loc = tuple(
            x for x in item["loc"] if not str(x).startswith(("function-after", "function-before"))
        )
        reason = item["msg"]
        if item["type"] == "extra_forbidden":
            reason = "unknown key"
        elif item["type"] == "missing":
            reason = "required key is missing"
        elif reason.startswith("Value error, "):
            reason = reason.removeprefix("Value error, ")
        faults.append(Fault(key(loc), reason))
    return faults
