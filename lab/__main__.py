"""lab/lab: the local lab. Run as root: lab/lab up|apply|pod|reboot|ssh|verify|down|demo."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keepsource.artifacts import artifacts
from keepsource.settings import Settings
from keepsource.stackfile import PROJECT_ROOT, load
from keepsource.verify import curl_command, runner_for
from lab import driver, guest, hosts, image, net, paths

STACK = "local"


def log(msg: str) -> None:
    print(f"[lab] {msg}", flush=True)


# -- the lab's plan, from the local stack -------------------------------------


@dataclass
class Plan:
    settings: Settings
    clients: list[net.Host]
    repo: net.Host
    master: net.Host
    workers: list[net.Host]

    @property
    def all(self) -> list[net.Host]:
        return [*self.clients, self.repo, self.master, *self.workers]


def make_plan(stack: str = STACK) -> Plan:
    s = load(stack)
    n = s.network
    baked = ("192.168.0.1", "172.16.0.254", "192.168.0.0/24", "172.16.0.0/24")
    got = (str(n.vip), str(n.lb_internal_address), str(n.external_subnet), str(n.internal_subnet))
    if got != baked:
        raise SystemExit(f"lab: the guest image is built for {baked}; stack {stack} has {got}")
    if s.verify is None or s.verify.via != "netns":
        raise SystemExit(f"lab: stack {stack} must verify via netns")
    ext, inner = n.external_subnet.prefixlen, n.internal_subnet.prefixlen
    gw = str(n.lb_internal_address)
    clients = [
        net.Host(c.target.removeprefix("ks-"), "ext", str(c.address), ext)
        for c in (s.verify.allowed_client, s.verify.denied_client)
    ]
    return Plan(
        settings=s,
        clients=clients,
        repo=net.Host("repo", "ext", image.REPO_ADDRESS, ext),
        master=net.Host("master", "int", str(s.apiserver.address), inner, gw),
        workers=[net.Host(w.name, "int", str(w.address), inner, gw) for w in s.workers],
    )


# -- state of a running lab ----------------------------------------------------


@dataclass
class State:
    pod: str
    phase: str  # "seed" (HAProxy, the seed's policy) or "fixed" (the rendered policy)
    pids: list[int] = field(default_factory=list)

    def save(self) -> None:
        paths.STATE_FILE.write_text(json.dumps(self.__dict__))

    @staticmethod
    def load() -> State:
        if not paths.STATE_FILE.exists():
            raise SystemExit("lab: the lab is not up (run lab/lab up)")
        return State(**json.loads(paths.STATE_FILE.read_text()))


def _filter(plan: Plan, phase: str) -> hosts.PodFilter:
    manifests = artifacts(plan.settings)["manifests.yaml"]
    return hosts.pod_filter(
        manifests, phase == "seed", str(plan.settings.network.lb_internal_address)
    )


def set_pod(plan: Plan, state: State) -> None:
    hosts.set_workers(plan.workers, {state.pod: "pod"}, _filter(plan, state.phase))
    state.save()


# -- commands ----------------------------------------------------------------------


def require_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit("lab: run as root (network namespaces, taps, QEMU)")


def up(plan: Plan) -> dict[str, float]:
    require_root()
    times: dict[str, float] = {}
    if paths.STATE_FILE.exists() or guest.qemu_pid() is not None:
        raise SystemExit("lab: the lab is up already (lab/lab down first)")
    leftovers = [ns for ns in net.namespaces() if ns.startswith("ks-")]
    if leftovers:
        raise SystemExit(f"lab: namespaces from an earlier lab remain: {leftovers} (lab/lab down)")
    s = plan.settings.network
    clash = net.conflicts([s.external_subnet, s.internal_subnet])
    if clash:
        raise SystemExit(
            "lab: refusing to start, the lab's subnets overlap this machine:\n  "
            + "\n  ".join(clash)
        )
    start = time.monotonic()
    image.build()
    times["image"] = time.monotonic() - start
    guest.clean_run_dir()
    paths.RUN.mkdir(parents=True)
    net.create(plan.all)
    log(f"namespaces: {', '.join(h.netns for h in plan.all)} (bridges in {net.SWITCH})")
    f = _filter(plan, "seed")
    pids = hosts.start_servers(
        plan.repo, plan.master, plan.settings.apiserver.port, plan.workers, f.pod_port
    )
    state = State(pod=plan.workers[0].name, phase="seed", pids=pids)
    set_pod(plan, state)
    hosts.wait_listening(
        [(plan.repo, 80), (plan.master, plan.settings.apiserver.port)]
        + [(w, f.pod_port) for w in plan.workers]
    )
    log(f"workers: the pod is on {state.pod}; filter = the seed's policy {list(f.admitted)}")
    boot = time.monotonic()
    guest.start()
    log(f"guest booting (console: {paths.CONSOLE}) ...")
    guest.wait_ssh()
    times["boot_to_ssh"] = time.monotonic() - boot
    log(f"guest answers SSH after {times['boot_to_ssh']:.1f} s")
    return times


def _driver_ssh(step: driver.Planned, _: float | None) -> subprocess.Popen[str]:
    argv = [*guest.ssh_argv(port=step.port, user=step.user, host=step.host), step.create]
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@dataclass
class Applied:
    results: list[driver.Result]
    planned: int

    @property
    def complete(self) -> bool:
        """Every planned command ran and succeeded."""
        return len(self.results) == self.planned and all(r.rc == 0 for r in self.results)


def apply(
    plan: Plan,
    cut: tuple[str, float] | None = None,
    workload_first: bool = True,
    config: dict[str, Any] | None = None,
    replace: list[str] | None = None,
) -> Applied:
    """keepsource's remote commands over SSH. The local stack manages no
    Kubernetes objects (they are "managed elsewhere"), so the Workload's side
    of the fix comes first, as a GitOps sync would: the CNI stand-in enforces
    the rendered NetworkPolicy (which admits the LB's check source) before the
    cut-over runs. ``workload_first=False`` keeps the seed's policy: the pool
    of the workload can then never become healthy."""
    require_root()
    state = State.load()
    steps = driver.plan(STACK, config)
    if replace:
        # Like `pulumi up --replace URN...` on an unchanged stack: only those
        # commands run (pulumi-command runs a replaced command's create again).
        names = {urn.rsplit("::", 1)[-1] for urn in replace}
        unknown = names - {s.name for s in steps}
        if unknown:
            raise SystemExit(f"lab: the program declares no command {sorted(unknown)}")
        steps = [s for s in steps if s.name in names]
    if workload_first and state.phase != "fixed":
        state.phase = "fixed"
        set_pod(plan, state)
        log(f"workers: filter = the rendered NetworkPolicy {list(_filter(plan, 'fixed').admitted)}")
    log(f"apply: {len(steps)} remote commands declared by the program (stack {STACK}), over SSH")
    return Applied(driver.apply(steps, _driver_ssh, cut=cut), len(steps))


class Probe:
    """``python -m lab.probe`` in a lab namespace, in the background: a
    request to ``url`` every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, ns: str, url: str, interval: float = 0.2, limit: float = 900) -> None:
        self.stopfile = paths.RUN / f"probe-{ns}-{time.monotonic_ns()}.stop"
        argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "lab.probe"]
        self.proc = subprocess.Popen(
            [*argv, url, str(interval), str(limit), str(self.stopfile)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )

    def stop(self) -> dict[str, Any]:
        self.stopfile.touch()
        out, _ = self.proc.communicate(timeout=30)
        self.stopfile.unlink(missing_ok=True)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


def wait_keepalived(timeout: float = 60) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if guest.ssh("systemctl is-active keepalived", timeout=10).stdout.strip() == "active":
            return time.monotonic() - start
        time.sleep(0.5)
    raise SystemExit(f"lab: keepalived not active {timeout} s after boot")


def reboot() -> dict[str, float]:
    require_root()
    State.load()
    t = {"reboot_to_ssh": guest.reboot()}
    if "keepalived" in guest.ssh("systemctl list-unit-files keepalived.service --no-legend").stdout:
        t["ssh_to_keepalived_active"] = wait_keepalived()
    return t


def verify() -> int:
    return subprocess.run(
        [sys.executable, "-m", "keepsource", "--project", str(PROJECT_ROOT), "verify", STACK],
        check=False,
        timeout=300,
    ).returncode


def down() -> None:
    require_root()
    if paths.STATE_FILE.exists():
        for pid in State.load().pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
    stopped = guest.stop()
    removed = net.destroy()
    guest.clean_run_dir()
    what = ", ".join(removed) or "nothing"
    log(f"down: qemu {'stopped' if stopped else 'not running'}; removed {what}")


def curl(ns: str, url: str) -> tuple[int, str]:
    """curl -m 2 from a lab namespace, exactly as verify runs it."""
    return runner_for("netns", ns)(curl_command(url))


def fault(plan: Plan) -> list[tuple[str, bool, str]]:
    """The seed's fault: through HAProxy neither client gets the page."""
    url = f"http://{plan.settings.network.vip}:{plan.settings.node_port}/"
    rows = []
    active = guest.ssh("systemctl is-active haproxy").stdout.strip()
    rows.append(("fault: haproxy serves the VIP", active == "active", active))
    for client in plan.clients:
        rc, out = curl(client.netns, url)
        got_page = rc == 0 and "Welcome to nginx" in out
        code = out.strip().splitlines()[-1] if out.strip() else ""
        rows.append(
            (
                f"fault: {client.name} refused through HAProxy",
                not got_page,
                f"curl exit {rc} {code}",
            )
        )
    return rows


DEMO_ROWS = 14


def demo() -> int:
    """up, the fault, apply, apply again, verify, reboot, verify, down: a table."""
    require_root()
    t0 = time.monotonic()
    plan = make_plan()
    rows: list[tuple[str, bool, str]] = []

    def phase(name: str, fn: Callable[[], tuple[bool, str]]) -> bool:
        try:
            ok, detail = fn()
        except SystemExit as error:  # a bounded wait ran out, or a step refused
            ok, detail = False, str(error)
        rows.append((name, ok, detail))
        return ok

    def first_apply() -> tuple[bool, str]:
        api = f"http://{plan.settings.network.vip}:{plan.settings.apiserver.port}/"
        probes = {"host01": Probe("ks-host01", api), "worker01": Probe(plan.workers[0].netns, api)}
        time.sleep(1)
        start = time.monotonic()
        try:
            ok = apply(plan).complete
            times["first_apply"] = time.monotonic() - start
            page = f"http://{plan.settings.network.vip}:{plan.settings.node_port}/"
            rc, out = curl("ks-host01", page)
            first = rc == 0 and "Welcome to nginx" in out
        finally:
            seen = {name: p.stop() for name, p in probes.items()}
        rows.append(("apply: host01's first request gets the page", first, f"curl exit {rc}"))
        for name, probe in seen.items():
            rows.append(
                (
                    f"apply: {name} -> VIP:6443 answered throughout",
                    probe["failures"] == 0 and probe["requests"] > 0,
                    f"{probe['requests']} requests, {probe['failures']} failed, "
                    f"longest gap {probe['longest_gap_s']} s",
                )
            )
        return ok, f"{times['first_apply']:.1f} s"

    def second_apply() -> tuple[bool, str]:
        start = time.monotonic()
        applied = apply(plan)
        second = time.monotonic() - start
        ok = applied.complete and not any(r.changed for r in applied.results)
        return ok, f"{second:.1f} s ({100 * second / times['first_apply']:.0f} % of the first)"

    def do_reboot() -> tuple[bool, str]:
        rb = reboot()
        return "ssh_to_keepalived_active" in rb, ", ".join(f"{k} {v:.1f} s" for k, v in rb.items())

    def worker_reaches_api() -> tuple[bool, str]:
        api = f"http://{plan.settings.network.vip}:{plan.settings.apiserver.port}/"
        rc, out = curl(plan.workers[0].netns, api)
        code = out.strip().splitlines()[-1] if out.strip() else ""
        return rc == 0 and code.startswith("HTTP ") and code != "HTTP 000", f"curl exit {rc} {code}"

    def host_rule_first() -> tuple[bool, str]:
        rules = guest.ssh("iptables -t nat -S POSTROUTING").stdout.splitlines()
        ours = "-A POSTROUTING -j KEEPSOURCE-POSTROUTING"
        seed = f"-A {image.SEED_RULE}"
        ok = seed in rules and ours in rules and rules.index(seed) < rules.index(ours)
        return ok, f"{seed!r} before {ours!r}" if ok else " | ".join(rules)

    times: dict[str, float] = {}
    try:
        if phase("up: guest and namespaces", lambda: (True, f"{sum(up(plan).values()):.1f} s")):
            rows.extend(fault(plan))
            if phase("apply: every command succeeded", first_apply):
                phase("apply again: every script a no-op", second_apply)
                phase("verify after apply", lambda: (verify() == 0, ""))
                if phase("reboot: back, keepalived active", do_reboot):
                    phase("verify after reboot", lambda: (verify() == 0, ""))
                    phase("after reboot: worker01 -> VIP:6443 answers", worker_reaches_api)
                    phase("after reboot: the host's NAT rule decides first", host_rule_first)
    finally:
        down()
    print()
    print(f"{'check':<48} {'result':<6} detail")
    for name, ok, detail in rows:
        print(f"{name:<48} {'PASS' if ok else 'FAIL':<6} {detail}")
    failed = sum(not ok for _, ok, _ in rows)
    print(f"demo: {len(rows) - failed} passed, {failed} failed in {time.monotonic() - t0:.0f} s")
    # up, 3 fault rows, 3 rows during the first apply, apply, apply again,
    # verify, reboot, verify, 2 rows after the reboot: all must have run
    return 0 if failed == 0 and len(rows) == DEMO_ROWS else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab/lab", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser(
        "up", help="build the guest if needed, boot it, start the namespaces (fault state)"
    )
    a = sub.add_parser("apply", help="run keepsource's remote commands (driver) on the guest")
    a.add_argument("--cut", help="STEP:SECONDS: drop the SSH connection of STEP after SECONDS")
    a.add_argument(
        "--replace",
        action="append",
        metavar="URN",
        help="run only this command (URN or name, as verify prints them); repeatable",
    )
    p = sub.add_parser("pod", help="move the pod to WORKER")
    p.add_argument("worker")
    sub.add_parser("reboot", help="reboot the guest and wait for SSH (and keepalived)")
    s = sub.add_parser("ssh", help="run a command on the guest")
    s.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("verify", help="python -m keepsource verify local")
    sub.add_parser("fault", help="show the seed's fault (before apply)")
    sub.add_parser("down", help="remove everything the lab made")
    sub.add_parser("demo", help="up, fault, apply, verify, reboot, verify, down")
    args = parser.parse_args(argv)
    if args.cmd == "demo":
        return demo()
    if args.cmd == "down":
        down()
        return 0
    if args.cmd == "ssh":
        done = guest.ssh(" ".join(args.command) or "true", timeout=600)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        return done.returncode
    if args.cmd == "verify":
        return verify()
    plan = make_plan()
    if args.cmd == "up":
        up(plan)
    elif args.cmd == "apply":
        cut = None
        if args.cut:
            name, _, secs = args.cut.rpartition(":")
            cut = (name, float(secs))
        return 0 if apply(plan, cut, replace=args.replace).complete else 1
    elif args.cmd == "pod":
        state = State.load()
        if args.worker not in [w.name for w in plan.workers]:
            raise SystemExit(f"lab: no worker {args.worker!r}")
        state.pod = args.worker
        set_pod(plan, state)
        log(f"the pod is on {state.pod}")
    elif args.cmd == "reboot":
        for k, v in reboot().items():
            log(f"{k}: {v:.1f} s")
    elif args.cmd == "fault":
        rows = fault(plan)
        for name, ok, detail in rows:
            print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
        return 0 if all(ok for _, ok, _ in rows) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
