"""Many services in the lab, measured (issue 18): the services stack with N
workload services (plus the apiserver) applied by the real engine from the
seed's fault, then applied again; the time of each, per N, on one boot.

    lab/lab scale [-n 1 10 50]

Each N: the guest back at its fault snapshot (HAProxy serves), a generated
stack file (``local-services`` in the run dir: the apiserver and N web
services ``svc-001`` (on the seed's port 30080, so the seed's HAProxy serves
nothing the stack leaves out), ``svc-002`` ... on TCP ports 30100 + i, each
admitting host01, one replica in namespace ``scale``), a fresh stack in the lab's backend, the
follower on that stack, ``pulumi up``, host01 served by the first and the last
service, every pool healthy, and ``pulumi up --expect-no-changes``. Not in the
test suite (minutes per N): a measured run for docs/services.md and the notes.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import yaml

from keepsource.render import kube as render
from keepsource.stackfile import load_config
from lab import full, guest, layout, paths, run, services
from lab.run import Lab, State

#: Where the generated stack files are (one per N, made again each run).
ROOT = paths.RUN / "scale"
FIRST_PORT = 30100


def config(n: int) -> dict[str, Any]:
    """The checkout's services stack with its workload services replaced by
    ``n`` TCP web services (the apiserver kept)."""
    cfg = copy.deepcopy(load_config(layout.LAYOUT_STACKS[layout.SERVICES]))
    api = next(s for s in cfg["keepsource:services"] if s["name"] == "apiserver")
    web = next(s for s in cfg["keepsource:services"] if s["name"] == "web")
    listed = [api]
    for i in range(1, n + 1):
        # The first on the seed's port: HAProxy serves nothing the stack leaves out.
        port = web["ports"][0]["port"] if i == 1 else FIRST_PORT + i
        listed.append(
            {
                "name": f"svc-{i:03d}",
                "ports": [{"name": "http", "port": port, "nodePort": port, "targetPort": 80}],
                "allowedClients": list(web["allowedClients"]),
                "workload": {"namespace": "scale", "image": web["workload"]["image"]},
            }
        )
    cfg["keepsource:services"] = listed
    return cfg


def write(n: int) -> Path:
    """The generated stack file for ``n`` services; its directory."""
    root = ROOT / f"n{n}"
    root.mkdir(parents=True, exist_ok=True)
    name = f"Pulumi.{layout.LAYOUT_STACKS[layout.SERVICES]}.yaml"
    (root / name).write_text(yaml.safe_dump({"config": config(n)}, sort_keys=False))
    return root


def _use(the_lab: Lab, root: Path) -> None:
    """The follower and the lab's backend on the stack file in ``root``."""
    with full.follower_paused(the_lab):
        state = State.load()
        state.root = str(root)
        state.save()
    full.fresh_stack(the_lab, (root / f"Pulumi.{the_lab.stack}.yaml").read_text(), check=False)


def one(n: int, table: run.Table) -> dict[str, float]:
    """Fault to fix and again for ``n`` services: seconds of each part."""
    root = write(n)
    the_lab = run.make_lab(layout.SERVICES, root)
    t: dict[str, float] = {"restore": guest.restore_state(the_lab.guests[0])}
    start = time.monotonic()
    full.make_fault(the_lab.settings)
    t["objects"] = time.monotonic() - start
    _use(the_lab, root)
    managed = render.managed(the_lab.settings)

    def up() -> tuple[bool, str]:
        start = time.monotonic()
        done = run.apply(the_lab)
        t["up"] = time.monotonic() - start
        return done.ok and not done.failed(), f"{t['up']:.1f} s, failed: {list(done.failed())}"

    def served() -> tuple[bool, str]:
        vip = the_lab.settings.network.vip
        got = {}
        for ex in (managed[0], managed[-1]):
            url = f"http://{vip}:{ex.ports[0].port}/"
            deadline = time.monotonic() + 20
            rc, out = run.curl("ks-host01", url)
            while (rc != 0 or "Welcome to nginx" not in out) and time.monotonic() < deadline:
                time.sleep(0.5)
                rc, out = run.curl("ks-host01", url)
            got[ex.name] = rc
        pools = services.pool_members(the_lab)
        empty = sorted(k for k, v in pools.items() if not v)
        ok = all(rc == 0 for rc in got.values()) and not empty
        return ok, f"host01 curl exit {got}; {len(pools)} pools, empty: {empty or 'none'}"

    def again() -> tuple[bool, str]:
        start = time.monotonic()
        done = run.apply(the_lab, "--expect-no-changes")
        t["again"] = time.monotonic() - start
        return done.ok, f"{t['again']:.1f} s, ok {done.ok}"

    table.phase(f"{n} services: pulumi up from the fault", up)
    table.phase(f"{n} services: host01 served by the first and last, no pool empty", served)
    table.phase(f"{n} services: pulumi up --expect-no-changes", again)
    return t


def measure(counts: list[int]) -> int:
    """``lab/lab scale``: a lab on the services layout, each count in turn."""
    from engine.build import build

    run.require_root()
    build()
    run.down()
    table = run.Table()
    times: dict[int, dict[str, float]] = {}
    try:
        the_lab = run.make_lab(layout.SERVICES)
        full.up(the_lab)
        guest.save_state(the_lab.guests[0])
        full.delete_objects(the_lab.settings)  # the checkout's services: their nodePorts free
        for n in counts:
            times[n] = one(n, table)
    finally:
        run.down()
    code = table.report("scale", 3 * len(counts))
    for n, t in times.items():
        print(f"n={n}: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()))
    return code
