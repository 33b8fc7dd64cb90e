"""The lab's applies go through the real Pulumi CLI (engine.build made it).

The CLI runs on a *shadow* of the project in the lab's run folder: links to the
program's own files and a copy of the stack file, so ``pulumi config set``
(the lab's SSH key, as a secret) never touches the checkout. The working
directory the engine gives the program and the providers is that folder
(pulumi/pulumi pkg/engine/project.go getPwdMain); ``.lab`` is linked there too,
so the stack file's relative paths (the pinned host key, the kubeconfig) mean
the same as in the checkout.
"""

from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.cli import Pulumi, PulumiError, events, resources
from keepsource.stackfile import PROJECT_ROOT
from lab import paths
from lab.log import log

SHADOW = paths.RUN / "project"
STATE = paths.RUN / "pulumi"
PASSPHRASE = paths.RUN / "pulumi-passphrase"
#: What of the checkout the program needs (the rest is not linked).
PROGRAM = (
    "__main__.py",
    "components",
    "keepsource",
    "policies",
    "Pulumi.yaml",
    "requirements.txt",
)
COMMAND = "command:remote:Command"
#: The engine's ops that run a command's create (or update) script. A change
#: of ``triggers`` replaces a command (create-replacement, then replace, then
#: delete-replaced of the old one, which runs nothing: keepsource declares no
#: ``delete``); ``same`` runs nothing.
RAN_OPS = ("create", "update", "create-replacement")


def link_project(dest: Path, names: tuple[str, ...], venv: Path) -> None:
    """Links in ``dest`` to ``names`` of the checkout, ``.lab`` to this lab's
    folder (``paths.STATE``: the stack files' relative paths, ``.lab/cache/...``,
    point there; the checkout's ``.lab`` unless KEEPSOURCE_LAB_DIR names
    another), and ``venv`` (Pulumi.yaml's runtime.options.virtualenv) to the
    project's virtualenv."""
    dest.mkdir(parents=True, exist_ok=True)
    targets = {**{name: PROJECT_ROOT / name for name in names}, ".lab": paths.STATE.absolute()}
    for name, target in targets.items():
        link = dest / name
        if not link.is_symlink():
            if link.is_dir():
                shutil.rmtree(link)
            link.unlink(missing_ok=True)
            link.symlink_to(target)
    venv_link = dest / "venv"
    if not venv_link.is_symlink():
        venv_link.symlink_to(venv.resolve())


def shadow(stack: str, venv: Path) -> Path:
    """(Re)make the shadow project for ``stack``; its stack file is copied once
    (later runs keep what ``pulumi config set`` wrote into it)."""
    link_project(SHADOW, PROGRAM, venv)
    stack_file = SHADOW / f"Pulumi.{stack}.yaml"
    if not stack_file.exists():
        shutil.copyfile(PROJECT_ROOT / f"Pulumi.{stack}.yaml", stack_file)
    return SHADOW


def cli() -> Pulumi:
    if not PASSPHRASE.exists():
        PASSPHRASE.parent.mkdir(parents=True, exist_ok=True)
        PASSPHRASE.write_text(secrets.token_hex(16))
        PASSPHRASE.chmod(0o600)
    return Pulumi(project=SHADOW, state=STATE, passphrase=PASSPHRASE.read_text())


def prepare(stack: str, venv: Path, private_key: Path) -> Pulumi:
    """The stack in the lab's own backend, with the lab's SSH key as a secret."""
    shadow(stack, venv)
    p = cli()
    p.select(stack)
    p.run(
        "config", "set", "--secret", "keepsource:lbPrivateKey", stack=stack,
        stdin=private_key.read_text(),
    )  # fmt: skip
    return p


@dataclass
class Step:
    """One remote command after an up, as the engine's state has it."""

    name: str
    urn: str
    stdout: str
    report: str
    """The script's last line: ``keepsource: STEP: changed`` or ``unchanged``."""


@dataclass
class Up:
    ok: bool
    seconds: float
    output: str
    events: list[dict[str, Any]] = field(default_factory=list)
    steps: dict[str, Step] = field(default_factory=dict)

    def changed(self) -> list[str]:
        return [n for n, s in self.steps.items() if s.report.endswith(": changed")]

    def ops(self) -> dict[str, str]:
        """The remote commands this up ran (created, updated or replaced), in
        the order they finished, with the engine's op and the inputs that
        differed (its ``diffs``): a step the engine found unchanged (``same``)
        or only deleted the replaced one of did not run."""
        found: dict[str, str] = {}
        for e in self.events:
            meta = (e.get("resOutputsEvent") or {}).get("metadata") or {}
            if meta.get("type") == COMMAND and meta.get("op") in RAN_OPS:
                name = str(meta.get("urn", "")).rsplit("::", 1)[-1]
                diffs = ",".join(meta.get("diffs") or [])
                found.setdefault(name, f"{meta.get('op')}" + (f" [{diffs}]" if diffs else ""))
        return found

    def ran(self) -> list[str]:
        return list(self.ops())

    def ran_changed(self) -> list[str]:
        """The steps this up ran whose script said ``changed``."""
        changed = self.changed()
        return [n for n in self.ran() if n in changed]

    def failed(self) -> dict[str, str]:
        """The remote commands that failed in this up, with the engine's error
        for each (pulumi-command puts the script's output in it)."""
        failed_urns = [
            str(((e.get("resOpFailedEvent") or {}).get("metadata") or {}).get("urn", ""))
            for e in self.events
            if "resOpFailedEvent" in e
        ]
        out: dict[str, str] = {}
        for urn in failed_urns:
            said = [
                str(d.get("message", ""))
                for e in self.events
                if (d := e.get("diagnosticEvent"))
                and d.get("urn") == urn
                and d.get("severity") == "error"
            ]
            out[urn.rsplit("::", 1)[-1]] = "\n".join(said)
        return out

    def sequence(self, kind: str, urn_end: str) -> int | None:
        """The engine's sequence number of the first ``kind`` event (e.g.
        ``resourcePreEvent``: a step started; ``resOutputsEvent``: it finished)
        of the resource whose URN ends with ``urn_end``. Event timestamps have
        whole seconds only; the sequence orders them."""
        for e in self.events:
            body = e.get(kind)
            if body and body.get("metadata", {}).get("urn", "").endswith(urn_end):
                return int(e.get("sequence", 0))
        return None


def steps_of(state: dict[str, Any]) -> dict[str, Step]:
    found = {}
    for r in resources(state):
        if r.get("type") != COMMAND:
            continue
        name = r["urn"].rsplit("::", 1)[-1]
        stdout = r.get("outputs", {}).get("stdout") or ""
        if isinstance(stdout, dict):  # a secret: never the case for keepsource's steps
            stdout = ""
        last = (stdout.strip().splitlines() or [""])[-1]
        found[name] = Step(name, r["urn"], stdout, last)
    return found


def up(p: Pulumi, stack: str, *extra: str, timeout: float = 1200) -> Up:
    """``pulumi up --yes`` with the engine's event log; the steps' reports from the state."""
    ev = STATE / f"events-{time.time_ns()}.jsonl"
    start = time.monotonic()
    proc = p.run(
        "up", "--yes", "--skip-preview", "--diff", f"--event-log={ev}", *extra,
        stack=stack, check=False, timeout=timeout,
    )  # fmt: skip
    seconds = time.monotonic() - start
    evs = list(events(ev)) if ev.exists() else []
    try:
        state = p.export(stack)
    except PulumiError:
        state = {}
    result = Up(proc.returncode == 0, seconds, proc.stdout + proc.stderr, evs, steps_of(state))
    log(f"pulumi up -s {stack} {' '.join(extra)}: exit {proc.returncode} in {seconds:.1f} s")
    ran = result.ops()
    for s in result.steps.values():
        log(f"  {s.name:<24} {s.report:<44} {ran.get(s.name, '(did not run)')}")
    return result
