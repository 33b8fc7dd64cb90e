"""Why a command may never run, and the branches that make a stop
certain: the walk enters a branch with the reason its commands may not run
(:func:`_enter`, :func:`_leave`), :func:`_guards` reads what a condition asserts
about a service's own state, and :func:`_stamp` marks a command's events with
the reason, keeping certain a stop whose condition tests that same service.
"""

from __future__ import annotations

import posixpath
from dataclasses import replace

from tree_sitter import Node

from guard.shell.events import Event, _unit
from guard.shell.launch import _strip_prefixes
from guard.shell.syntax import _Ctx, _simple

_RHS = {"&&": "on the right of `&&`", "||": "on the right of `||`"}
_Saved = tuple[str, dict[tuple[str, str], str]]


def _enter(ctx: _Ctx, reason: str, guards: dict[tuple[str, str], str] | None = None) -> _Saved:
    """Walk what follows as a branch that may not run (``reason``; "" = it runs
    whenever its surroundings do). A new branch sees only its own condition's guards."""
    saved = (ctx.uncertain, ctx.guards)
    if reason:
        ctx.guards = dict(guards or {})
        ctx.uncertain = ctx.uncertain or reason
    return saved


def _leave(ctx: _Ctx, saved: _Saved) -> None:
    ctx.uncertain, ctx.guards = saved


def _guards(cond: Node, ctx: _Ctx) -> dict[tuple[str, str], str]:
    """What a condition asserts about a service's own state when it succeeds:
    ``systemctl [--quiet] is-active X`` (running), ``is-enabled X`` (enabled),
    ``pgrep [opts] X`` / ``pidof X`` (a process). Only one command, one unit."""
    if cond.type == "redirected_statement" and cond.named_children:
        cond = cond.named_children[0]  # `pgrep x >/dev/null`
    if cond.type != "command":
        return {}
    cmd = _simple(cond, ctx, [])
    if cmd is None:
        return {}
    argv = _strip_prefixes(cmd.argv)
    if not argv:
        return {}
    prog = posixpath.basename(argv[0])
    pos = [a for a in argv[1:] if not a.startswith("-")]
    outside = ctx.uncertain or ""
    if prog == "systemctl" and len(pos) == 2 and pos[0] in ("is-active", "is-enabled"):
        aspect = "running" if pos[0] == "is-active" else "enabled"
        return {(_unit(pos[1]), aspect): outside}
    if prog in ("pgrep", "pidof") and len(pos) == 1:
        return {(posixpath.basename(pos[0]), "process"): outside}
    return {}


def _stamp(ctx: _Ctx, mark: int) -> None:
    """Mark the events from ``mark`` on with why they may not run. A stop inside a
    branch whose condition tests that service's own state (``if systemctl
    is-active X; then systemctl stop X``) ends stopped either way: certain."""
    reason = ctx.uncertain or ctx.exited or ctx.returned
    if not reason or mark == len(ctx.events):
        return
    out: list[Event] = []
    for ev in ctx.events[mark:]:
        if ev.uncertain:
            out.append(ev)
            continue
        base, now = ev.action.removesuffix("+now"), ev.action.endswith("+now")
        if ev.kind == "service" and not (ctx.exited or ctx.returned):
            running = (ev.name, "running") in ctx.guards
            enabled = (ev.name, "enabled") in ctx.guards
            outside = ctx.guards.get((ev.name, "running"), ctx.guards.get((ev.name, "enabled")))
            if base in ("stop", "kill") and running:
                out.append(replace(ev, uncertain=outside or ""))
                continue
            if base in ("disable", "mask") and enabled and (running or not now):
                out.append(replace(ev, uncertain=outside or ""))
                continue
            if base in ("disable", "mask") and now and running:
                out.append(Event("service", ev.name, "stop", uncertain=outside or ""))
                out.append(replace(ev, action=base, uncertain=reason))
                continue
        if (
            ev.kind == "process"
            and ev.action == "kill"
            and not (ctx.exited or ctx.returned)
            and (ev.name, "process") in ctx.guards
        ):
            out.append(replace(ev, uncertain=ctx.guards[(ev.name, "process")]))
            continue
        out.append(replace(ev, uncertain=reason))
    ctx.events[mark:] = out
