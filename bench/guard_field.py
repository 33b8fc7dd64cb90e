"""The guard on stacks it has never seen: right / total by mechanism.

Judges every stack in ``tests/guard_corpus/blind`` (written by a reviewer who
had not read the pack) with the pack started as the Pulumi CLI starts it, and
prints a table by mechanism and the stacks it got wrong. A report, not a test:
``tests/test_guard_field.py`` holds each stack to its verdict.

    python bench/guard_field.py [DIR]   (default tests/guard_corpus/blind)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.guard_field import BLIND, cases, table  # noqa: E402
from tests.guard_harness import start_pack  # noqa: E402


def main() -> int:
    where = Path(sys.argv[1]) if len(sys.argv) > 1 else BLIND
    if not cases(where):
        print(f"no blind stacks in {where}", file=sys.stderr)
        return 1
    packs = start_pack()
    pack = next(packs)
    try:
        by, wrong = table(pack, where)
    finally:
        for _ in packs:  # the rest of start_pack: the pack process is stopped
            pass
    width = max(len(m) for m in by)
    right = sum(r for r, _ in by.values())
    total = sum(t for _, t in by.values())
    print(f"{'mechanism':<{width}}  right / total")
    for mech in sorted(by):
        r, t = by[mech]
        print(f"{mech:<{width}}  {r:>5} / {t}")
    print(f"{'all':<{width}}  {right:>5} / {total}")
    for name, mech, expected, got in wrong:
        print(f"wrong: {name} ({mech}): expected {expected}, got {got}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
