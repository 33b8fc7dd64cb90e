"""1,000 generated stacks through the pack as the engine calls it: no crash, no secret.

Each stack is a corpus stack (the pack's own or the blind reviewer's) with a few
of its values replaced at random (seeded): other property types (numbers,
NaN and infinities, booleans, lists, maps, empty and odd strings), values
unknown at preview, and secrets in the engine's wire shape, both as canaries and
as the original value made secret. Every AnalyzeStack must answer (the pack's
own net turns a fault into a finding; an RPC error fails here) and no message
may carry a secret's value or its credential-like words.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.guard_field import BLIND, SECRET_SIG, SIG_KEY, secrets_in
from tests.guard_harness import UNKNOWN_MARK, Pack, WireResource, start_pack

CORPUS = Path(__file__).resolve().parent / "guard_corpus"
STACKS = 1000
SEED = 20261202


def _stacks() -> list[list[dict[str, Any]]]:
    out = []
    for path in sorted(CORPUS.glob("*.yaml")):
        case = yaml.safe_load(path.read_text())
        raw: list[dict[str, Any]] = []
        for inc in case.get("include") or []:
            raw += yaml.safe_load((CORPUS / "_base" / inc).read_text())
        out.append(raw + (case.get("resources") or []))
    for path in sorted(BLIND.glob("*.yaml")):
        out.append(yaml.safe_load(path.read_text())["resources"])
    return out


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(obj, dict) and obj.get(SIG_KEY) is None:
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))
    else:
        yield path


def _junk(rng: random.Random, old: Any, n: int) -> Any:
    kind = rng.randrange(12)
    if kind == 0:
        return {SIG_KEY: SECRET_SIG, "value": f"Canary-{n}-{rng.randrange(10**6)}!pw"}
    if kind == 1:
        return {SIG_KEY: SECRET_SIG, "value": old}
    return rng.choice(
        [
            None,
            UNKNOWN_MARK,
            rng.randint(-(2**40), 2**40),
            rng.choice([0.5, float("nan"), float("inf"), -float("inf"), 1e308]),
            rng.choice([True, False]),
            rng.choice(
                ["", " ", "\n", "x" * 300, "::/0", "0.0.0.0/0", "a:b:c", "$(rm -rf /)", "é✓"]
            ),
            [old, old],
            {"k": old},
            str(old),
            [],
        ]
    )


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    cur = obj
    for key in path[:-1]:
        cur = cur[key]
    cur[path[-1]] = value


def generated() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    rng = random.Random(SEED)
    stacks = _stacks()
    for n in range(STACKS):
        raw = copy.deepcopy(rng.choice(stacks))
        for _ in range(rng.randint(1, 4)):
            item = rng.choice(raw)
            leaves = list(_leaves(item.setdefault("props", {})))
            if not leaves or leaves == [()]:
                continue
            path = rng.choice(leaves)
            if not path:
                continue
            cur = item["props"]
            for key in path[:-1]:
                cur = cur[key]
            _set(item["props"], path, _junk(rng, cur[path[-1]], n))
        yield n, raw


def _wire(raw: list[dict[str, Any]]) -> list[WireResource]:
    by_name = {r["name"]: f"urn:pulumi:fuzz::g::{r['type']}::{r['name']}" for r in raw}
    return [
        WireResource(
            r["type"],
            r["name"],
            by_name[r["name"]],
            json.loads(json.dumps(r.get("props") or {}, default=str), parse_constant=float),
            dependencies=[by_name[d] for d in r.get("dependsOn") or [] if d in by_name],
        )
        for r in raw
    ]


@pytest.fixture(scope="module")
def pack() -> Iterator[Pack]:
    yield from start_pack()


def test_a_thousand_generated_stacks_answer_and_keep_their_secrets(pack: Pack) -> None:
    leaks, secrets_seen = [], 0
    for n, raw in generated():
        resources = _wire(raw)
        diags = pack.analyze(resources)  # an RPC error (a crash of the pack) fails here
        # pulumi-policy puts the policy's own description first: the pack's text
        text = "\n".join(d.message.split("\n", 1)[-1] for d in diags)
        for secret in {s for r in resources for s in secrets_in(r.props)}:
            secrets_seen += 1
            words = {w.strip("'\",;") for w in secret.split()}
            words = {w for w in words if len(w) >= 8 and any(not c.isalpha() for c in w)}
            for frag in {secret.strip(), *words}:
                if len(frag) >= 4 and re.search(rf"(?<![\w.]){re.escape(frag)}(?!\w)", text):
                    leaks.append(f"stack {n}: {frag!r}")
    assert secrets_seen > 100, "the generator must put secrets in play"
    assert not leaks, "\n".join(leaks[:20])
