"""Benchmark: AnalyzeStack time of the keepsource-guard pack against stack size.

The pack is started once, exactly as the Pulumi CLI starts it (``python -m
pulumi.policy``), and sent AnalyzeStack requests over gRPC, as the engine does:
the dev stack (from a mocked run of the program), then synthetic stacks of N
apps, each a Deployment, a Service (NodePort, ETP Local), an ipBlock
NetworkPolicy (all apps share one namespace, so selectors must be indexed) and
an LB Command on its own host that writes a keepalived/LVS NAT config by
heredoc and reloads keepalived. Every request is answered by every policy of
the pack (each gets its own copy of the resources from pulumi-policy). Prints
the median of several samples per size and the 500/50 ratio; a measurement to
report, not a test.

    python bench/guard_scale.py [SAMPLES]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "policies"))

from tests.guard_harness import Pack, WireResource, start_pack  # noqa: E402

NS = "bench"


def _urn(type_: str, name: str) -> str:
    return f"urn:pulumi:bench::guard::{type_}::{name}"


def app(i: int) -> list[WireResource]:
    name = f"app{i}"
    labels = {"app": name, "tier": "web"}
    node_port = 30000 + i
    lb_host = f"10.{100 + i // 250}.{i % 250}.1"
    keepalived = (
        f"virtual_server 192.168.{i // 250}.{i % 250 + 1} 80 {{\n"
        "    lvs_method NAT\n    protocol TCP\n"
        f"    real_server 172.16.0.11 {node_port} {{\n"
        "        TCP_CHECK {\n            connect_timeout 3\n"
        "            bindto 172.16.0.254\n        }\n    }\n"
        "}\n"
    )
    script = (
        "set -euo pipefail\n"
        "cat > /etc/keepalived/keepalived.conf <<'CONF'\n"
        f"{keepalived}CONF\n"
        "systemctl reload-or-restart keepalived\n"
    )
    deploy: dict[str, Any] = {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx:1.27",
                            "ports": [{"name": "http", "containerPort": 80.0}],
                        }
                    ]
                },
            },
        },
    }
    service = {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "type": "NodePort",
            "externalTrafficPolicy": "Local",
            "selector": labels,
            "ports": [{"port": 80.0, "targetPort": "http", "nodePort": float(node_port)}],
        },
    }
    policy = {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "podSelector": {"matchLabels": {"app": name}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"ipBlock": {"cidr": "192.168.0.10/32"}},
                        {"ipBlock": {"cidr": "172.16.0.254/32"}},
                    ],
                    "ports": [{"port": 80.0}],
                }
            ],
        },
    }
    command = {"connection": {"host": lb_host, "user": "root", "port": 22.0}, "create": script}
    return [
        WireResource("kubernetes:apps/v1:Deployment", name, _urn("Deployment", name), deploy),
        WireResource("kubernetes:core/v1:Service", name, _urn("Service", name), service),
        WireResource(
            "kubernetes:networking.k8s.io/v1:NetworkPolicy",
            name,
            _urn("NetworkPolicy", name),
            policy,
        ),
        WireResource(
            "command:remote:Command", f"lb-{name}", _urn("Command", f"lb-{name}"), command
        ),
    ]


def synthetic(apps: int) -> list[WireResource]:
    return [r for i in range(apps) for r in app(i)]


def dev_stack() -> list[WireResource]:
    import mockrun

    run = mockrun.run_stack("dev")
    return [
        WireResource(
            r.type,
            r.name,
            r.urn,
            {**r.wire, **({} if r.custom else r.outputs)},
            r.parent,
            list(r.dependencies),
        )
        for r in run.resources
    ]


def measure(pack: Pack, resources: list[WireResource], samples: int) -> tuple[float, int]:
    """Median seconds of one AnalyzeStack call (the request is built beforehand:
    the engine's side of the work is not the pack's)."""
    request = pack.request(resources)
    times = []
    diags = 0
    for _ in range(samples):
        start = time.perf_counter()
        diags = len(pack.analyze_request(request))
        times.append(time.perf_counter() - start)
    return statistics.median(times), diags


def main() -> None:
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    sizes = [("dev stack", dev_stack())] + [(f"{n} apps", synthetic(n)) for n in (50, 250, 500)]
    results: dict[str, float] = {}
    for pack in start_pack():
        pack.analyze(sizes[0][1])  # warm up imports in the pack process
        print(f"{'stack':<10} {'resources':>9} {'median s':>9} {'ms/resource':>12} {'findings':>8}")
        for label, resources in sizes:
            seconds, diags = measure(pack, resources, samples)
            results[label] = seconds
            per = 1000 * seconds / len(resources)
            print(f"{label:<10} {len(resources):>9} {seconds:>9.3f} {per:>12.3f} {diags:>8}")
    ratio = results["500 apps"] / results["50 apps"]
    print(f"500/50 apps time ratio: {ratio:.1f} (10x the resources; linear growth is about 10)")
    # The guard's own share, in this process: model built and judged once.
    from guard import verdicts as guard_verdicts
    from guard.base import Resource, normalize

    own = {}
    for label, resources in sizes[1:]:
        plain = [Resource(r.type, r.name, r.urn, normalize(r.props)) for r in resources]
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            guard_verdicts.judge(plain)
            times.append(time.perf_counter() - start)
        own[label] = statistics.median(times)
        print(f"guard model + verdicts only, {label}: {own[label]:.3f} s")
    print(f"guard-only 500/50 ratio: {own['500 apps'] / own['50 apps']:.1f}")


if __name__ == "__main__":
    main()
