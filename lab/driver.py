"""engine-less replay driver: run the program's own remote commands over SSH.

There is no Pulumi engine here. This driver runs the keepsource program under
the Pulumi SDK's mocks for a stack, takes the ``command:remote:Command``
resources it declares (their ``create`` command line, ``stdin``, connection
host/port/user, and dependency order) and runs exactly those over SSH. It holds
no copy of any script: what runs is what the program declared.

Like the engine, it starts each command as soon as every command it depends on
has succeeded, so independent commands (the two hosts of a pair) run at the
same time, and after a failure it starts no new command while the ones under
way finish: pulumi/pulumi pkg/resource/deploy/step_executor.go:184
(ExecuteParallel) and :435-461 (cancelDueToError: cancels the deployment
unless --continue-on-error); the CLI's default parallelism is 4 x GOMAXPROCS
(pkg/cmd/pulumi/operations/up.go:71-88, defaultParallel), more than
keepsource's widest wave (4 commands), so the driver sets no limit. (pulumi
mirror at commit 1b5949891b.)

What it does not do, unlike the engine: keep state between runs (every command
runs on every apply, so the scripts' own idempotence is what is exercised),
run ``update``/``delete``, or handle any other resource type (it refuses to
apply a program that declares copies or local commands, rather than skip them).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import mockrun

REMOTE = "command:remote:Command"
UNSUPPORTED = ("command:remote:CopyToRemote", "command:remote:CopyFile", "command:local:Command")


@dataclass(frozen=True)
class Planned:
    name: str
    create: str
    stdin: str | None
    host: str
    port: int
    user: str
    after: tuple[str, ...]
    urn: str = ""


@dataclass
class Result:
    name: str
    rc: int
    seconds: float
    output: str

    @property
    def changed(self) -> bool:
        return self.output.rstrip().endswith(": changed")


def _connection(inputs: dict[str, Any]) -> dict[str, Any]:
    conn = inputs["connection"]
    return dict(conn.get("value", conn))  # secret-wrapped on the wire


def plan(stack: str, config: dict[str, Any] | None = None) -> list[Planned]:
    """The remote commands of a stack (or of this config under that stack's
    name), in an order that honours their dependencies."""
    run = (
        mockrun.run_program(config, stack=stack) if config is not None else mockrun.run_stack(stack)
    )
    bad = [r.name for r in run.resources if r.type in UNSUPPORTED]
    if bad:
        raise SystemExit(f"driver: the program declares resources this driver cannot replay: {bad}")
    cmds = {r.urn: r for r in run.of_type(REMOTE)}
    planned: dict[str, Planned] = {}
    for urn, r in cmds.items():
        conn = _connection(r.inputs)
        planned[urn] = Planned(
            name=r.name,
            create=r.inputs["create"],
            stdin=r.inputs.get("stdin"),
            host=str(conn["host"]),
            port=int(conn.get("port", 22)),
            user=str(conn.get("user", "root")),
            after=tuple(d for d in r.dependencies if d in cmds),
            urn=urn,
        )
    ordered: list[Planned] = []
    done: set[str] = set()
    for _ in range(len(planned) + 1):  # bounded topological sort
        ready = [u for u, p in planned.items() if u not in done and set(p.after) <= done]
        if not ready:
            break
        for u in ready:
            ordered.append(planned[u])
            done.add(u)
    if len(ordered) != len(planned):
        raise SystemExit("driver: the commands' dependencies form a cycle")
    return ordered


Ssh = Callable[[Planned, float | None], subprocess.Popen[str]]


def _run(step: Planned, ssh: Ssh, limit: float) -> Result:
    start = time.monotonic()
    proc = ssh(step, None)
    try:
        out, _ = proc.communicate(step.stdin or "", timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=30)
        out = (out or "") + f"\ndriver: connection cut after {limit} s"
    return Result(step.name, proc.returncode, time.monotonic() - start, out or "")


def apply(
    steps: list[Planned],
    ssh: Ssh,
    timeout: float = 900,
    cut: tuple[str, float] | None = None,
    echo: Callable[[str], None] = print,
) -> list[Result]:
    """Run the steps as the engine does: each once the steps it depends on
    succeeded (a dependency not in ``steps`` counts as done, as for
    ``--replace``), independent ones at the same time; after a failure no new
    step starts and the ones under way finish. Results in the order the steps
    finished. ``cut=(name, seconds)`` kills that step's SSH client after
    ``seconds`` (a dropped connection mid-apply)."""
    ours = {s.urn for s in steps if s.urn}
    pending = list(steps)
    succeeded: set[str] = set()
    results: list[Result] = []
    failed = False
    with ThreadPoolExecutor(max_workers=max(1, len(steps))) as pool:
        running: dict[Future[Result], Planned] = {}
        for _ in range(2 * len(steps) + 1):  # each pass starts or finishes a step
            if not failed:
                ready = [
                    s for s in pending if all(d in succeeded or d not in ours for d in s.after)
                ]
                for step in ready:
                    pending.remove(step)
                    limit = cut[1] if cut and cut[0] == step.name else timeout
                    running[pool.submit(_run, step, ssh, limit)] = step
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=lambda f: steps.index(running[f])):
                step = running.pop(future)
                result = future.result()
                results.append(result)
                last = result.output.strip().splitlines()[-1:] or [""]
                echo(f"  {step.name:<24} rc={result.rc} {result.seconds:6.1f} s  {last[0]}")
                if result.rc == 0:
                    succeeded.add(step.urn)
                else:
                    failed = True
    return results


def failures(results: list[Result]) -> list[Result]:
    """The steps that failed (with independent steps running at the same time,
    the failed one need not be the last to finish)."""
    return [r for r in results if r.rc != 0]
