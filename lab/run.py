"""A lab run as a library: its hosts (``Lab``), its recorded state, and what can be done
to it (up, apply, verify, pod, reboot, kill/start a guest, down).

The CLI (``lab/lab``, lab/__main__.py), ``lab.measure`` and the tests import
this module. Two layouts (lab/layout.py): ``single`` (one guest ``lb``, stack
``local``) and ``pair`` (guests ``lb1`` and ``lb2``, stack ``local-ha``). ``up``
records the layout in the run state; every later command reads it from there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mockrun
from engine.cli import Pulumi
from keepsource import facts
from keepsource.artifacts import artifacts
from keepsource.settings import ConfigError, Settings
from keepsource.stackfile import PROJECT_ROOT, load
from keepsource.verify import curl_command, runner_for
from lab import engine, guest, hosts, image, kube, layout, net, paths
from lab.layout import PAIR, SINGLE, Guest
from lab.log import log

STACK = layout.LAYOUT_STACKS[SINGLE]


# -- the lab, from the layout's stack file --------------------------------------


@dataclass
class Lab:
    """A lab run's hosts: the layout's settings, its namespaces and its guests."""

    settings: Settings
    clients: list[net.Host]
    repo: net.Host
    master: net.Host
    workers: list[net.Host]
    layout: str = SINGLE
    guests: list[Guest] = field(default_factory=list)
    #: False while the settings model cannot read the pair's stack file
    #: (``lb.hosts``): ``settings`` is then the pair's one-host view, good for
    #: the namespaces and the seed's fault, never for apply or verify.
    settings_complete: bool = True

    @property
    def all(self) -> list[net.Host]:
        return [*self.clients, self.repo, self.master, *self.workers]

    @property
    def stack(self) -> str:
        return layout.LAYOUT_STACKS[self.layout]

    def guest(self, name: str | None) -> Guest:
        """A guest by name; without a name, the single layout's only guest."""
        if name is None:
            if len(self.guests) == 1:
                return self.guests[0]
            names = ", ".join(g.name for g in self.guests)
            raise SystemExit(f"lab: the {self.layout} layout has several guests: --lb ({names})")
        for g in self.guests:
            if g.name == name:
                return g
        names = ", ".join(g.name for g in self.guests)
        raise SystemExit(f"lab: no guest {name!r} in the {self.layout} layout ({names})")

    @property
    def check_sources(self) -> tuple[str, ...]:
        """Every address an LB's health checks may come from (the seed's policy admits none)."""
        own = tuple(g.own_internal for g in self.guests if len(self.guests) > 1)
        dedicated = tuple(str(a) for a in self.settings.check_sources)
        return tuple(
            dict.fromkeys((str(self.settings.network.lb_internal_address), *own, *dedicated))
        )


def _settings(layout_name: str, root: Path | None = None) -> tuple[Settings, bool]:
    return (
        load(layout.LAYOUT_STACKS[layout_name], root or layout.STACK_ROOTS[layout_name]),
        True,
    )


def make_lab(layout_name: str = SINGLE, root: Path | None = None) -> Lab:
    """The lab of a layout, from its stack file in the checkout (or in
    ``root``: a generated stack file of the same name, lab/scale.py)."""
    s, complete = _settings(layout_name, root)
    guests_ = layout.guests(layout_name)
    n = s.network
    if s.verify is None or s.verify.via != "netns":
        raise SystemExit(f"lab: stack {layout.LAYOUT_STACKS[layout_name]} must verify via netns")
    ext, inner = n.external_subnet.prefixlen, n.internal_subnet.prefixlen
    gw = str(n.lb_internal_address)
    clients = [
        net.Host(c.target.removeprefix("ks-"), "ext", str(c.address), ext)
        for c in (s.verify.allowed_client, s.verify.denied_client)
    ]
    return Lab(
        settings=s,
        clients=clients,
        repo=net.Host("repo", "ext", image.REPO_ADDRESS, ext),
        master=net.Host("master", "int", str(s.apiserver.address), inner, gw),
        workers=[net.Host(w.name, "int", str(w.address), inner, gw) for w in s.workers],
        layout=layout_name,
        guests=guests_,
        settings_complete=complete,
    )


# -- state of a running lab ----------------------------------------------------


@dataclass
class State:
    pod: str
    # "seed" (HAProxy, the seed's policy), "fixed" (the rendered policy) or
    # "api" (the workers follow the lab's Kubernetes API, lab/full.py)
    phase: str
    pids: list[int] = field(default_factory=list)
    layout: str = SINGLE  # recorded by up; older state files are the single layout
    root: str = ""  # where the layout's stack file is, when not the checkout (lab/scale.py)

    def save(self, file: Path | None = None) -> None:
        """Into ``file`` (default: the lab run's state file)."""
        (file or paths.STATE_FILE).write_text(json.dumps(self.__dict__))

    @staticmethod
    def load(file: Path | None = None) -> State:
        file = file or paths.STATE_FILE
        if not file.exists():
            raise SystemExit("lab: the lab is not up (run lab/lab up)")
        return State(**json.loads(file.read_text()))


def current_lab(state_file: Path | None = None) -> Lab:
    """The running lab, of its layout as ``up`` recorded it (in ``state_file``,
    default: the lab run's)."""
    state = State.load(state_file)
    return make_lab(state.layout, Path(state.root) if state.root else None)


def _filters(the_lab: Lab, phase: str) -> tuple[hosts.PodFilter, ...]:
    """Every Service port of the rendered manifests, filtered by its policy
    ("seed": the seed's policy, without the LB's checks)."""
    manifests = artifacts(the_lab.settings)["manifests.yaml"]
    return hosts.pod_filters(manifests, phase == "seed", the_lab.check_sources)


def _filter(the_lab: Lab, phase: str) -> hosts.PodFilter:
    """The first service's first port (the seed's one workload)."""
    return _filters(the_lab, phase)[0]


def set_pod(the_lab: Lab, state: State) -> None:
    """Every service's pod on ``state.pod`` (the stand-ins before the API follows)."""
    views = [(f, {state.pod: "pod"}) for f in _filters(the_lab, state.phase)]
    hosts.set_workers(the_lab.workers, {}, views=views)
    state.save()


# -- commands ----------------------------------------------------------------------


def require_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit("lab: run as root (network namespaces, taps, QEMU)")


def _all_pidfiles() -> list[Path]:
    return sorted(paths.RUN.glob("*qemu.pid")) if paths.RUN.exists() else []


def _running() -> bool:
    return any(guest.qemu_pid(pidfile=p) is not None for p in _all_pidfiles())


def up(the_lab: Lab, kube: bool = False) -> dict[str, float]:
    """Namespaces, stand-ins and guest(s). ``kube``: no stand-in at the
    master's place (lab/full.py starts a real control plane there)."""
    require_root()
    times: dict[str, float] = {}
    if paths.STATE_FILE.exists() or _running():
        raise SystemExit("lab: the lab is up already (lab/lab down first)")
    leftovers = [ns for ns in net.namespaces() if ns.startswith("ks-")]
    if leftovers:
        raise SystemExit(f"lab: namespaces from an earlier lab remain: {leftovers} (lab/lab down)")
    s = the_lab.settings.network
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
    net.create(the_lab.all)
    log(f"namespaces: {', '.join(h.netns for h in the_lab.all)} (bridges in {net.SWITCH})")
    fs = _filters(the_lab, "seed")
    f = fs[0]
    master = None if kube else the_lab.master
    ports = [(pf.protocol, pf.pod_port) for pf in fs]
    pids = hosts.start_servers(
        the_lab.repo, master, the_lab.settings.apiserver.port, the_lab.workers, ports
    )
    state = State(pod=the_lab.workers[0].name, phase="seed", pids=pids, layout=the_lab.layout)
    set_pod(the_lab, state)
    hosts.wait_listening(
        [(the_lab.repo, 80)]
        + ([(master, the_lab.settings.apiserver.port)] if master else [])
        + [(w, port) for w in the_lab.workers for proto, port in ports if proto == "tcp"]
    )
    hosts.wait_listening(
        [(w, port) for w in the_lab.workers for proto, port in ports if proto == "udp"],
        protocol="udp",
    )
    log(f"workers: the pod is on {state.pod}; filter = the seed's policy {list(f.admitted)}")
    boot = time.monotonic()
    if len(the_lab.guests) == 1:
        log(f"guest booting (console: {the_lab.guests[0].console}) ...")
        times["boot_to_ssh"] = guest.boot(the_lab.guests[0])
        log(f"guest answers SSH after {times['boot_to_ssh']:.1f} s")
        return times
    for g in the_lab.guests:
        guest.start(g)
        log(f"guest {g.name} booting (console: {g.console}; ssh 127.0.0.1:{g.ssh_port}) ...")
    # Both boot at once (two TCG guests share the machine's cores); a stalled
    # one is booted once more (guest.boot).
    with ThreadPoolExecutor(len(the_lab.guests)) as pool:
        waits = {g.name: pool.submit(guest.boot, g, started=True) for g in the_lab.guests}
        for name, done in waits.items():
            times[f"boot_to_ssh_{name}"] = done.result()
    times["boot_to_ssh"] = time.monotonic() - boot
    log("guests answer SSH: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    return times


@dataclass(frozen=True)
class Declared:
    """A remote command the program declares for a stack (under the SDK's
    mocks: what it would ask the engine for, nothing is run)."""

    name: str
    host: str
    port: int
    user: str


def declared(stack: str, config: dict[str, Any] | None = None) -> list[Declared]:
    """The program's ``command:remote:Command`` resources for ``stack`` (or
    for ``config`` under that stack's name), from a run under the SDK's mocks."""
    done = (
        mockrun.run_program(config, stack=stack) if config is not None else mockrun.run_stack(stack)
    )
    out = []
    for r in done.of_type(engine.COMMAND):
        conn = r.inputs["connection"]
        conn = dict(conn.get("value", conn))  # secret-wrapped on the wire
        out.append(
            Declared(
                r.name, str(conn["host"]), int(conn.get("port", 22)), str(conn.get("user", "root"))
            )
        )
    return out


def unserved(steps: list[Declared], guests_: list[Guest]) -> list[Guest]:
    """The guests no declared command connects to (127.0.0.1:their SSH port)."""
    return [g for g in guests_ if not any(s.port == g.ssh_port for s in steps)]


def plan_steps(the_lab: Lab, config: dict[str, Any] | None = None) -> list[Declared]:
    """The program's remote commands for the layout's stack. In the pair, a
    clear refusal while the program declares no command for one of the guests
    (the lab never pretends the pair was configured)."""
    stack = the_lab.stack
    if the_lab.layout != PAIR:
        return declared(stack, config)
    try:
        steps = declared(stack, config if config is not None else layout.stack_config(PAIR))
    except (SystemExit, Exception) as error:  # any reason: named in the refusal below
        reason = str(error).strip().replace("\n", " ")
        steps, why = [], f"the program cannot plan stack {stack} ({reason})"
    else:
        why = ""
    missing = unserved(steps, the_lab.guests)
    if missing:
        names = ", ".join(f"{g.name} (127.0.0.1:{g.ssh_port})" for g in missing)
        raise SystemExit(
            f"lab: the program declares no command for {names} in stack {stack}"
            + (f": {why}" if why else "")
            + "; the pair's commands are not in the program yet, nothing was run"
        )
    return steps


#: The project's virtualenv (the engine runs the program in it).
VENV = Path(os.environ.get("KEEPSOURCE_VENV", PROJECT_ROOT / ".venv"))


def _require_settings(the_lab: Lab) -> None:
    if not the_lab.settings_complete:
        raise SystemExit(f"lab: the settings model cannot read stack {the_lab.stack} yet")


def _policy_first(the_lab: Lab, state: State) -> None:
    """The Workload's side of an LB-only stack first, as a GitOps sync of its
    manifests would: the CNI stand-in enforces the rendered NetworkPolicy
    (which admits the LB's check source) before the cut-over runs."""
    if state.phase != "fixed":
        state.phase = "fixed"
        set_pod(the_lab, state)
        admitted = list(_filter(the_lab, "fixed").admitted)
        log(f"workers: filter = the rendered NetworkPolicy {admitted}")


def apply(
    the_lab: Lab,
    *extra: str,
    cut: tuple[str, float] | None = None,
    timeout: float = 1200,
    hard: bool = False,
) -> engine.Up:
    """``pulumi up`` of the lab's stack with the real CLI (./build-engine) on
    the lab's shadow project (lab/engine.py): an ``engine.Up``. ``extra``: more
    arguments (``--replace=URN``, ``--expect-no-changes``). An LB-only stack's
    Workload side comes first, as a GitOps sync of its manifests would (the
    CNI stand-in enforces the rendered NetworkPolicy). ``cut=(STEP, SECONDS)``:
    SECONDS after the guest starts that step's script, its SSH connection is
    killed on the guest (:class:`Cut`), as a dropped link would end it;
    ``hard``: the script's own processes are killed with it, as a power loss
    or the OOM killer would end them (nothing of the script runs on)."""
    require_root()
    _require_settings(the_lab)
    if not the_lab.settings.manages_workload:
        _policy_first(the_lab, State.load())
    cli = engine_cli(the_lab)
    if cut is None:
        return engine.up(cli, the_lab.stack, *extra, timeout=timeout)
    step = f"{the_lab.guests[0].name}-{cut[0]}" if the_lab.layout == PAIR else cut[0]
    with Cut(step, cut[1], hard=hard) as c:
        done = engine.up(cli, the_lab.stack, *extra, timeout=timeout)
    done.output += f"\nlab: {c.said}"
    log(c.said)
    return done


class Cut:
    """Kills the SSH connection that runs step STEP on the (first) guest,
    ``after`` seconds after its script started: the script's parent on the
    guest is that connection's sshd, killed with SIGKILL, so the client (the
    engine's command provider) sees the connection drop mid-step. Looks every
    0.3 s, for at most ``limit`` seconds."""

    def __init__(
        self,
        step: str,
        after: float,
        lb: Guest | None = None,
        limit: float = 600,
        hard: bool = False,
    ):
        self.step, self.after, self.lb, self.limit = step.removeprefix("lb-"), after, lb, limit
        self.hard = hard
        self.said = f"cut of {step}: its script was never seen"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Cut:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        marker = f"keepsource-{self.step}$"
        start = time.monotonic()
        for _ in range(int(self.limit / 0.3) + 1):
            if self._stop.is_set() or time.monotonic() - start > self.limit:
                return
            found = guest.ssh(f"pgrep -o -f -- {marker!r} || true", timeout=20, lb=self.lb)
            pid = found.stdout.strip()
            if pid.isdigit():
                self._stop.wait(self.after)
                cut = guest.script("cut-connection", pid, *(("hard",) if self.hard else ()))
                killed = guest.ssh(cut, timeout=20, lb=self.lb)
                self.said = (
                    f"cut of {self.step}: {self.after} s after its script started, its"
                    f" connection's {killed.stdout.split()[0] if killed.stdout.split() else '?'}"
                    f" killed: {'killed' in killed.stdout}"
                )
                return
            time.sleep(0.3)


@contextlib.contextmanager
def stack_config(the_lab: Lab, change: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """The lab's stack file (in the engine's shadow project) changed by
    ``change`` (on its ``config`` mapping) for the block, as an operator edits
    it; put back byte for byte afterwards (its secret stays as it was)."""
    import yaml

    engine_cli(the_lab)  # the shadow's stack file exists, with the lab's key
    path = engine.SHADOW / f"Pulumi.{the_lab.stack}.yaml"
    before = path.read_text()
    doc = yaml.safe_load(before)
    change(doc["config"])
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        yield
    finally:
        path.write_text(before)


def engine_cli(the_lab: Lab) -> Pulumi:
    """The real CLI on the lab's shadow project for the lab's stack, with the
    lab's SSH key as the stack's secret (lab/engine.py ``prepare``)."""
    return engine.prepare(the_lab.stack, VENV, paths.KEY)


def overlap(up: engine.Up, hosts_: list[str], steps: tuple[str, ...]) -> tuple[bool, str]:
    """Did the engine run the hosts' steps at once? Each host's span runs
    from its first step's start (``resourcePreEvent``) to its last step's end
    (``resOutputsEvent``), in the engine's event sequence; every two spans
    must overlap."""
    spans: dict[str, tuple[int, int]] = {}
    for name in hosts_:
        starts = [up.sequence("resourcePreEvent", f"::{name}-{s}") for s in steps]
        ends = [up.sequence("resOutputsEvent", f"::{name}-{s}") for s in steps]
        found_starts = [n for n in starts if n is not None]
        found_ends = [n for n in ends if n is not None]
        if len(found_starts) < len(steps) or len(found_ends) < len(steps):
            return False, f"{name}: a step has no start or end in the event log"
        spans[name] = (min(found_starts), max(found_ends))
    ok = all(
        a[0] < b[1] and b[0] < a[1]
        for i, a in enumerate(spans.values())
        for b in list(spans.values())[i + 1 :]
    )
    shown = ", ".join(f"{n} events {a}-{b}" for n, (a, b) in spans.items())
    return ok, shown


class Probe:
    """``python -m lab.probe`` in a lab namespace, in the background: a
    request to ``url`` every ``interval`` seconds until :meth:`stop`
    (``timeout``: how long one request may take)."""

    def __init__(
        self,
        ns: str,
        url: str,
        interval: float = 0.2,
        limit: float = 900,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.stopfile = paths.RUN / f"probe-{ns}-{time.monotonic_ns()}.stop"
        argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "lab.probe"]
        extra = [] if timeout is None else [str(timeout)]
        self.proc = subprocess.Popen(
            [*argv, url, str(interval), str(limit), str(self.stopfile), *extra],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )

    def stop(self) -> dict[str, Any]:
        self.stopfile.touch()
        out, _ = self.proc.communicate(timeout=30)
        self.stopfile.unlink(missing_ok=True)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


def wait_keepalived(timeout: float = 60, lb: Guest | None = None) -> float:
    start = time.monotonic()
    active = facts.unit_active("keepalived")
    while time.monotonic() - start < timeout:
        if active.parse(guest.ssh(active.command, timeout=10, lb=lb).stdout) == "active":
            return time.monotonic() - start
        time.sleep(0.5)
    raise SystemExit(f"lab: keepalived not active {timeout} s after boot")


def reboot(lb: str | None = None) -> dict[str, float]:
    """Reboot a guest (``lb``: its name; the single layout has one)."""
    require_root()
    g = current_lab().guest(lb)
    t = {"reboot_to_ssh": guest.reboot(lb=g)}
    units = guest.ssh("systemctl list-unit-files keepalived.service --no-legend", lb=g).stdout
    if "keepalived" in units:
        t["ssh_to_keepalived_active"] = wait_keepalived(lb=g)
    return t


def kill_lb(name: str) -> bool:
    """Power a guest off hard (SIGKILL its qemu): no shutdown, as a power cut."""
    require_root()
    g = current_lab().guest(name)
    killed = guest.stop(g, hard=True)
    log(f"kill-lb {g.name}: {'qemu killed' if killed else 'was not running'}")
    return killed


def start_lb(name: str) -> float:
    """Boot a killed guest again on its own disk; seconds until SSH answers
    (a stalled boot is retried once: guest.boot)."""
    require_root()
    g = current_lab().guest(name)
    seconds = guest.boot(g, fresh=False)
    log(f"start-lb {g.name}: SSH answers after {seconds:.1f} s")
    return seconds


def verify() -> int:
    """``python -m keepsource verify STACK`` for the running lab's layout."""
    layout_name = State.load().layout if paths.STATE_FILE.exists() else SINGLE
    if layout_name == PAIR:
        plan_steps(make_lab(PAIR))  # refuses while the program has no command for a guest
    return subprocess.run(
        _verify_argv(layout.LAYOUT_STACKS[layout_name]), check=False, timeout=300
    ).returncode


def _verify_argv(stack: str, project: Path = PROJECT_ROOT) -> list[str]:
    return [sys.executable, "-m", "keepsource", "--project", str(project), "verify", stack]


def verify_output(
    the_lab: Lab, env: dict[str, str] | None = None, project: Path = PROJECT_ROOT
) -> tuple[int, str]:
    """``python -m keepsource verify STACK`` for ``the_lab``'s stack: exit status and
    output. ``env``: the real engine's (its CLI on PATH, its backend), so verify
    reads the stack's config through ``pulumi config`` as an operator's would;
    ``project``: where its Pulumi.yaml and stack file are."""
    done = subprocess.run(
        _verify_argv(the_lab.stack, project),
        env=env,
        check=False,
        timeout=300,
        capture_output=True,
        text=True,
    )
    return done.returncode, done.stdout + done.stderr


def _every_tap() -> list[str]:
    taps = list(net.TAPS.values())
    for layout_name in (SINGLE, PAIR):
        with contextlib.suppress(SystemExit, ConfigError, OSError):
            for g in layout.guests(layout_name):
                taps += [t for t in g.taps.values() if t not in taps]
    return taps


def down() -> None:
    """Remove everything the lab made, for either layout: every qemu by the
    PID in its pidfile, the servers by their process group, namespaces and
    taps by name."""
    require_root()
    if paths.STATE_FILE.exists():
        for pid in State.load().pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
    control_plane = kube.stop()
    if control_plane:
        log(f"down: stopped {', '.join(control_plane)}")
    stopped = []
    for pidfile in _all_pidfiles():
        if guest.stop(pidfile=pidfile):
            stopped.append(pidfile.name.removesuffix("qemu.pid").rstrip("-") or "lb")
    removed = net.destroy(_every_tap())
    guest.clean_run_dir()
    what = ", ".join(removed) or "nothing"
    if not stopped:
        log(f"down: qemu not running; removed {what}")
    elif stopped == ["lb"]:
        log(f"down: qemu stopped; removed {what}")
    else:
        log(f"down: qemu stopped ({', '.join(stopped)}); removed {what}")


def curl(ns: str, url: str) -> tuple[int, str]:
    """curl -m 2 from a lab namespace, exactly as verify runs it."""
    return runner_for("netns", ns)(curl_command(url))


def fault(the_lab: Lab) -> list[tuple[str, bool, str]]:
    """The seed's fault: through HAProxy (on the guest holding the VIP: ``lb``,
    or ``lb1`` in the pair) neither client gets the page."""
    url = f"http://{the_lab.settings.network.vip}:{the_lab.settings.node_port}/"
    holder = the_lab.guests[0]
    rows = []
    haproxy = facts.unit_active("haproxy")
    active = haproxy.parse(guest.ssh(haproxy.command, lb=holder).stdout)
    where = "" if len(the_lab.guests) == 1 else f" on {holder.name}"
    rows.append((f"fault: haproxy serves the VIP{where}", active == "active", active))
    for client in the_lab.clients:
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


# -- the pair: addresses, the long transfer, what the pod saw ----------------------


def addresses(g: Guest, timeout: float = 20) -> dict[str, list[str]]:
    """IPv4 addresses (address/prefix) on the guest's lbext and lbint."""
    fact = facts.IPV4_ADDRESSES
    found = fact.parse(guest.ssh(fact.command, timeout=timeout, lb=g).stdout)
    return {name: [str(a) for a in found.get(name, [])] for name in (layout.EXT_IF, layout.INT_IF)}


def vip_holders(the_lab: Lab) -> list[str]:
    """The running guests that hold the VIP on lbext."""
    vip = str(the_lab.settings.network.vip)
    held = []
    for g in the_lab.guests:
        if guest.qemu_pid(g) is None:
            continue
        with contextlib.suppress(subprocess.TimeoutExpired):
            if any(a.split("/")[0] == vip for a in addresses(g, timeout=10)[layout.EXT_IF]):
                held.append(g.name)
    return held


@dataclass
class Download:
    rc: int
    size: int
    sha256: str
    seconds: float


def download(ns: str, url: str, rate: str = "8M", limit: float = 90) -> Download:
    """GET ``url`` from a lab namespace with curl, at most ``rate`` bytes/s
    (``--limit-rate``: 64 MiB at 8M lasts 8 s), hashing the body as it comes."""
    argv = ["ip", "netns", "exec", ns, "curl", "-sS", "--fail", "--limit-rate", rate]
    argv += ["-m", str(int(limit)), "-o", "-", url]
    digest, size = hashlib.sha256(), 0
    start = time.monotonic()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        killer = threading.Timer(limit + 10, proc.kill)
        killer.start()
        try:
            while chunk := proc.stdout.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
            rc = proc.wait(timeout=limit + 15)
        finally:
            killer.cancel()
    return Download(rc, size, digest.hexdigest(), time.monotonic() - start)


def pod_peers(the_lab: Lab, worker: str | None = None) -> list[tuple[str, str, int]]:
    """(peer, request, status) of every request the pod stand-in on ``worker``
    (default: where the pod is) served in this run: the address the pod saw."""
    name = worker or State.load().pod
    w = next(w for w in the_lab.workers if w.name == name)
    path = hosts.pod_log(w, _filter(the_lab, "seed").pod_port)
    return hosts.access_peers(path.read_text(errors="replace")) if path.exists() else []


class Table:
    """A demo's rows: each phase runs, and a bounded wait that ran out or a
    refused step is a failed row (never a traceback); :meth:`report` prints
    the table and says whether every expected row ran and held."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, bool, str]] = []
        self.t0 = time.monotonic()

    def phase(self, name: str, fn: Callable[[], tuple[bool, str]]) -> bool:
        try:
            ok, detail = fn()
        except SystemExit as error:
            ok, detail = False, str(error)
        self.rows.append((name, ok, detail))
        return ok

    def report(self, title: str, expected_rows: int) -> int:
        width = max([len("check"), *(len(name) for name, _, _ in self.rows)]) + 2
        print()
        print(f"{'check':<{width}} {'result':<6} detail")
        for name, ok, detail in self.rows:
            print(f"{name:<{width}} {'PASS' if ok else 'FAIL':<6} {detail}")
        failed = sum(not ok for _, ok, _ in self.rows)
        seconds = time.monotonic() - self.t0
        print(f"{title}: {len(self.rows) - failed} passed, {failed} failed in {seconds:.0f} s")
        return 0 if failed == 0 and len(self.rows) == expected_rows else 1


def host_rule_first() -> tuple[bool, str]:
    """The seed's own MASQUERADE decides before keepsource's chain (after an
    apply, and after a reboot: the host's unit and keepsource's both load)."""
    rules = guest.ssh("iptables -t nat -S POSTROUTING").stdout.splitlines()
    ours = "-A POSTROUTING -j KEEPSOURCE-POSTROUTING"
    seed = f"-A {image.SEED_RULE}"
    ok = seed in rules and ours in rules and rules.index(seed) < rules.index(ours)
    return ok, f"{seed!r} before {ours!r}" if ok else " | ".join(rules)


def answers(ns: str, url: str) -> tuple[bool, str]:
    """Any HTTP answer from a lab namespace (curl -m 2, as verify runs it)."""
    rc, out = curl(ns, url)
    status = out.strip().splitlines()[-1] if out.strip() else ""
    ok = rc == 0 and status.startswith("HTTP ") and status != "HTTP 000"
    return ok, f"curl exit {rc} {status}"
