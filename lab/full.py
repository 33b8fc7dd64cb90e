"""The full lab: a real Kubernetes API at the master's place, applied by the real engine.

``lab/lab up --kube`` starts the control plane (lab/kube.py) in the master's
namespace instead of the master's HTTP stand-in and makes the seed's objects
with kubectl, as the seed's operators did (so ``pulumi up`` adopts objects
another field manager owns). The workers' stand-ins then follow what the API
holds: the Service's nodePort and externalTrafficPolicy, the NetworkPolicy,
and which node has a Ready pod (kwok runs the pods; nothing serves in them).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from keepsource.render import kube as render
from keepsource.settings import Settings
from lab import engine, hosts, kube, paths
from lab.run import Plan, State

VENV = paths.PROJECT / ".venv"


def log(msg: str) -> None:
    print(f"[lab] {msg}", flush=True)


def master(plan_: Plan) -> kube.Master:
    s = plan_.settings
    return kube.Master(
        netns=plan_.master.netns,
        address=str(s.apiserver.address),
        port=s.apiserver.port,
        workers=tuple((w.name, str(w.address)) for w in s.workers),
        extra_sans=(str(s.network.vip),),
    )


def seed_objects(s: Settings) -> list[dict[str, Any]]:
    """The seed's objects: the Service with ``externalTrafficPolicy: Cluster``
    and a NetworkPolicy that admits the allowed clients only."""
    service = render.service(s)
    service["spec"]["externalTrafficPolicy"] = "Cluster"
    return [
        render.namespace(s),
        render.deployment(s),
        service,
        render.network_policy(s, []),
    ]


def make_fault(s: Settings) -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": seed_objects(s)}
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(doc))
    wait_ready(s, 120)
    log(f"fault: the seed's objects in {s.workload.namespace}, made with kubectl")


def api_objects(s: Settings) -> dict[str, dict[str, Any]]:
    ns, name = s.workload.namespace, s.workload.name
    out = kube.kubectl("get", "-n", ns, "service,networkpolicy,deployment", name, "-o", "json")
    items = json.loads(out)["items"]
    return {i["kind"]: i for i in items}


def ready_pod_nodes(s: Settings) -> list[str]:
    sel = ",".join(f"{k}={v}" for k, v in render.labels(s).items())
    out = kube.kubectl("get", "pods", "-n", s.workload.namespace, "-l", sel, "-o", "json")
    nodes = []
    for pod in json.loads(out)["items"]:
        conds = pod.get("status", {}).get("conditions", [])
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
            node = pod.get("spec", {}).get("nodeName")
            if node:
                nodes.append(node)
    return nodes


def wait_ready(s: Settings, timeout: float) -> list[str]:
    for _ in range(int(timeout / 0.5) + 1):
        nodes = ready_pod_nodes(s)
        if nodes:
            return nodes
        time.sleep(0.5)
    raise SystemExit(f"lab: no Ready pod of {s.workload.name} within {timeout:.0f} s")


def sync_workers(plan_: Plan) -> hosts.PodFilter:
    """Set the workers' stand-ins from the API: the pod where a Ready pod is,
    the Service's ports and traffic policy, the NetworkPolicy's ipBlocks."""
    s = plan_.settings
    objs = api_objects(s)
    nodes = tuple(str(w.address) for w in s.workers)
    f = hosts.api_filter(objs["Service"], objs["NetworkPolicy"], nodes)
    on = ready_pod_nodes(s)
    hosts.set_workers(plan_.workers, {n: "pod" for n in on}, f)
    state = State.load()
    state.pod = on[0] if on else ""
    state.phase = "api"
    state.save()
    policy = objs["Service"]["spec"].get("externalTrafficPolicy")
    log(f"workers from the API: pod on {on}, {policy}, admitted {list(f.admitted)}")
    return f


def start(plan_: Plan) -> dict[str, float]:
    times = kube.start(master(plan_))
    make_fault(plan_.settings)
    sync_workers(plan_)
    return times


def pki() -> Path:
    return kube.DIR / "pki"


def api_probe_env() -> dict[str, str]:
    """A probe's client certificate for the API (the admin; the lab's own CA)."""
    d = pki()
    return {
        "KS_PROBE_CA": str(d / "ca.crt"),
        "KS_PROBE_CERT": str(d / "admin.crt"),
        "KS_PROBE_KEY": str(d / "admin.key"),
    }


def pulumi(plan_: Plan) -> engine.Pulumi:
    return engine.prepare(plan_.stack, VENV, paths.KEY)


def preview(p: engine.Pulumi, stack: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return p.run("preview", "--diff", *extra, stack=stack, check=False)
