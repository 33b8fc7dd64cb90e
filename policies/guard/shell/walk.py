"""The walk over tree-sitter-bash's tree, the script's commands in order:
:func:`parse` parses a script and walks it (:func:`_walk`) through assignments,
redirected statements, pipelines, lists, ``if``/``case``/loops/``for``,
subshells and functions (run where called, :func:`_call`); each simple command
is run by :func:`_command` and :func:`_run`, which walk a shell's ``-c`` script
or a launcher's command as a script of its own (:func:`_nested`) and hand any
other program to :func:`guard.shell.programs._program`.
"""

from __future__ import annotations

import posixpath
from dataclasses import replace

import tree_sitter_bash
from tree_sitter import Language, Node, Parser

from guard.shell.events import KNOWN_PROGS, STDIN, Event
from guard.shell.launch import _launched, _session, _strip_prefixes
from guard.shell.programs import _program
from guard.shell.syntax import (
    _assign,
    _contains,
    _continuations,
    _Ctx,
    _input,
    _last_command,
    _list_op,
    _redirects,
    _Simple,
    _simple,
    _word,
)
from guard.shell.uncertain import _RHS, _enter, _guards, _leave, _stamp

_PARSER = Parser(Language(tree_sitter_bash.language()))


def _walk(node: Node, ctx: _Ctx, stdin: str | None) -> None:
    t = node.type
    if t == "variable_assignment":
        _assign(node, ctx)
    elif t == "declaration_command":
        for c in node.named_children:
            if c.type == "variable_assignment":
                _assign(c, ctx)
    elif t == "command":
        cmd = _simple(node, ctx, [])
        if cmd:
            _command(cmd, ctx, stdin, piped=None)
    elif t == "redirected_statement":
        _redirected(node, ctx, stdin)
    elif t == "pipeline":
        _pipeline(node, ctx, stdin, [])
    elif t == "function_definition":
        # A function's body runs where it is called (see _command), not here.
        name = node.child_by_field_name("name")
        body = node.child_by_field_name("body")
        if name is not None and body is not None:
            ctx.functions[(name.text or b"").decode()] = body
    elif t == "if_statement":
        _if(node, ctx, stdin)
    elif t == "case_statement":
        _case(node, ctx, stdin)
    elif t == "list":
        _list(node, ctx, stdin)
    elif t in ("while_statement", "until_statement", "c_style_for_statement"):
        _loop(node, ctx, stdin)
    elif t == "for_statement":
        _for(node, ctx, stdin)
    elif t == "subshell":
        exited, returned = ctx.exited, ctx.returned  # `( ... exit )` leaves only the subshell
        for c in node.named_children:
            _walk(c, ctx, stdin)
        ctx.exited, ctx.returned = exited, returned
    else:
        for c in node.named_children:
            _walk(c, ctx, stdin)


def _redirected(node: Node, ctx: _Ctx, stdin: str | None) -> None:
    """A command, pipeline or list with redirects (``cat > f <<EOF``)."""
    body = node.child_by_field_name("body") or (
        node.named_children[0] if node.named_children else None
    )
    reds = _redirects(node, ctx)
    if body is None:
        return
    last = _last_command(body)
    if body.type in ("command", "pipeline"):
        _with_redirects(body, node, ctx, stdin, reds)
        return
    # `a && cat > f <<EOF`: bash binds the redirects to the last command.
    op = _list_op(body) if body.type == "list" else ""
    for i, c in enumerate(body.named_children):
        saved = _enter(ctx, _RHS.get(op, "") if i > 0 else "")
        if c is not None and last is not None and _contains(c, last):
            _with_redirects(c, node, ctx, stdin, reds)
        else:
            _walk(c, ctx, stdin)
        _leave(ctx, saved)


def _with_redirects(
    c: Node, node: Node, ctx: _Ctx, stdin: str | None, reds: list[tuple[str, str | None]]
) -> None:
    """The command, pipeline or list ``c`` that the redirects of ``node`` bind to."""
    if c.type == "command":
        cmd = _simple(c, ctx, reds)
        out = _command(cmd, ctx, stdin, piped=None) if cmd else None
        _continue(node, ctx, stdin, out)
    elif c.type == "pipeline":
        _pipeline(c, ctx, stdin, reds)
    else:
        _walk(c, ctx, stdin)


def _case(node: Node, ctx: _Ctx, stdin: str | None) -> None:
    """Each ``case`` branch may not run."""
    for c in node.named_children:
        saved = _enter(ctx, "inside a `case` branch" if c.type == "case_item" else "")
        _walk(c, ctx, stdin)
        _leave(ctx, saved)


def _list(node: Node, ctx: _Ctx, stdin: str | None) -> None:
    """``a && b``, ``a || b``: what follows the first command may not run (after
    ``&&``, guarded by what the first command tests)."""
    kids = node.named_children
    op = _list_op(node)
    for i, c in enumerate(kids):
        guards = _guards(kids[0], ctx) if i > 0 and op == "&&" else {}
        saved = _enter(ctx, _RHS.get(op, "") if i > 0 else "", guards)
        _walk(c, ctx, stdin)
        _leave(ctx, saved)


def _loop(node: Node, ctx: _Ctx, stdin: str | None) -> None:
    """``while``/``until``/C-style ``for``: the body may not run."""
    t = node.type
    for c in node.named_children:
        in_body = c.type == "do_group"
        saved = _enter(ctx, f"inside a `{t.split('_')[0]}` loop" if in_body else "")
        _walk(c, ctx, stdin)
        _leave(ctx, saved)


def _if(node: Node, ctx: _Ctx, stdin: str | None) -> None:
    """The condition runs; the ``then`` branch may not (guarded by what the condition
    tests); ``elif``/``else`` may not either."""
    conds = [
        node.children[i]
        for i in range(node.child_count)
        if node.field_name_for_child(i) == "condition" and node.children[i].is_named
    ]
    for c in conds:
        _walk(c, ctx, stdin)
    guards = _guards(conds[0], ctx) if len(conds) == 1 else {}
    for c in node.named_children:
        if any(c.id == k.id for k in conds):
            continue
        saved = _enter(
            ctx,
            "inside an `if` branch",
            guards if c.type not in ("elif_clause", "else_clause") else {},
        )
        _walk(c, ctx, stdin)
        _leave(ctx, saved)


def _for(node: Node, ctx: _Ctx, stdin: str | None) -> None:
    """``for x in a b c``: the body once per literal value (with ``$x`` set); over
    values not known here, once, as a branch that may not run."""
    var = node.child_by_field_name("variable")
    body = node.child_by_field_name("body")
    if body is None:
        return
    name = (var.text or b"").decode() if var is not None else ""
    values = [
        _word(node.children[i], ctx)
        for i in range(node.child_count)
        if node.field_name_for_child(i) == "value"
    ]
    if values and len(values) <= 32 and not any("${" in v or "$(" in v for v in values):
        for v in values:
            ctx.vars[name] = v
            _walk(body, ctx, stdin)
        return
    ctx.vars.pop(name, None)
    saved = _enter(ctx, "inside a `for` loop over values not known here")
    _walk(body, ctx, stdin)
    _leave(ctx, saved)


def _pipeline(
    node: Node,
    ctx: _Ctx,
    stdin: str | None,
    reds: list[tuple[str, str | None]],
    piped: str | None = None,
    first: int = 0,
) -> None:
    """A pipeline; ``piped``: what flows into it (a heredoc's continuation)."""
    cmds = [c for c in node.named_children if c.type in ("command", "redirected_statement")]
    for i, c in enumerate(cmds, first):
        extra = reds if i == len(cmds) - 1 else []
        if c.type == "redirected_statement":
            inner = c.named_children[0] if c.named_children else None
            if inner is None or inner.type != "command":
                _walk(c, ctx, stdin)
                piped = None
                continue
            extra = extra + _redirects(c, ctx)
            c = inner
        cmd = _simple(c, ctx, extra)
        if cmd is None:
            continue
        piped = _command(cmd, ctx, stdin if i == 0 else None, piped=piped if i > 0 else None)


def _continue(node: Node, ctx: _Ctx, stdin: str | None, out: str | None) -> None:
    """What follows a heredoc's start on its line, fed ``out`` through a pipe."""
    for op, cont in _continuations(node):
        saved = _enter(ctx, _RHS.get(op, ""))
        if cont.type == "pipeline":
            _pipeline(cont, ctx, stdin, [], piped=out, first=1)
        else:
            _walk(cont, ctx, stdin)
        _leave(ctx, saved)


def _nested(script: str, ctx: _Ctx, stdin: str | None) -> None:
    """A script run by ``bash -c`` or a launcher: its own shell (an ``exit`` there
    leaves only it), this one's variables and functions are not inherited
    except exported ones; the guard passes the variables it knows."""
    ctx.events += parse(script, stdin=stdin, variables=dict(ctx.vars))


def _command(cmd: _Simple, ctx: _Ctx, stdin: str | None, piped: str | None) -> str | None:
    """Record one simple command's effects, each marked with why it may not run;
    return what it writes to stdout (if known)."""
    name = cmd.argv[0] if cmd.argv else ""
    if name in ctx.functions and name not in ctx.calls:
        _call(name, cmd.argv[1:], ctx, stdin)
        return None
    mark = len(ctx.events)
    out = _run(cmd, ctx, stdin, piped)
    _stamp(ctx, mark)
    argv = _strip_prefixes(cmd.argv)
    if argv and argv[0] == "return" and ctx.calls:
        ctx.returned = ctx.returned or "after `return`"  # leaves only the function
    elif argv and argv[0] in ("exit", "return", "logout"):
        ctx.exited = ctx.exited or f"after `{argv[0]}`"  # what follows may never run
    return out


def _call(name: str, args: list[str], ctx: _Ctx, stdin: str | None) -> None:
    """A function defined in this script runs its body here, with ``$1``... set."""
    saved_vars = {k: ctx.vars.get(k) for k in ("@", "*", "#", *map(str, range(1, 10)))}
    for i in range(1, 10):
        ctx.vars.pop(str(i), None)
    for i, a in enumerate(args[:9], 1):
        ctx.vars[str(i)] = a
    ctx.vars["#"] = str(len(args))
    returned, calls = ctx.returned, ctx.calls
    ctx.calls, ctx.returned = (*calls, name), ""
    _walk(ctx.functions[name], ctx, stdin)
    ctx.returned, ctx.calls = returned, calls
    for k, v in saved_vars.items():
        if v is None:
            ctx.vars.pop(k, None)
        else:
            ctx.vars[k] = v


def _run(cmd: _Simple, ctx: _Ctx, stdin: str | None, piped: str | None) -> str | None:
    """Run one simple command (its prefixes stripped): a shell's ``-c`` script, a
    launcher's command, a script not held here, or a program; return what it
    writes to stdout (if known)."""
    argv = _strip_prefixes(cmd.argv)
    if not argv:
        return None
    prog = posixpath.basename(argv[0])
    args = argv[1:]
    if prog in ("bash", "sh", "dash", "zsh") and "-c" in args:
        _shell_c(cmd, ctx, stdin, piped, args)
        return None
    launched = _launched(prog, args)
    if launched is not None:
        _launch(prog, args, launched, ctx, stdin)
        return None
    if prog in ("bash", "sh", "dash", "zsh") or ("/" in argv[0] and prog not in KNOWN_PROGS):
        _script(cmd, ctx, stdin, piped, argv)
        return None
    return _program(cmd, ctx, stdin, piped, argv)


def _shell_c(
    cmd: _Simple, ctx: _Ctx, stdin: str | None, piped: str | None, args: list[str]
) -> None:
    """``bash -c SCRIPT``: the script, reading this command's stdin."""
    i = args.index("-c")
    if i + 1 < len(args):
        given = _input(cmd, stdin, piped)
        if given is None or given == STDIN:
            _nested(args[i + 1], ctx, stdin)
        else:
            # `sudo bash -c 'cat > F && ...' <<EOF`: the inner script reads this
            # command's heredoc (or pipe), not the Command's stdin
            mark = len(ctx.events)
            _nested(args[i + 1], ctx, "")
            ctx.events[mark:] = [
                replace(e, content=given) if e.content == STDIN else e for e in ctx.events[mark:]
            ]


def _launch(
    prog: str, args: list[str], launched: list[str] | str, ctx: _Ctx, stdin: str | None
) -> None:
    """A launcher's command (``launched``), tied to the unit or session it names."""
    session = _session(prog, args)
    if session is not None and session[1] == "kill":
        ctx.events.append(Event("process", session[0], "kill"))
        return
    mark = len(ctx.events)
    if isinstance(launched, str):
        _nested(launched, ctx, stdin)
    elif launched:
        _run(_Simple(launched, []), ctx, stdin, None)
    if session is not None:  # what it started stops with its unit or session
        ctx.events[mark:] = [
            replace(e, source=session[0]) if e.kind == "process" and e.action == "run" else e
            for e in ctx.events[mark:]
        ]


def _script(cmd: _Simple, ctx: _Ctx, stdin: str | None, piped: str | None, argv: list[str]) -> None:
    """A shell reading a script from stdin or a file, or a file run by path."""
    prog = posixpath.basename(argv[0])
    args = argv[1:]
    # a script the stack does not hold: piped in (`curl URL | sudo bash -s -- ARGS`),
    # or a file run by path (`./edge-nat.sh apply ...`, `bash /opt/x.sh ...`)
    script = next((a for a in args if not a.startswith("-")), None)
    if "/" in argv[0] and prog not in ("bash", "sh", "dash", "zsh"):
        ctx.events.append(Event("script", argv[0], argv=tuple(args)))
    elif script is None or "-s" in args:
        given = _input(cmd, stdin, piped)
        if given not in (None, STDIN) and piped is None:
            _nested(str(given), ctx, None)  # `sudo bash <<'EOF' ... EOF`: the heredoc is the script
        elif given in (None, STDIN) and piped is None:
            ctx.events.append(Event("script", "a script piped into " + prog, argv=tuple(args)))
    else:
        ctx.events.append(Event("script", script, argv=tuple(args[args.index(script) + 1 :])))


def parse(
    script: str, stdin: str | None = None, variables: dict[str, str] | None = None
) -> list[Event]:
    """The events of one script, in order. ``stdin``: the Command's stdin, if any."""
    ctx = _Ctx(vars=dict(variables or {}))
    tree = _PARSER.parse(script.encode("utf-8", "replace"))
    _walk(tree.root_node, ctx, stdin)
    return ctx.events
