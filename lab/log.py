"""The lab's progress lines: ``[lab] message`` on stdout, flushed at once
(the image build's say ``[lab image] ...``)."""

from __future__ import annotations


def log(msg: str, prefix: str = "lab") -> None:
    print(f"[{prefix}] {msg}", flush=True)
