"""Measured lab numbers (reported, never asserted): pool changes and throughput.

Run on a lab that is up and applied (lab/lab up && lab/lab apply), as root
(the workers' stand-ins are set by hand meanwhile; the follower of the lab's
API is paused and the stand-ins put back on the API's view afterwards):

    .venv/bin/python -m lab.measure

* how long a worker that starts dropping (or refusing) takes to leave the IPVS
  pool, and a recovered one to come back, seen from the guest's own clock;
* requests per second through HAProxy (started for the measurement on
  VIP:nodePort+1, mode tcp) and through IPVS, in the same run, from host01.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator

from keepsource import facts
from keepsource.render.keepalived import WORKLOAD_FWMARK
from lab import full, guest, hosts
from lab import run as lab

#: The line that ends each poll's table: ``@@poll <now> <t0>`` (the guest's clock).
POLL_MARK = "@@poll"


def _poller(rounds: int = 400) -> str:
    """lab/files/ipvs-poll.sh: after GO on stdin, the workload's fwmark
    service as ipvsadm prints it (keepalived's virtual servers are fwmark
    services: there is no VIP:port service in IPVS), then the marker line with
    the poll's time and GO's, every 0.05 s: :func:`polls` reads it."""
    query = facts.ipvs_service(WORKLOAD_FWMARK).command
    return guest.script("ipvs-poll", str(rounds), POLL_MARK, query)


def polls(lines: Iterable[str]) -> Iterator[tuple[float, set[str]]]:
    """The poller's output, one poll at a time: (seconds since GO, the real
    servers ('ip:port') in the table it printed)."""
    table: list[str] = []
    for line in lines:
        f = line.split()
        if len(f) == 3 and f[0] == POLL_MARK:
            parsed = facts.ipvs_service(WORKLOAD_FWMARK).parse("\n".join(table))
            yield float(f[1]) - float(f[2]), {r.address for v in parsed.values() for r in v}
            table = []
        else:
            table.append(line)


def watch_change(
    the_lab: lab.Lab, modes: dict[str, str], want: dict[str, bool], timeout: float = 20
) -> dict[str, float]:
    """Apply worker modes; seconds until each worker in ``want`` is in (True) or
    out (False) of the pool, on the guest's clock."""
    port = the_lab.settings.node_port
    addr = {w.name: f"{w.address}:{port}" for w in the_lab.workers}
    proc = subprocess.Popen(
        [*guest.ssh_argv(), _poller()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    time.sleep(1.0)  # the session is up
    f = _filter(the_lab)
    proc.stdin.write("GO\n")
    proc.stdin.flush()
    hosts.set_workers(the_lab.workers, modes, f)
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    for since_go, servers in polls(proc.stdout):
        for name, inside in want.items():
            if name not in seen and (addr[name] in servers) == inside:
                seen[name] = since_go
        if len(seen) == len(want) or time.monotonic() > deadline:
            break
    proc.kill()
    proc.wait(timeout=10)
    return seen


def load(the_lab: lab.Lab, port: int, requests: int = 600) -> dict[str, float]:
    url = f"http://{the_lab.settings.network.vip}:{port}/"
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            the_lab.clients[0].netns,
            sys.executable,
            "-m",
            "lab.load",
            url,
            str(requests),
            "4",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def haproxy_bench_config(the_lab: lab.Lab, port: int) -> str:
    """HAProxy in mode tcp in front of the workers, for its throughput only:
    it connects from the LB's check address (``source``), which the pods'
    policy admits; from the gateway address every request would be refused
    (the seed's fault)."""
    vip = the_lab.settings.network.vip
    source = the_lab.settings.lb_nodes[0].check_source
    servers = "\n".join(
        f"    server {w.name} {w.address}:{the_lab.settings.node_port} check inter 500"
        for w in the_lab.workers
    )
    return (
        "global\n    maxconn 2000\ndefaults\n    mode tcp\n    timeout connect 2s\n"
        "    timeout client 10s\n    timeout server 10s\n"
        f"frontend bench\n    bind {vip}:{port}\n    default_backend workers\n"
        f"backend workers\n    source {source}\n{servers}\n"
    )


def _filter(the_lab: lab.Lab) -> hosts.PodFilter:
    """What the workers admit: the NetworkPolicy as the API holds it (the full
    lab), or as rendered (the LB-only pair)."""
    if lab.State.load().phase == "api":
        return full.view(the_lab.settings)[0]
    return lab._filter(the_lab, "fixed")


def _one_pod(the_lab: lab.Lab, worker: str) -> None:
    hosts.set_workers(the_lab.workers, {worker: "pod"}, _filter(the_lab))


def main() -> None:
    the_lab = lab.current_lab()
    state = lab.State.load()
    keepalived = facts.unit_active("keepalived")
    if (
        state.phase not in ("fixed", "api")
        or keepalived.parse(guest.ssh(keepalived.command).stdout) != "active"
    ):
        raise SystemExit("measure: apply first (lab/lab up && lab/lab apply)")
    paused = full.follower_paused(the_lab) if state.phase == "api" else contextlib.nullcontext()
    with paused:
        _measure(the_lab)


def _measure(the_lab: lab.Lab) -> None:
    w1, w2 = (w.name for w in the_lab.workers[:2])
    _one_pod(the_lab, w1)
    time.sleep(3)
    rows = []
    for _ in range(2):
        t = watch_change(the_lab, {w1: "drop", w2: "pod"}, {w1: False, w2: True})
        rows.append(("dropping worker leaves the pool", t.get(w1)))
        rows.append(("recovered worker re-added", t.get(w2)))
        t = watch_change(the_lab, {w2: "refuse", w1: "pod"}, {w2: False, w1: True})
        rows.append(("refusing worker leaves the pool", t.get(w2)))
        rows.append(("recovered worker re-added", t.get(w1)))
    _one_pod(the_lab, w1)
    time.sleep(3)
    servers = facts.parse_ipvs(
        guest.ssh(facts.IPVS_TABLE.command).stdout,
        str(the_lab.settings.network.vip),
        the_lab.settings.node_port,
        WORKLOAD_FWMARK,
    )
    print(f"pool now: {sorted(servers)}")
    for name, seconds in rows:
        print(f"{name:<36} {'not seen' if seconds is None else f'{seconds:.2f} s'}")
    bench_port = the_lab.settings.node_port + 1
    cfg = haproxy_bench_config(the_lab, bench_port)
    start = (
        "cat > /tmp/ks-bench.cfg && haproxy -c -q -f /tmp/ks-bench.cfg"
        " && haproxy -D -p /tmp/ks-bench.pid -f /tmp/ks-bench.cfg"
    )
    guest.ssh(start, stdin=cfg, check=True)
    try:
        time.sleep(2)
        ipvs = load(the_lab, the_lab.settings.node_port)
        proxy = load(the_lab, bench_port)
    finally:
        guest.ssh("kill $(cat /tmp/ks-bench.pid); rm -f /tmp/ks-bench.cfg /tmp/ks-bench.pid")
    print(f"through IPVS (VIP:{the_lab.settings.node_port}):     {ipvs}")
    print(f"through HAProxy (VIP:{bench_port}, mode tcp): {proxy}")


if __name__ == "__main__":
    main()
