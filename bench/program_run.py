"""Benchmark: one whole mocked run of the dev stack, imports included.

Each sample is a fresh interpreter (so the imports are counted) that runs the
program once under the SDK's mocks. Prints per-sample seconds and the median;
this is a measurement to report, not a test.

    python bench/program_run.py [SAMPLES]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ONE_RUN = "import mockrun; mockrun.run_stack('dev')"


def main() -> None:
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", ONE_RUN], cwd=ROOT, check=True, timeout=120)
        times.append(time.perf_counter() - start)
    print("samples (s): " + " ".join(f"{t:.3f}" for t in times))
    print(
        f"median whole mocked program run (dev stack, imports included): "
        f"{statistics.median(times):.3f} s"
    )


if __name__ == "__main__":
    main()
