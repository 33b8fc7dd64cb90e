"""How keepsource's own work grows with the number of services (issue 18).

For N services (each a workload on its own nodePort, half of them UDP with a
DNS check), the time to parse the stack and render every artifact (the
keepalived.conf, switch rules, manifests and the four step scripts), and
Debian's ``keepalived -t`` on the result. The engine's and the hosts' share of
an apply is measured in the lab, not here.

    python bench/services_scale.py [N ...]   (default: 1 10 50 150; at most 199 and the apiserver)
"""

from __future__ import annotations

import copy
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keepsource.artifacts import artifacts
from keepsource.settings import parse
from keepsource.stackfile import load_config


def stack(n: int) -> dict[str, Any]:
    cfg = copy.deepcopy(load_config("local-services"))
    services: list[dict[str, Any]] = [cfg["keepsource:services"][0]]  # the apiserver
    for i in range(n):
        udp = i % 2 == 1
        services.append(
            {
                "name": f"svc{i}",
                "ports": [
                    {
                        "name": "dns" if udp else "http",
                        "protocol": "UDP" if udp else "TCP",
                        "port": 30100 + i,
                        "nodePort": 30100 + i,
                        "targetPort": 53 if udp else 80,
                    }
                ],
                "allowedClients": [f"192.168.0.{10 + i % 200}/32"],
                **({"check": {"dnsQuery": "example.org"}} if udp else {}),
                "workload": {"namespace": f"ns{i % 5}", "image": "nginx:1.27.3"},
            }
        )
    cfg["keepsource:services"] = services
    return cfg


def timed(n: int, repeat: int = 5) -> tuple[float, float, int]:
    cfg = stack(n)
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        files = artifacts(parse(copy.deepcopy(cfg)))
        runs.append(time.perf_counter() - t0)
    conf = files["keepalived.conf"]
    check = float("nan")
    keepalived = shutil.which("keepalived", path="/usr/sbin:/sbin:/usr/bin")
    if keepalived:
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write(conf)
            f.flush()
            t0 = time.perf_counter()
            done = subprocess.run(
                [keepalived, "-t", "-f", f.name], capture_output=True, timeout=120
            )
            check = time.perf_counter() - t0
            if done.returncode != 0:
                raise SystemExit(f"keepalived -t refused {n} services: {done.stderr!r}")
    return statistics.median(runs), check, len(conf.splitlines())


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [1, 10, 50, 150]
    print(
        f"{'services':>8} {'render s':>9} {'per svc ms':>10} {'keepalived -t s':>16}"
        f" {'conf lines':>10}"
    )
    base = None
    for n in sizes:
        render, check, lines = timed(n)
        base = base or (render, n)
        print(f"{n:>8} {render:>9.3f} {1000 * render / n:>10.2f} {check:>16.3f} {lines:>10}")
    if base and len(sizes) > 1:
        n_last = sizes[-1]
        render_last, *_ = timed(n_last, 3)
        print(
            f"render time {n_last}/{base[1]} services: {render_last / base[0]:.1f}x"
            f" for {n_last / base[1]:.0f}x the services"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
