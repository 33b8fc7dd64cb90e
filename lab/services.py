"""Many services behind one LB, in the lab (issue 18): the ``local-services``
stack (web on TCP 30080 for host01, DNS on UDP 30053 for host02, the
apiserver) applied by the real engine to the same guest and control plane.

``lab/lab up --services`` starts the lab on that stack; :func:`switch` moves a
running single lab there on the same boot (the guest back at its fault
snapshot, the single stack's objects deleted with kubectl, the DNS stand-ins
started): tests share the boot. Each service runs two replicas, one per
worker (:func:`spread`), so each pool holds both workers and a pod removed
from one worker drains that service's pool only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from keepsource import facts
from keepsource.host import lb_host
from keepsource.render import kube as render
from keepsource.settings import Settings
from keepsource.settings.services import Exposed
from keepsource.verify import runner_for
from lab import dns, engine, full, guest, hosts, kube, layout, paths, run
from lab.log import log
from lab.run import Lab, State


def pods(s: Settings, ex: Exposed) -> list[tuple[str, str, bool]]:
    """(pod name, node, Ready) of a service's pods, those being deleted left out."""
    return [(name, node, ready) for name, node, ready, gone in full.pods(s, ex) if not gone]


def _move_one(
    s: Settings,
    ex: Exposed,
    node: str,
    want: set[str],
    timeout: float,
    meanwhile: Callable[[float], None] | None = None,
) -> None:
    """Delete one of ``ex``'s pods on ``node`` with ``node`` cordoned, until the
    Ready pods' nodes are ``want`` (bounded). ``meanwhile`` runs right after
    the delete, given the moment it was sent (the drain's clock)."""
    name = next(p for p, n, _ in pods(s, ex) if n == node)
    kube.kubectl("cordon", node)
    try:
        sent = time.monotonic()
        kube.kubectl("delete", "pod", "-n", render.namespace_of(ex), name, "--wait=false")
        if meanwhile is not None:
            meanwhile(sent)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if {n for _, n, r in pods(s, ex) if r} == want:
                return
            time.sleep(0.5)
        raise SystemExit(f"lab: {ex.name}'s pods are not on {sorted(want)} after {timeout:.0f} s")
    finally:
        kube.kubectl("uncordon", node)


def spread(s: Settings, timeout: float = 90) -> float:
    """One Ready pod of every service on each worker (the scheduler may put
    both replicas on one node): seconds it took."""
    start = time.monotonic()
    workers = {w.name for w in s.workers}
    for ex in render.managed(s):
        for _ in range(len(workers)):
            on = [n for _, n, r in pods(s, ex) if r]
            if set(on) == workers:
                break
            crowded = max(set(on), key=on.count) if on else sorted(workers)[0]
            _move_one(s, ex, crowded, workers, timeout)
    return time.monotonic() - start


def drain(
    s: Settings,
    ex: Exposed,
    worker: str,
    timeout: float = 90,
    meanwhile: Callable[[float], None] | None = None,
) -> float:
    """Remove ``ex``'s pod from ``worker`` the way an operator does (cordon,
    delete; the ReplicaSet's new pod goes to another worker), then uncordon:
    seconds until its Ready pods are all elsewhere."""
    start = time.monotonic()
    others = {w.name for w in s.workers if w.name != worker}
    _move_one(s, ex, worker, others, timeout, meanwhile)
    return time.monotonic() - start


def switch(single: Lab) -> Lab:
    """The running single lab on the services stack, on the same boot: the
    follower stopped, the guest back at its fault snapshot (HAProxy serves),
    the single stack's objects deleted, the DNS stand-ins started, the seed's
    objects of every service made with kubectl, one pod per worker, the
    follower on the new stack."""
    the_lab = run.make_lab(layout.SERVICES)
    with full.follower_paused(the_lab):  # started again on the services stack (the state's layout)
        restored = guest.restore_state(single.guests[0])
        full.delete_objects(single.settings)
        state = State.load()
        ports = [
            (f.protocol, f.pod_port) for f in run._filters(the_lab, "seed") if f.protocol == "udp"
        ]
        state.pids += hosts.start_pods(the_lab.workers, ports)
        state.layout = the_lab.layout
        state.save()
        hosts.wait_listening(
            [(w, port) for w in the_lab.workers for _, port in ports], protocol="udp"
        )
        full.make_fault(the_lab.settings)
        spread_s = spread(the_lab.settings)
    full.fresh_stack(the_lab, check=False)  # the stack again, from the checkout's file
    log(
        f"switched to {the_lab.stack}: guest restored in {restored:.1f} s, "
        f"pods spread in {spread_s:.1f} s"
    )
    return the_lab


def pool_members(the_lab: Lab) -> dict[str, set[str]]:
    """Each service port's IPVS real servers (their addresses) on the guest, by pool name."""
    fact = facts.IPVS_TABLE
    done = guest.ssh(fact.command, lb=the_lab.guests[0])
    if done.returncode != 0:
        raise SystemExit(
            f"lab: {fact.command} on the guest: exit {done.returncode}: {done.stderr[-300:]}"
        )
    table = fact.parse(done.stdout)
    return {
        vs.name: {r.address.rsplit(":", 1)[0] for r in table.get(facts.fwmark_key(vs.fwmark), [])}
        for vs in lb_host(the_lab.settings).pools
    }


def wait_pools(
    the_lab: Lab, want: dict[str, set[str]], timeout: float = 20
) -> tuple[float, dict[str, set[str]]]:
    """Seconds until the pools named in ``want`` hold exactly those real servers."""
    start = time.monotonic()
    got = pool_members(the_lab)
    while time.monotonic() - start < timeout:
        got = pool_members(the_lab)
        if all(got.get(k) == v for k, v in want.items()):
            return time.monotonic() - start, got
        time.sleep(0.2)
    raise SystemExit(f"lab: pools {got} not {want} within {timeout:.0f} s")


def _query(ns: str, vip: str, port: int) -> str | None:
    import subprocess
    import sys

    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "lab.dns", "query", vip, str(port),
         "web.my-ns.svc.cluster.local"],
        capture_output=True, text=True, timeout=30, check=False, cwd=str(paths.PROJECT),
    )  # fmt: skip
    return done.stdout.strip() if done.returncode == 0 else None


def clients(the_lab: Lab) -> dict[str, dict[str, Any]]:
    """What each client gets from each workload service on the VIP: the page
    (curl exit status) or a DNS answer (None: no answer within 2 s)."""
    vip = str(the_lab.settings.network.vip)
    got: dict[str, dict[str, Any]] = {}
    for c in the_lab.clients:
        seen: dict[str, Any] = {}
        for ex in render.managed(the_lab.settings):
            for port in ex.ports:
                if port.protocol == "UDP":
                    seen[ex.name] = _query(c.netns, vip, port.port)
                else:
                    rc, out = run.curl(c.netns, f"http://{vip}:{port.port}/")
                    seen[ex.name] = rc if rc != 0 or "Welcome to nginx" in out else -1
        got[c.name] = seen
    return got


#: Rows of :func:`scenario`.
SCENARIO_ROWS = 8
#: The lab's Prometheus stand-in: the master's namespace (the stack's metrics.scrapers).
METRICS_SCRAPER = "ks-master"
#: node_exporter's IPVS collector: one weight per real server of each virtual service.
_BACKEND = re.compile(r"^node_ipvs_backend_weight\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def scrape(the_lab: Lab, ns: str) -> tuple[int, str]:
    """The LB's node exporter from a lab namespace (curl -m 2): exit status and body."""
    m = the_lab.settings.metrics
    if m is None:
        raise SystemExit(f"lab: stack {the_lab.stack} has no keepsource:metrics")
    url = f"http://{the_lab.settings.lb_nodes[0].internal_address}:{m.port}/metrics"
    return runner_for("netns", ns)(f"curl -s -m 2 {url}")


def metric_pools(the_lab: Lab, text: str) -> dict[str, set[str]]:
    """Each pool's real servers (addresses) as the node exporter's IPVS metrics show them."""
    by_mark: dict[int, set[str]] = {}
    for line in text.splitlines():
        m = _BACKEND.match(line)
        if m:
            labels = dict(_LABEL.findall(m.group("labels")))
            mark = labels.get("local_mark", "")
            if mark:  # decimal as node_exporter prints it; hex as /proc/net/ip_vs does
                value = int(mark) if mark.isdigit() else int(mark, 16)
                by_mark.setdefault(value, set()).add(labels["remote_address"])
    return {vs.name: by_mark.get(vs.fwmark, set()) for vs in lb_host(the_lab.settings).pools}


def _holds(got: dict[str, set[str]], want: dict[str, set[str]]) -> bool:
    return all(got.get(k) == v for k, v in want.items())


def scenario(the_lab: Lab, table: run.Table) -> dict[str, Any]:
    """The services stack from the fault to the fix by the real engine, as rows."""
    s = the_lab.settings
    p = run.engine_cli(the_lab)
    seen: dict[str, Any] = {}
    web, dns_ = (next(e for e in s.exposed if e.name == n) for n in ("web", "dns"))
    workers = {str(w.address) for w in s.workers}

    def first_up() -> tuple[bool, str]:
        start = time.monotonic()
        done = run.apply(the_lab)
        seen["up_s"] = time.monotonic() - start
        full.sync_workers(the_lab)
        return done.ok and not done.failed(), f"{seen['up_s']:.1f} s, failed: {list(done.failed())}"

    def each_client() -> tuple[bool, str]:
        got = clients(the_lab)
        seen["clients"] = got
        ok = (
            got["host01"]["web"] == 0 and got["host01"]["dns"] is None
            and got["host02"]["web"] == full.CURL_TIMED_OUT and got["host02"]["dns"] == dns.ANSWER
        )  # fmt: skip
        return ok, "; ".join(
            f"{c}: web curl exit {v['web']}, dns {v['dns'] or 'no answer'}" for c, v in got.items()
        )

    def pools_full() -> tuple[bool, str]:
        t, got = wait_pools(the_lab, {vs: workers for vs in _pool_names(the_lab, web, dns_)})
        return True, f"{t:.1f} s: " + ", ".join(f"{k} {sorted(v)}" for k, v in got.items())

    def verify() -> tuple[bool, str]:
        rc, out = run.verify_output(the_lab, p.env(), engine.SHADOW)
        seen["verify"] = out
        last = [ln for ln in out.splitlines() if ln.startswith("verify ")]
        failed = [ln for ln in out.splitlines() if ln.startswith("FAIL")]
        return rc == 0, "; ".join([last[-1] if last else out[-300:], *failed])

    def again() -> tuple[bool, str]:
        spread(s)
        full.sync_workers(the_lab)
        start = time.monotonic()
        done = run.apply(the_lab, "--expect-no-changes")
        took = time.monotonic() - start
        if not done.ok or "lb-metrics" not in done.steps:
            return False, f"{took:.1f} s, exit ok {done.ok}, steps {sorted(done.steps)}"
        # The metrics step run once more (replaced): its script changes nothing.
        metrics_step = done.steps["lb-metrics"]
        again = run.apply(the_lab, f"--replace={metrics_step.urn}")
        said = again.steps["lb-metrics"].report if "lb-metrics" in again.steps else "none"
        ok = again.ok and said.endswith(": unchanged")
        return ok, f"{took:.1f} s; the metrics step replaced: {said}"

    def api() -> tuple[bool, str]:
        url = f"https://{s.network.vip}:{s.apiserver.port}/readyz"
        probe = run.Probe("ks-host01", url, env=full.api_probe_env())
        time.sleep(2)
        r = probe.stop()
        ok = r["requests"] > 0 and r["failures"] == 0
        return ok, f"{r['requests']} requests, {r['failures']} failed"

    table.phase("services: pulumi up of web (TCP), dns (UDP) and the apiserver", first_up)
    table.phase("services: host01 gets the page and no DNS answer, host02 the reverse", each_client)
    table.phase("services: every workload pool holds both workers", pools_full)
    table.phase("services: the apiserver answers through VIP:6443", api)
    table.phase("services: verify checks each service (pools and clients)", verify)
    table.phase(
        "services: the LB's node exporter shows the pools, for the scrapers only",
        lambda: metrics_view(the_lab),
    )
    table.phase(
        "services: worker01's dns pod removed drains only the dns pool",
        lambda: drain_one(the_lab, dns_, web, seen),
    )
    table.phase(
        "services: pulumi up again --expect-no-changes; the metrics step again: unchanged", again
    )
    return seen


def metrics_view(the_lab: Lab) -> tuple[bool, str]:
    """The exporter's pools are ipvsadm's, scraped from the scraper; a host on
    the LB's internal link that is no scraper is dropped (a timeout)."""
    rc, text = scrape(the_lab, METRICS_SCRAPER)
    by_metrics = metric_pools(the_lab, text)
    by_ipvsadm = pool_members(the_lab)
    other = the_lab.workers[0]
    denied, _ = scrape(the_lab, other.netns)
    ok = rc == 0 and by_metrics == by_ipvsadm and denied == full.CURL_TIMED_OUT
    return ok, (
        f"scraped from {METRICS_SCRAPER}: curl exit {rc}, pools as ipvsadm has them: "
        f"{by_metrics == by_ipvsadm}; from {other.name} (no scraper): curl exit {denied}"
    )


def drain_one(
    the_lab: Lab, drained: Exposed, kept: Exposed, seen: dict[str, Any]
) -> tuple[bool, str]:
    """``drained``'s pod removed from the first worker: seconds until ipvsadm
    and the exporter show its pool without that worker while ``kept``'s pool
    keeps every worker (sampled every 0.2 s, 30 s at most)."""
    s = the_lab.settings
    w1 = s.workers[0]
    workers = {str(w.address) for w in s.workers}
    others = workers - {str(w1.address)}
    want = {_pool_names(the_lab, drained)[0]: others, _pool_names(the_lab, kept)[0]: workers}
    seen_at: dict[str, float] = {}
    sent: list[float] = []

    def watch(at: float) -> None:
        """From the delete on: ipvsadm and the exporter, every 0.2 s, 30 s at most."""
        sent.append(at)
        for _ in range(150):
            now = time.monotonic()
            if "ipvsadm" not in seen_at and _holds(pool_members(the_lab), want):
                seen_at["ipvsadm"] = now
            scraped = metric_pools(the_lab, scrape(the_lab, METRICS_SCRAPER)[1])
            if "metrics" not in seen_at and _holds(scraped, want):
                seen_at["metrics"] = now
            if len(seen_at) == 2:
                return
            time.sleep(0.2)

    moved = drain(s, drained, w1.name, meanwhile=watch)
    start = sent[0]
    seen["drain"] = {k: v - start for k, v in seen_at.items()}
    said = ", ".join(f"{k} {v - start:.1f} s after the delete" for k, v in seen_at.items())
    name = drained.name
    return len(seen_at) == 2, (
        f"{name} pod off {w1.name} in {moved:.1f} s; {name} pool {sorted(others)} seen by {said}"
    )


def _pool_names(the_lab: Lab, *services: Exposed) -> list[str]:
    return [ex.pool_name(port) for ex in services for port in ex.ports]
