"""The full lab: a real Kubernetes API at the master's place, applied by the real engine.

``lab/lab up`` (the single layout; the pair when its stack manages the Workload)
starts the control plane (lab/kube.py) in the master's
namespace instead of the master's HTTP stand-in and makes the seed's objects
with kubectl, as the seed's operators did (so ``pulumi up`` adopts objects
another field manager owns). The workers' stand-ins then follow what the API
holds: the Service's nodePort and externalTrafficPolicy, the NetworkPolicy,
and which node has a Ready pod (kwok runs the pods; nothing serves in them).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.cli import PREVIEW, Pulumi, resources
from keepsource.render import kube as render
from keepsource.settings import Settings
from keepsource.settings.services import Exposed
from lab import engine, hosts, kube, paths
from lab.layout import SERVICES
from lab.log import log
from lab.run import VENV, Lab, State, engine_cli

CURL_TIMED_OUT = 28


def master(the_lab: Lab) -> kube.Master:
    s = the_lab.settings
    return kube.Master(
        netns=the_lab.master.netns,
        address=str(s.apiserver.address),
        port=s.apiserver.port,
        workers=tuple((w.name, str(w.address)) for w in s.workers),
        extra_sans=(str(s.network.vip),),
    )


def _services(s: Settings) -> list[Exposed]:
    """The services whose objects keepsource declares (one for a stack written
    the seed's way): the workloads the lab's control plane runs."""
    return render.managed(s)


def _one(s: Settings, ex: Exposed | None) -> Exposed:
    """``ex``, or the stack's first managed service (the seed's one workload)."""
    return ex if ex is not None else _services(s)[0]


def seed_objects(s: Settings) -> list[dict[str, Any]]:
    """The seed's objects, for each service: the Service with
    ``externalTrafficPolicy: Cluster`` and a NetworkPolicy that admits the
    allowed clients only (with the namespaces first)."""
    objs = [render.namespace(ns) for ns in render.namespaces(s)]
    for ex in _services(s):
        service = render.service(ex)
        service["spec"]["externalTrafficPolicy"] = "Cluster"
        objs += [render.deployment(ex), service, render.network_policy(ex, [])]
    for o in objs:  # the seed's operators knew nothing of Pulumi
        o["metadata"].pop("annotations", None)
    return objs


def make_fault(s: Settings) -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": seed_objects(s)}
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(doc))
    for ex in _services(s):
        wait_ready(s, 120, ex)
    spaces = ", ".join(render.namespaces(s))
    log(f"fault: the seed's objects in {spaces}, made with kubectl")


def api_objects(s: Settings, ex: Exposed | None = None) -> dict[str, dict[str, Any]]:
    """A service's Service, NetworkPolicy and Deployment as the API holds them."""
    ex = _one(s, ex)
    ns = render.namespace_of(ex)
    out = kube.kubectl("get", "-n", ns, "service,networkpolicy,deployment", ex.name, "-o", "json")
    items = json.loads(out)["items"]
    return {i["kind"]: i for i in items}


def _selector(ex: Exposed) -> str:
    """The service's pods as a kubectl label selector."""
    return ",".join(f"{k}={v}" for k, v in render.labels(ex).items())


def pods(s: Settings, ex: Exposed | None = None) -> list[tuple[str, str, bool, bool]]:
    """(pod name, node, Ready, terminating) of a service's pods (default: the
    seed's workload), as the API lists them."""
    ex = _one(s, ex)
    ns = render.namespace_of(ex)
    out = kube.kubectl("get", "pods", "-n", ns, "-l", _selector(ex), "-o", "json")
    return [_pod_row(pod) for pod in json.loads(out)["items"]]


def _pod_row(pod: dict[str, Any]) -> tuple[str, str, bool, bool]:
    conds = pod.get("status", {}).get("conditions", [])
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
    node = pod.get("spec", {}).get("nodeName") or ""
    terminating = bool(pod["metadata"].get("deletionTimestamp"))
    return pod["metadata"]["name"], node, ready, terminating


def ready_pod_nodes(s: Settings, ex: Exposed | None = None) -> list[str]:
    return [node for _, node, ready, _ in pods(s, ex) if ready and node]


def wait_ready(s: Settings, timeout: float, ex: Exposed | None = None) -> list[str]:
    for _ in range(int(timeout / 0.5) + 1):
        nodes = ready_pod_nodes(s, ex)
        if nodes:
            return nodes
        time.sleep(0.5)
    raise SystemExit(f"lab: no Ready pod of {_one(s, ex).name} within {timeout:.0f} s")


View = tuple[tuple[hosts.PodFilter, tuple[str, ...]], ...]


def views(s: Settings) -> View:
    """What the API says the workers must do, per Service port of every
    service: the filter and the nodes with a Ready pod of that service."""
    nodes = tuple(str(w.address) for w in s.workers)
    # One kubectl for every service (the follower looks twice a second).
    items = json.loads(kube.kubectl("get", "services,networkpolicies,pods", "-A", "-o", "json"))
    out: list[tuple[hosts.PodFilter, tuple[str, ...]]] = []
    for ex in _services(s):
        ns, want = render.namespace_of(ex), render.labels(ex).items()
        mine = [i for i in items["items"] if i["metadata"].get("namespace") == ns]
        objs = {i["kind"]: i for i in mine if i["metadata"]["name"] == ex.name}
        pods_ = [
            _pod_row(i)
            for i in mine
            if i["kind"] == "Pod" and want <= i["metadata"].get("labels", {}).items()
        ]
        on = tuple(node for _, node, ready, _ in pods_ if ready and node)
        out += [(f, on) for f in hosts.api_filters(objs["Service"], objs["NetworkPolicy"], nodes)]
    return tuple(out)


def view(s: Settings) -> tuple[hosts.PodFilter, tuple[str, ...]]:
    """The first service's first port (the seed's one workload): its filter and
    the nodes with a Ready pod."""
    return views(s)[0]


def set_views(the_lab: Lab, now: View) -> None:
    hosts.set_workers(the_lab.workers, {}, views=[(f, {n: "pod" for n in on}) for f, on in now])


def sync_workers(the_lab: Lab) -> View:
    """Set the workers' stand-ins from the API once (the follower does it
    continuously): the pods where Ready pods are, the Services' ports and
    traffic policy, the NetworkPolicies' ipBlocks."""
    now = views(the_lab.settings)
    set_views(the_lab, now)
    return now


def place_pod(s: Settings, worker: str, timeout: float = 90, ex: Exposed | None = None) -> float:
    """Move a service's pod (default: the seed's workload) to ``worker`` the
    way an operator does: cordon the other workers, delete the pod (its
    ReplicaSet makes a new one, the scheduler puts it on the one schedulable
    worker, kwok makes it Ready), then uncordon them. Seconds until the one
    Ready pod is there."""
    ex = _one(s, ex)
    others = [w.name for w in s.workers if w.name != worker]
    start = time.monotonic()
    if ready_pod_nodes(s, ex) == [worker]:
        _record_pod(worker)
        return 0.0
    kube.kubectl("uncordon", worker)
    for name in others:
        kube.kubectl("cordon", name)
    try:
        ns = render.namespace_of(ex)
        kube.kubectl("delete", "pods", "-n", ns, "-l", _selector(ex), "--wait=false")
        for _ in range(int(timeout / 0.5) + 1):
            if ready_pod_nodes(s, ex) == [worker] or time.monotonic() - start > timeout:
                break
            time.sleep(0.5)
    finally:
        for name in others:
            kube.kubectl("uncordon", name)
    on = ready_pod_nodes(s, ex)
    if on != [worker]:
        raise SystemExit(f"lab: the pod did not move to {worker} within {timeout:.0f} s (on {on})")
    _record_pod(worker)
    return time.monotonic() - start


def _record_pod(worker: str) -> None:
    """The run state's ``pod`` (whose access log is the pod's) follows the API."""
    if paths.STATE_FILE.exists():
        state = State.load()
        state.pod = worker
        state.save()


def back_to_fault(the_lab: Lab) -> dict[str, float]:
    """The seed's fault once more on a running full lab, without a new control
    plane: the LB guest as it was after its first boot (its internal snapshot
    from then, when one was taken: lab/guest.py save_state; else powered off
    and booted on a fresh disk of the image; HAProxy serves, no keepalived),
    the seed's objects deleted and made again with kubectl (pulumi's field
    ownership gone), the pod on the first worker, and the stack removed from
    the lab's backend (made again from the checkout's stack file)."""
    from lab import guest

    s = the_lab.settings
    g = the_lab.guests[0]
    t: dict[str, float] = {}
    if guest.has_state(g):  # the snapshot of its first boot (tests/test_lab.py takes it)
        t["restored_to_ssh"] = guest.restore_state(g)
    else:
        guest.close_shared_connection(g)
        guest.stop(g, hard=True)
        t["boot_to_ssh"] = guest.boot(g, fresh=True)
    delete_objects(s)
    make_fault(s)
    t["pod_placed"] = place_pod(s, s.workers[0].name)
    fresh_stack(the_lab)
    sync_workers(the_lab)
    log("back to the fault: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()))
    return t


FOLLOW_STOP = paths.RUN / "follow.stop"
FOLLOW_PID = paths.RUN / "follow.pid"
FOLLOW_LOG = paths.RUN / "follow.log"
#: The follower's bounds: one look every half second, for at most this long.
FOLLOW_INTERVAL = 0.5
FOLLOW_LIMIT = 6 * 3600


def follow(the_lab: Lab) -> int:
    """Keep the stand-ins on what the API holds, as kube-proxy and a CNI do:
    look at once when a pod changes (a watch on the API) and at least every
    FOLLOW_INTERVAL, re-apply when the view changed. Ends when FOLLOW_STOP
    exists or after FOLLOW_LIMIT seconds."""
    last: View | None = None
    start = time.monotonic()
    changes = 0
    watch = kube.watch_pods()
    try:
        for _ in range(int(FOLLOW_LIMIT / 0.05)):
            if FOLLOW_STOP.exists() or time.monotonic() - start > FOLLOW_LIMIT:
                break
            now = _look(the_lab, last)
            if now is not None and now != last:
                set_views(the_lab, now)
                changes += 1
                for f, on in now:
                    log(
                        f"follow: {f.protocol} {f.node_port}->{f.pod_port}: pods on {list(on)}, "
                        f"admitted {list(f.admitted)}"
                    )
                last = now
            _until_event(watch, FOLLOW_INTERVAL)
    finally:
        watch.kill()
        watch.wait(timeout=10)
    return changes


def _look(the_lab: Lab, last: View | None) -> View | None:
    try:
        return views(the_lab.settings)
    except (SystemExit, KeyError, ValueError, subprocess.SubprocessError) as e:
        log(f"follow: the API did not answer ({str(e)[:200]})")
        return last


def _until_event(watch: subprocess.Popen[str], limit: float) -> None:
    """Wait up to ``limit`` s for the pod watch to print (then read what it
    printed); a watch that ended (the API restarted) leaves the plain wait."""
    out = watch.stdout
    if out is None or watch.poll() is not None:
        time.sleep(limit)
        return
    ready, _, _ = select.select([out], [], [], limit)
    if ready:
        os.read(out.fileno(), 65536)  # the event lines: only their arrival matters


def start_follower() -> int:
    FOLLOW_STOP.unlink(missing_ok=True)
    with open(FOLLOW_LOG, "a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lab.full", "follow"],
            cwd=paths.PROJECT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    FOLLOW_PID.write_text(str(proc.pid))
    return proc.pid


def stop_follower() -> bool:
    if not FOLLOW_PID.exists():
        return False
    FOLLOW_STOP.touch()
    pid = int(FOLLOW_PID.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    FOLLOW_PID.unlink(missing_ok=True)
    return True


def delete_objects(s: Settings) -> None:
    """Every managed service's Deployment, Service and NetworkPolicy deleted
    with kubectl (waited for: their nodePorts are free after it)."""
    for ex in _services(s):
        kube.kubectl(
            "delete", "-n", render.namespace_of(ex), "deployment,service,networkpolicy", ex.name,
            "--ignore-not-found", "--wait=true", timeout=120,
        )  # fmt: skip


def fresh_stack(the_lab: Lab, stack_file: str | None = None, check: bool = True) -> None:
    """The lab's stack removed from its backend and made again, with the
    lab's key as its secret. `stack rm` removes its stack file too: the shadow
    takes the checkout's again, or ``stack_file`` (a generated one's text).
    ``check``: fail when there was no stack to remove."""
    p = engine_cli(the_lab)
    p.run("stack", "rm", "--yes", "--force", stack=the_lab.stack, check=check)
    if stack_file is not None:
        (engine.SHADOW / f"Pulumi.{the_lab.stack}.yaml").write_text(stack_file)
    engine_cli(the_lab)


@contextlib.contextmanager
def follower_paused(the_lab: Lab) -> Iterator[None]:
    """The follower stopped for the block (the workers' stand-ins may be set
    by hand), started again after it; the workers back on the API's view."""
    stop_follower()
    try:
        yield
    finally:
        state = State.load()
        state.pids.append(start_follower())
        state.save()
        sync_workers(the_lab)


def start(the_lab: Lab) -> dict[str, float]:
    """The control plane, the seed's objects, and the follower that keeps the
    workers' stand-ins on what the API holds."""
    times = kube.start(master(the_lab))
    make_fault(the_lab.settings)
    # The pod where the stand-ins' state says it is (the first worker), as
    # the seed had it: the scheduler alone may pick either.
    if the_lab.layout == SERVICES:  # one pod of each service on each worker
        from lab import services

        times["pods_spread"] = services.spread(the_lab.settings)
    else:
        times["pod_placed"] = place_pod(the_lab.settings, the_lab.settings.workers[0].name)
    sync_workers(the_lab)
    state = State.load()
    state.phase = "api"
    state.pids.append(start_follower())  # down stops it with the other servers
    state.save()
    return times


def up(the_lab: Lab) -> dict[str, float]:
    """The lab for ``the_lab`` (lab/run.py ``up``: namespaces, stand-ins, guests),
    with the control plane at the master's place and the seed's objects made by
    kubectl (:func:`start`) when its stack manages the Workload."""
    from lab import run

    kube_ = the_lab.settings.manages_workload
    times = run.up(the_lab, kube=kube_)
    if kube_:
        times.update(start(the_lab))
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


def preview(p: Pulumi, stack: str) -> subprocess.CompletedProcess[str]:
    """The PR workflow's preview (engine.cli.PREVIEW), with the policy pack."""
    policy_pack()
    done: subprocess.CompletedProcess[str] = p.run(*PREVIEW, stack=stack, check=False)
    return done


# -- the scenario: the seed's fault to the fix, by the real engine ------------------

#: Rows of scenario() with the reboot: the fault (3), two previews, the first
#: up, two probes, the event order, the clients, up again, replace, refresh,
#: drift, export, the reboot, destroy.
SCENARIO_ROWS = 17


#: Paths of this machine that must never be in a stack's state.
def _local_paths() -> list[str]:
    return [str(paths.PROJECT), str(paths.STATE), "/var/cache/", "/root/"]


def haproxy_project(stack: str) -> Path:
    """A shadow project whose program is keepsource's with the seed's HAProxy
    put back (tests/programs/with_haproxy.py), for the policy pack's preview."""
    d = paths.RUN / "haproxy-project"
    program = tuple(n for n in engine.PROGRAM if n != "__main__.py")
    engine.link_project(d, (*program, "lab"), VENV)  # with_haproxy.py imports lab
    (d / "__main__.py").write_text(
        "import runpy\n\n"
        f"runpy.run_path({str(paths.PROJECT / 'tests/programs/with_haproxy.py')!r},"
        ' run_name="__main__")\n'
    )
    shutil.copyfile(engine.SHADOW / f"Pulumi.{stack}.yaml", d / f"Pulumi.{stack}.yaml")
    return d


_ENGINE_OWN = re.compile(
    r"^deployment\.(manifest\.plugins\[\d+\]\.path|resources\[\d+\]\.stackTrace\[\d+\]\.sourcePosition)$"
)


def leaks(value: Any, needles: list[str], where: str = "") -> list[str]:
    """JSON paths of the strings in ``value`` that contain one of ``needles``."""
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in leaks(v, needles, f"{where}.{k}".lstrip("."))]
    if isinstance(value, list):
        return [x for i, v in enumerate(value) for x in leaks(v, needles, f"{where}[{i}]")]
    if isinstance(value, str) and any(n in value for n in needles):
        return [where]
    return []


def wait_page(ns: str, url: str, limit: float) -> float:
    """Seconds until ``ns`` gets the page (curl -m 2 each try), at most ``limit``."""
    from lab import run

    start = time.monotonic()
    for _ in range(int(limit / 0.5) + 1):
        rc, out = run.curl(ns, url)
        if rc == 0 and "Welcome to nginx" in out:
            break
        if time.monotonic() - start > limit:
            break
        time.sleep(0.5)
    return time.monotonic() - start


def policy_pack() -> Path:
    """The pack's virtualenv (PulumiPolicy.yaml: ``venv``) is the project's: the
    CLI installs nothing for a local pack."""
    pack = paths.PROJECT / "policies"
    link = pack / "venv"
    want = VENV.resolve()
    if link.is_symlink() and link.resolve() != want:
        link.unlink()  # a link to another checkout's venv (or a dangling one)
    if not link.exists():
        link.symlink_to(want)
    return pack


def scenario(the_lab: Lab, table: Any, reboot: bool = True) -> dict[str, Any]:
    """Everything of the real engine's must-show after ``up`` (with the API): rows in
    ``table`` (lab.run.Table); returns what tests look at further."""
    return _Demo(the_lab, table).play(reboot)


class _Demo:
    """The rows of :func:`scenario`, one method each, in the order they run."""

    def __init__(self, the_lab: Lab, table: Any) -> None:
        from lab import run

        self.run = run
        self.the_lab = the_lab
        self.s = the_lab.settings
        self.stack = the_lab.stack
        self.vip = str(self.s.network.vip)
        self.page = f"http://{self.vip}:{self.s.node_port}/"
        self.seen: dict[str, Any] = {}
        self.table = table

    def play(self, reboot: bool) -> dict[str, Any]:
        phase = self.table.phase
        self.table.rows.extend(self.run.fault(self.the_lab))
        self.p = engine_cli(self.the_lab)
        phase("preview --policy-pack: HAProxy kept in front fails", self.bad_preview)
        phase("preview --policy-pack: keepsource's stack passes", self.good_preview)
        if not phase("pulumi up from the fault state", self.first_up):
            return self.seen
        self.first_up_rows()
        sync_workers(self.the_lab)
        phase("host01 gets the page, host02 times out", self.clients)
        phase("second pulumi up --expect-no-changes", self.no_changes)
        phase("every LB step replaced: each reports unchanged", self.replace_all)
        phase("pulumi refresh, then preview --expect-no-changes", self.refresh_then_preview)
        phase(
            "drift: haproxy re-enabled by hand, named, repaired by the printed command", self.drift
        )
        phase(
            "stack export: no secret in clear, no machine path in any resource's inputs or outputs",
            self.export_clean,
        )
        if reboot:
            phase(
                "after the LB reboots: host01 gets the page, host02 times out, verify passes",
                self.after_reboot,
            )
        phase(
            "pulumi destroy: adopted objects stay, state empty, the LB keeps serving",
            self.destroy,
        )
        return self.seen

    def bad_preview(self) -> tuple[bool, str]:
        d = haproxy_project(self.stack)
        bad = Pulumi(project=d, state=engine.STATE, passphrase=self.p.passphrase)
        done = preview(bad, self.stack)
        out = done.stdout + done.stderr
        self.seen["bad_preview"] = out
        ok = done.returncode != 0 and "mandatory" in out
        return ok, f"exit {done.returncode}, mandatory violation: {'mandatory' in out}"

    def good_preview(self) -> tuple[bool, str]:
        done = preview(self.p, self.stack)
        out = done.stdout + done.stderr
        self.seen["good_preview"] = out
        return done.returncode == 0, f"exit {done.returncode}"

    def first_up(self) -> tuple[bool, str]:
        api = f"https://{self.vip}:{self.s.apiserver.port}/readyz"
        env = api_probe_env()
        probes = {
            "host01": self.run.Probe("ks-host01", api, env=env),
            "worker01": self.run.Probe(self.the_lab.workers[0].netns, api, env=env),
        }
        time.sleep(1)
        try:
            done = engine.up(self.p, self.stack)
        finally:
            self.seen["probes"] = {n: pr.stop() for n, pr in probes.items()}
        self.seen["first_up"] = done
        if not done.ok:
            return False, done.output[-600:]
        return True, f"{done.seconds:.1f} s, changed: {', '.join(done.changed())}"

    def first_up_rows(self) -> None:
        """What the first up showed: the API answered throughout, the LB's
        first steps started before the Deployment was Ready."""
        rows = self.table.rows
        for name, pr in self.seen["probes"].items():
            rows.append(
                (
                    f"up: {name} -> the API through VIP:6443 answered throughout",
                    pr["failures"] == 0 and pr["requests"] > 0,
                    f"{pr['requests']} requests, {pr['failures']} failed, "
                    f"longest gap {pr['longest_gap_s']} s",
                )
            )
        up1 = self.seen["first_up"]
        dep = up1.sequence("resOutputsEvent", "::workload-deployment")
        early = {n: up1.sequence("resourcePreEvent", f"::lb-{n}") for n in ("packages", "gateway")}
        rows.append(
            (
                "up: packages and gateway start before the Deployment is Ready",
                dep is not None and all(v is not None and v < dep for v in early.values()),
                f"event sequence: packages {early['packages']}, gateway {early['gateway']},"
                f" Deployment ready {dep}",
            )
        )

    def clients(self) -> tuple[bool, str]:
        rc1, out1 = self.run.curl("ks-host01", self.page)
        rc2, _ = self.run.curl("ks-host02", self.page)
        ok = rc1 == 0 and "Welcome to nginx" in out1 and rc2 == CURL_TIMED_OUT
        return ok, f"host01 curl exit {rc1}, host02 curl exit {rc2} (28: timed out)"

    def no_changes(self) -> tuple[bool, str]:
        done = engine.up(self.p, self.stack, "--expect-no-changes")
        return done.ok, f"exit {'0' if done.ok else 'non-zero'} in {done.seconds:.1f} s"

    def replace_all(self) -> tuple[bool, str]:
        urns = [st.urn for st in self.seen["first_up"].steps.values()]
        done = engine.up(self.p, self.stack, *(f"--replace={u}" for u in urns))
        self.seen["replaced"] = done
        reports = {n: st.report for n, st in done.steps.items()}
        ok = done.ok and len(reports) == len(urns) and not done.changed()
        return ok, "; ".join(f"{n}: {r.rsplit(':', 1)[-1].strip()}" for n, r in reports.items())

    def refresh_then_preview(self) -> tuple[bool, str]:
        r = self.p.run("refresh", "--yes", stack=self.stack, check=False)
        pv = self.p.run("preview", "--expect-no-changes", stack=self.stack, check=False)
        return (
            r.returncode == 0 and pv.returncode == 0,
            f"refresh exit {r.returncode}, preview --expect-no-changes exit {pv.returncode}",
        )

    def drift(self) -> tuple[bool, str]:
        import shlex

        from lab import guest

        run, p, stack = self.run, self.p, self.stack
        guest.ssh(
            "systemctl unmask haproxy && systemctl enable --now haproxy", lb=self.the_lab.guests[0]
        )
        v1 = run.verify_output(self.the_lab, p.env(), engine.SHADOW)
        line = next(
            (ln.strip() for ln in v1[1].splitlines() if ln.strip().startswith("pulumi up ")), ""
        )
        via_cli = f"config: `pulumi config --stack {stack}`" in v1[1]
        if v1[0] == 0 or not line or "haproxy" not in v1[1].lower() or not via_cli:
            return False, f"verify exit {v1[0]}, repair line {line!r}, config via the CLI {via_cli}"
        argv = shlex.split(line)[1:]
        replaced = [argv[i + 1] for i, w in enumerate(argv) if w == "--replace"]
        fix = p.run(*argv, check=False)
        v2 = run.verify_output(self.the_lab, p.env(), engine.SHADOW)
        cutover = engine.steps_of(p.export(stack)).get("lb-cutover")
        said = cutover.stdout if cutover else ""
        masked = "haproxy: disabled and masked (was enabled) stopped (was active)" in said
        only = [u.rsplit("::", 1)[-1] for u in replaced] == ["lb-cutover"]
        return (
            fix.returncode == 0 and v2[0] == 0 and masked and only,
            f"verify (config via `pulumi config`) named it ({line}); repair exit"
            f" {fix.returncode}, the cut-over said"
            f" haproxy was re-masked: {masked}; verify exit {v2[0]}",
        )

    def export_clean(self) -> tuple[bool, str]:
        state = self.p.export(self.stack)
        key = paths.KEY.read_text().strip().splitlines()[1]
        secret = leaks(state, [key])
        found = leaks(state, _local_paths())
        # Pulumi's own records: the SDK sends the Python stack of every resource
        # registration (pulumi 3.272.0 runtime/resource.py:741-778, no opt-out),
        # the engine stores it relative to the project root (pkg/resource/deploy/
        # source_eval.go:2166-2206, v3.274.1), so frames outside the project
        # (the interpreter's stdlib, the language host's exec script) climb out
        # with "../" and name this machine's folders; and the checkpoint's
        # manifest may list plugin paths.
        engine_own = [w for w in found if _ENGINE_OWN.search(w)]
        ours = [w for w in found if w not in engine_own]
        self.seen["export_leaks"] = found
        return not secret and not ours, (
            f"{len(json.dumps(state))} bytes; the SSH key in clear: {bool(secret)}; machine"
            f" paths in resources' inputs or outputs: {ours or 'none'}; in Pulumi's own stack"
            f" traces and plugin manifest: {len(engine_own)}"
        )

    def after_reboot(self) -> tuple[bool, str]:
        run, vip = self.run, self.vip
        t = run.reboot()
        sync_workers(self.the_lab)
        # keepalived is active; its pools start empty (alpha) until a
        # check passes: wait for host01's page, bounded.
        waited = wait_page("ks-host01", self.page, 30)
        ok, detail = self.clients()
        # As test_lab's reboot test had it: verify passes, a worker reaches
        # the API through VIP:6443 (hairpin), the host's NAT rule first.
        v, _ = run.verify_output(self.the_lab, self.p.env(), engine.SHADOW)
        api_ok, api = run.answers(
            self.the_lab.workers[0].netns, f"http://{vip}:{self.s.apiserver.port}/"
        )
        first, _ = run.host_rule_first()
        ok = ok and v == 0 and api_ok and first
        detail += f"; verify exit {v}; worker01 -> VIP:6443 {api}; host rule first: {first}"
        return ok, (
            f"reboot to SSH {t.get('reboot_to_ssh', 0):.0f} s, keepalived active after"
            f" {t.get('ssh_to_keepalived_active', 0):.1f} s, page after {waited:.1f} s;"
            f" {detail}"
        )

    def destroy(self) -> tuple[bool, str]:
        d = self.p.run("destroy", "--yes", "--skip-preview", stack=self.stack, check=False)
        left = api_objects(self.s)
        state = [
            r
            for r in resources(self.p.export(self.stack))
            if r.get("type") != "pulumi:pulumi:Stack"
        ]
        ok_lb, why = self.run.answers("ks-host01", self.page)
        ok = d.returncode == 0 and len(left) == 3 and not state and ok_lb
        return ok, (
            f"destroy exit {d.returncode}; still in the API: {sorted(left)}; "
            f"state holds {len(state)} resources; host01 after destroy: {why}"
        )


if __name__ == "__main__":
    if sys.argv[1:] == ["follow"]:
        from lab.run import current_lab

        sys.exit(0 if follow(current_lab()) >= 0 else 1)
    raise SystemExit("usage: python -m lab.full follow")
