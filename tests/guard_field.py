"""The guard judged on stacks written without reading it (issue 17's field test).

``tests/guard_corpus/blind/*.yaml`` were written by a reviewer who had not read
the pack or its corpus, from the mechanisms people really use, each with its
``mechanism``, ``verdict`` (fail / advise / pass) and the documentation fact it
rests on (``why``). A stack's verdict from the pack: ``fail`` when any
diagnostic is mandatory, ``advise`` when only advisories, ``pass`` when none.

Shared by ``tests/test_guard_field.py`` (each stack, and that no message
carries a secret) and ``bench/guard_field.py`` (the table by mechanism).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.guard_harness import Pack, WireResource, level

BLIND = Path(__file__).resolve().parent / "guard_corpus" / "blind"
#: A second blind set, written after the pack was extended against the first:
#: measured, not trained on.
BLIND2 = BLIND.parent / "blind2"
BLIND3 = BLIND.parent / "blind3"
VERDICTS = ("fail", "advise", "pass")
#: The engine's wire shape of a secret: ``{SIG_KEY: SECRET_SIG, "value": ...}``
#: (pulumi-policy deserialize.py:35-37 and 65-71).
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


@dataclass
class Case:
    path: Path
    description: str
    mechanism: str
    verdict: str
    why: str
    resources: list[WireResource]


def cases(where: Path = BLIND) -> list[Path]:
    return sorted(where.glob("*.yaml"))


def load(path: Path) -> Case:
    data = yaml.safe_load(path.read_text())
    for key in ("description", "mechanism", "verdict", "why", "resources"):
        if key not in data:
            raise ValueError(f"{path.name}: no {key!r}")
    if data["verdict"] not in VERDICTS:
        raise ValueError(f"{path.name}: verdict {data['verdict']!r} is not one of {VERDICTS}")
    raw: list[dict[str, Any]] = data["resources"]

    def urn(item: dict[str, Any]) -> str:
        return f"urn:pulumi:field::blind::{item['type']}::{item['name']}"

    by_name = {item["name"]: urn(item) for item in raw}
    if len(by_name) != len(raw):
        raise ValueError(f"{path.name}: resource names are not unique")
    resources = [
        WireResource(
            type=item["type"],
            name=item["name"],
            urn=urn(item),
            props=item.get("props") or {},
            parent=by_name.get(item.get("parent", ""), ""),
            dependencies=[by_name[d] for d in item.get("dependsOn") or [] if d in by_name],
        )
        for item in raw
    ]
    return Case(
        path,
        data["description"],
        data["mechanism"],
        data["verdict"],
        data["why"],
        resources,
    )


def verdict(diags: list[Any]) -> str:
    levels = {level(d) for d in diags}
    if "mandatory" in levels:
        return "fail"
    return "advise" if "advisory" in levels else "pass"


def secrets_in(value: Any) -> list[str]:
    """Every secret value in a resource's properties (the engine's secret shape)."""
    found: list[str] = []
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG and "value" in value:
            inner = value["value"]
            if isinstance(inner, str):
                found.append(inner)
            else:
                found += [s for s in _strings(inner)]
            return found
        for v in value.values():
            found += secrets_in(v)
    elif isinstance(value, list):
        for v in value:
            found += secrets_in(v)
    return found


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def leaked(case: Case, diags: list[Any]) -> list[str]:
    """Secret values, and their credential-like words (8 characters or more
    holding a digit or a sign: passwords, keys, tokens), that appear in a
    diagnostic's message."""
    out = []
    for secret in {s for r in case.resources for s in secrets_in(r.props)}:
        words = {w.strip("'\",;") for w in secret.split()}
        words = {w for w in words if len(w) >= 8 and any(not c.isalpha() for c in w)}
        for frag in sorted({secret.strip(), *words}):
            if len(frag) >= 4 and any(frag in d.message.split("\n", 1)[-1] for d in diags):
                out.append(frag)
    return out


def table(
    pack: Pack, where: Path = BLIND
) -> tuple[dict[str, list[int]], list[tuple[str, str, str, str]]]:
    """(mechanism -> [right, total]), and the wrong ones (file, mechanism, expected, got)."""
    by: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    wrong = []
    for path in cases(where):
        case = load(path)
        got = verdict(pack.analyze(case.resources))
        by[case.mechanism][1] += 1
        if got == case.verdict:
            by[case.mechanism][0] += 1
        else:
            wrong.append((path.name, case.mechanism, case.verdict, got))
    return dict(by), wrong
