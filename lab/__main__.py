"""lab/lab: the local lab. Run as root:
lab/lab up [--ha|--services]|apply|pod|reboot|ssh|kill-lb|start-lb|verify|fault|down|
bench-boot|demo [--ha|--services].

The CLI only: a lab run's hosts, state and commands are lab/run.py."""

from __future__ import annotations

import argparse
import statistics
import sys

from lab import guest, layout, paths, run
from lab.log import log
from lab.run import (
    STACK,
    Lab,
    State,
    apply,
    down,
    fault,
    kill_lb,
    make_lab,
    reboot,
    require_root,
    set_pod,
    start_lb,
    verify,
)

__all__ = ["STACK", "engine_demo", "main"]


def _running_lab() -> Lab:
    """The running lab (its layout as up recorded it); single when none runs."""
    return make_lab(State.load().layout if paths.STATE_FILE.exists() else layout.SINGLE)


def engine_demo() -> int:
    """The real engine's scenario on a fresh lab with a Kubernetes API: a table."""
    from engine.build import build
    from lab import full

    require_root()
    build()
    the_lab = make_lab()
    table = run.Table()
    down()
    try:
        full.up(the_lab)
        full.scenario(the_lab, table)
    finally:
        down()
    return table.report("demo", full.SCENARIO_ROWS)


def services_demo() -> int:
    """The services stack on a fresh lab (``up --services``): a table."""
    from engine.build import build
    from lab import full, services

    require_root()
    build()
    the_lab = make_lab(layout.SERVICES)
    table = run.Table()
    down()
    try:
        full.up(the_lab)
        table.rows.extend(run.fault(the_lab))
        services.scenario(the_lab, table)
    finally:
        down()
    return table.report("services demo", services.SCENARIO_ROWS + 3)


def bench_boot(g: layout.Guest, n: int) -> int:
    """Cold boots (power off hard, boot on the same disk) and reboots
    (``systemctl reboot``) of a running guest, ``n`` each: seconds to SSH, with
    the guest's own ``systemd-analyze`` line for each, then median and max."""
    require_root()
    if not 1 <= n <= 50:
        raise SystemExit("lab: bench-boot: -n must be 1..50")
    seen: dict[str, list[float]] = {"boot": [], "reboot": []}
    for kind in ("boot", "reboot"):
        for i in range(1, n + 1):
            if kind == "boot":
                guest.stop(g, hard=True)
                seconds = guest.boot(g, fresh=False)
            else:
                seconds = guest.reboot(lb=g)
            seen[kind].append(seconds)
            analyze = guest.ssh("systemd-analyze | head -1", lb=g).stdout.strip()
            log(f"{kind} {i}/{n}: {seconds:.1f} s to SSH ({analyze})")
    for kind, values in seen.items():
        log(
            f"{kind} to SSH, {len(values)} runs: median {statistics.median(values):.1f} s,"
            f" max {max(values):.1f} s, min {min(values):.1f} s"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    done = _without_lab(args)
    return done if done is not None else _with_lab(args, _running_lab())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lab/lab", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser(
        "up",
        help="build the guest if needed, boot it, start the namespaces (fault state); the"
        " single layout also starts a Kubernetes API at the master's place with the seed's"
        " objects made by kubectl (needs ./build-engine)",
    )
    u.add_argument(
        "--ha", action="store_true", help="the pair: guests lb1 and lb2 (stack local-ha, LB only)"
    )
    u.add_argument(
        "--services",
        action="store_true",
        help="one guest, stack local-services: web (TCP), DNS (UDP) and the apiserver",
    )
    a = sub.add_parser("apply", help="pulumi up of the lab's stack with the real CLI")
    a.add_argument(
        "--cut",
        help="STEP:SECONDS: kill the SSH connection of STEP (e.g. lb-cutover) on the guest"
        " SECONDS after its script started",
    )
    a.add_argument(
        "--replace",
        action="append",
        metavar="URN",
        help="pulumi up --replace URN (as verify prints them); repeatable",
    )
    p = sub.add_parser("pod", help="move the pod to WORKER")
    p.add_argument("worker")
    r = sub.add_parser("reboot", help="reboot a guest and wait for SSH (and keepalived)")
    r.add_argument("--lb", metavar="NAME", help="which guest (the pair: lb1 or lb2)")
    s = sub.add_parser("ssh", help="run a command on a guest")
    s.add_argument("--lb", metavar="NAME", help="which guest (the pair: lb1 or lb2)")
    s.add_argument("command", nargs=argparse.REMAINDER)
    k = sub.add_parser("kill-lb", help="power a guest off hard (kill its qemu)")
    k.add_argument("name")
    b = sub.add_parser("start-lb", help="boot a killed guest again, wait for SSH")
    b.add_argument("name")
    bb = sub.add_parser(
        "bench-boot", help="boot and reboot a running guest N times each: seconds to SSH"
    )
    bb.add_argument("-n", type=int, default=10, help="boots and reboots each (default 10)")
    bb.add_argument("--lb", metavar="NAME", help="which guest (the pair: lb1 or lb2)")
    sub.add_parser("verify", help="python -m keepsource verify STACK (local or local-ha)")
    sub.add_parser("fault", help="show the seed's fault (before apply)")
    sub.add_parser("down", help="remove everything the lab made")
    sub.add_parser("engine-demo", help="the same as demo")
    d = sub.add_parser(
        "demo",
        help="up, then `pulumi up` with the real engine from the fault to the fix "
        "(lab/full.py), down: a table",
    )
    d.add_argument("--ha", action="store_true", help="the pair's failover scenario")
    d.add_argument(
        "--services",
        action="store_true",
        help="stack local-services: web (TCP), DNS (UDP) and the apiserver on one VIP",
    )
    sc = sub.add_parser(
        "scale",
        help="the services stack with N web services each (default 1 10 50), fault to fix"
        " and again, on one boot: the time of each (lab/scale.py)",
    )
    sc.add_argument("-n", type=int, nargs="+", default=[1, 10, 50], help="service counts")
    return parser


def _without_lab(args: argparse.Namespace) -> int | None:
    """The commands that make their own lab (or need none); None for the others."""
    if args.cmd == "scale":
        from lab import scale

        if any(n < 1 or n > 150 for n in args.n):
            raise SystemExit("lab: scale -n takes counts from 1 to 150")
        return scale.measure(args.n)
    if args.cmd == "demo":
        if args.ha:
            from lab import ha

            return ha.demo()
        if args.services:
            return services_demo()
        return engine_demo()
    if args.cmd == "down":
        down()
        return 0
    if args.cmd == "engine-demo":
        return engine_demo()
    if args.cmd == "ssh":
        g = _running_lab().guest(args.lb)
        done = guest.ssh(" ".join(args.command) or "true", timeout=600, lb=g)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        return done.returncode
    if args.cmd == "verify":
        return verify()
    if args.cmd == "bench-boot":
        return bench_boot(_running_lab().guest(args.lb), args.n)
    if args.cmd == "kill-lb":
        return 0 if kill_lb(args.name) else 1
    if args.cmd == "start-lb":
        start_lb(args.name)
        return 0
    if args.cmd == "up":
        from engine.build import build

        layout_name = (
            layout.PAIR if args.ha else layout.SERVICES if args.services else layout.SINGLE
        )
        the_lab = make_lab(layout_name)
        from lab import full

        build()  # the control plane's binaries (cached)
        full.up(the_lab)  # with the API when the layout's stack manages the Workload
        return 0
    return None


def _with_lab(args: argparse.Namespace, the_lab: Lab) -> int:
    """The commands on the lab that is up."""
    if args.cmd == "apply":
        return _apply(args, the_lab)
    if args.cmd == "pod":
        _pod(args.worker, the_lab)
    elif args.cmd == "reboot":
        for k_, v in reboot(args.lb).items():
            log(f"{k_}: {v:.1f} s")
    elif args.cmd == "fault":
        rows = fault(the_lab)
        for name, ok, detail in rows:
            print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
        return 0 if all(ok for _, ok, _ in rows) else 1
    return 0


def _apply(args: argparse.Namespace, the_lab: Lab) -> int:
    from lab import full

    cut = None
    if args.cut:
        name, _, secs = args.cut.rpartition(":")
        cut = (name, float(secs))
    result = apply(the_lab, *[f"--replace={u}" for u in args.replace or []], cut=cut)
    if not result.ok:
        for name, why in result.failed().items():
            print(f"{name}: {why.strip()[-2000:]}", file=sys.stderr)
        print(result.output[-2000:], file=sys.stderr)
        return 1
    if the_lab.settings.manages_workload:
        full.sync_workers(the_lab)
    return 0


def _pod(worker: str, the_lab: Lab) -> None:
    if worker not in [w.name for w in the_lab.workers]:
        raise SystemExit(f"lab: no worker {worker!r}")
    state = State.load()
    if state.phase == "api":
        from lab import full

        seconds = full.place_pod(the_lab.settings, worker)
        log(f"the pod is Ready on {worker} after {seconds:.1f} s (through the API)")
    else:
        state.pod = worker
        set_pod(the_lab, state)
        log(f"the pod is on {state.pod}")


if __name__ == "__main__":
    sys.exit(main())
