"""The corpus: stacks of resources in the engine's wire shape, each with its verdict,
judged by the pack started as the Pulumi CLI starts it (one process per module).

Each tests/guard_corpus/*.yaml has ``description``, ``include`` (base resource
lists), ``resources`` and ``expect``: the exact list of diagnostics (policy,
level, message fragments, URN suffix). An empty ``expect`` means the stack
passes with no diagnostic at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.guard_harness import Pack, WireResource, level, start_pack

CORPUS = Path(__file__).resolve().parent / "guard_corpus"
CASES = sorted(p for p in CORPUS.glob("*.yaml"))


def load(path: Path) -> tuple[dict[str, Any], list[WireResource]]:
    case = yaml.safe_load(path.read_text())
    raw: list[dict[str, Any]] = []
    for inc in case.get("include") or []:
        raw += yaml.safe_load((CORPUS / "_base" / inc).read_text())
    raw += case.get("resources") or []

    def urn(item: dict[str, Any]) -> str:
        return f"urn:pulumi:corpus::guard::{item['type']}::{item['name']}"

    by_name = {item["name"]: urn(item) for item in raw}
    resources = [
        WireResource(
            type=item["type"],
            name=item["name"],
            urn=urn(item),
            props=item.get("props") or {},
            parent=by_name.get(item.get("parent", ""), ""),
            dependencies=[by_name[d] for d in item.get("dependsOn") or []],
        )
        for item in raw
    ]
    return case, resources


@pytest.fixture(scope="module")
def pack() -> Iterator[Pack]:
    yield from start_pack()


def test_corpus_is_large_and_paired() -> None:
    assert len(CASES) + len(list((CORPUS / "blind").glob("*.yaml"))) >= 180  # issue 17
    verdicts = [bool(yaml.safe_load(p.read_text()).get("expect")) for p in CASES]
    assert sum(verdicts) >= 20 and len(verdicts) - sum(verdicts) >= 15


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_corpus_case(pack: Pack, path: Path) -> None:
    case, resources = load(path)
    diags = pack.analyze(resources)
    got = [(d.policyName, level(d), d.message, d.urn) for d in diags]
    expected = case.get("expect") or []
    shown = "\n".join(f"  {p} [{lv}] {u}\n    {m}" for p, lv, m, u in got)
    assert len(got) == len(expected), f"{path.name}: {case['description']}\ngot:\n{shown}"
    remaining = list(got)
    for exp in expected:
        match = [
            g
            for g in remaining
            if g[0] == exp["policy"]
            and g[1] == exp.get("level", "mandatory")
            and all(frag in g[2] for frag in exp.get("contains") or [])
            and g[3].endswith(exp.get("urn", ""))
        ]
        assert match, f"{path.name}: no diagnostic like {exp}\ngot:\n{shown}"
        remaining.remove(match[0])
