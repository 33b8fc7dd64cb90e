"""Reading a remote command's shell: what it writes and what it starts or stops.

The script is parsed with tree-sitter-bash (a maintained bash grammar with
binary wheels on PyPI; it never raises on odd input, it marks the bad part), so
heredocs, quoting, line continuations, ``&&``/``||`` lists, pipelines,
``if``/``case``/functions and ``bash -c '...'`` are read as bash reads them.
The result is a list of :class:`Event`s in script order, each marked with why
it may never run (``uncertain``): inside an ``if``/``elif``/``else`` or ``case``
branch, on the right of ``&&``/``||``, in a ``while``/``until`` loop or a ``for``
over values not known here, or after an ``exit`` (a ``return`` in a function).
The host replay counts such a start as run and such a stop as not run: the
proxy may be running. One exception keeps keepsource's own scripts exact: a
stop whose condition tests that same service's state (``if systemctl
is-active X; then systemctl stop X``; ``is-enabled``; ``pgrep``/``pidof``) ends
stopped either way, so it is certain. A function defined in the script runs its
body where it is called (with ``$1``...); ``for`` over literal values runs once
per value. Launchers run their command: ``systemd-run``, ``screen -dm``,
``tmux new-session`` (one string argument is parsed as shell),
``start-stop-daemon --start --exec``, ``daemonize``, besides the prefixes
(``sudo``, ``nohup``, ``setsid``...).

Variables assigned a literal (``conf=/etc/x.cfg``) are substituted; any other
expansion stays symbolic (``${new}``), so ``cat > "$new"`` then ``mv "$new"
"$conf"`` still moves the content into place.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass, field, replace

import tree_sitter_bash
from tree_sitter import Language, Node, Parser

_PARSER = Parser(Language(tree_sitter_bash.language()))

STDIN = "\0stdin"  # content marker: the Command's stdin
#: Programs run by path that are no script of the stack's own (their effects are
#: read elsewhere, or have none on the traffic path).
KNOWN_PROGS = (
    "haproxy",
    "nginx",
    "envoy",
    "caddy",
    "traefik",
    "socat",
    "keepalived",
    "systemctl",
    "iptables",
    "ipvsadm",
    "nft",
    "sysctl",
    "modprobe",
    "ip",
    "cat",
    "tee",
    "install",
    "cp",
    "mv",
    "rm",
    "mkdir",
    "chmod",
    "chown",
    "ln",
    "true",
    "false",
    "curl",
    "wget",
    "apt-get",
    "apt",
    "dpkg",
    "docker",
    "podman",
)
#: Programs whose arguments are NAT rules or LVS services (guard_nat reads them).
NETFILTER_PROGS = (
    "iptables",
    "iptables-nft",
    "iptables-legacy",
    "ip6tables",
    "ipvsadm",
    "nft",
    "iptables-restore",
    "iptables-nft-restore",
    "iptables-legacy-restore",
    "ip6tables-restore",
)


@dataclass(frozen=True)
class Event:
    """kind: write (path, content or None=unknown, or STDIN), copy (src -> path),
    move, remove; service (name, action); package (name, action); container
    (name, action, argv = the run's argv); compose (path, action); process (argv)."""

    kind: str
    name: str
    action: str = ""
    content: str | None = None
    source: str | None = None
    argv: tuple[str, ...] = ()
    uncertain: str = ""  # why it may never run ("inside an `if` branch"); "" = it runs


@dataclass
class _Ctx:
    vars: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    uncertain: str = ""  # why the commands walked now may not run
    exited: str = ""  # an `exit` may have run before this point
    returned: str = ""  # a `return` may have run in the function being run
    functions: dict[str, Node] = field(default_factory=dict)
    calls: tuple[str, ...] = ()  # functions being run (no recursion)
    # (unit, "running"/"enabled"/"process") -> the uncertainty outside the branch that
    # tests it: `if systemctl is-active X; then systemctl stop X; fi` leaves X stopped
    # either way.
    guards: dict[tuple[str, str], str] = field(default_factory=dict)


def _word(node: Node, ctx: _Ctx) -> str:
    t = node.type
    text = (node.text or b"").decode("utf-8", "replace")
    if t == "raw_string":
        return text[1:-1]
    if t == "word" or t == "number":
        return _unescape(text)
    if t == "string":
        parts = []
        for c in node.named_children:
            if c.type == "string_content":
                parts.append((c.text or b"").decode("utf-8", "replace"))
            else:
                parts.append(_word(c, ctx))
        return "".join(parts)
    if t in ("simple_expansion", "expansion"):
        name = ""
        for c in node.named_children:
            if c.type == "variable_name":
                name = (c.text or b"").decode()
        if name and name in ctx.vars and (t == "simple_expansion" or len(node.named_children) == 1):
            return ctx.vars[name]
        return "${" + (name or "?") + "}"
    if t == "concatenation":
        return "".join(_word(c, ctx) for c in node.named_children) if node.named_children else text
    if t == "ansi_c_string":
        return text[2:-1].encode().decode("unicode_escape", "replace")
    if t == "command_substitution":
        return "$(...)"
    return text


def _unescape(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


@dataclass
class _Simple:
    argv: list[str]
    redirects: list[tuple[str, str | None]]  # (op, target or heredoc body)


def _redirects(node: Node, ctx: _Ctx) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for c in node.children:
        if c.type == "file_redirect":
            op = ""
            dest = None
            for cc in c.children:
                if not cc.is_named:
                    op += (cc.text or b"").decode()
                elif cc.type != "file_descriptor":
                    dest = _word(cc, ctx)
            fd = [cc for cc in c.children if cc.type == "file_descriptor"]
            if fd and (fd[0].text or b"") not in (b"1",) and ">" in op:
                continue  # 2> and friends
            found.append((op, dest))
        elif c.type == "heredoc_redirect":
            body = ""
            quoted = False
            for cc in c.children:
                if cc.type == "heredoc_body":
                    body = (cc.text or b"").decode("utf-8", "replace")
                if cc.type == "heredoc_start":
                    quoted = any(q in (cc.text or b"").decode() for q in "'\"\\")
            if not quoted:
                body = _expand_text(body, ctx)
            found.append(("<<", body))
        elif c.type == "herestring_redirect":
            args = [_word(cc, ctx) for cc in c.named_children]
            found.append(("<<<", (args[0] if args else "") + "\n"))
    return found


def _expand_text(body: str, ctx: _Ctx) -> str:
    for name, value in ctx.vars.items():
        body = body.replace("${" + name + "}", value).replace("$" + name, value)
    return body


def _simple(node: Node, ctx: _Ctx, redirects: list[tuple[str, str | None]]) -> _Simple | None:
    argv: list[str] = []
    for c in node.named_children:
        if c.type == "variable_assignment":
            if not argv:
                continue
        elif c.type == "command_name":
            argv.append(_word(c.named_children[0], ctx) if c.named_children else "")
        elif c.type in ("file_redirect", "heredoc_redirect", "herestring_redirect"):
            pass
        else:
            argv.append(_word(c, ctx))
    redirects = redirects + _redirects(node, ctx)
    return _Simple(argv, redirects) if argv else None


def _assign(node: Node, ctx: _Ctx) -> None:
    name = value = None
    for c in node.named_children:
        if c.type == "variable_name":
            name = (c.text or b"").decode()
        else:
            value = c
    if name is None:
        return
    if value is None:
        ctx.vars[name] = ""
        return
    if value.type in ("word", "raw_string", "string", "concatenation", "number"):
        text = _word(value, ctx)
        if "$(...)" not in text:
            ctx.vars[name] = text
            return
    ctx.vars.pop(name, None)


def _last_command(node: Node) -> Node | None:
    if node.type == "command":
        return node
    for c in reversed(node.named_children):
        found = _last_command(c)
        if found is not None:
            return found
    return None


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
        body = node.child_by_field_name("body") or (
            node.named_children[0] if node.named_children else None
        )
        reds = _redirects(node, ctx)
        if body is None:
            return
        last = _last_command(body)
        if body.type == "command":
            cmd = _simple(body, ctx, reds)
            out = _command(cmd, ctx, stdin, piped=None) if cmd else None
            _continue(node, ctx, stdin, out)
        elif body.type == "pipeline":
            _pipeline(body, ctx, stdin, reds)
        else:
            # `a && cat > f <<EOF`: bash binds the redirects to the last command.
            op = _list_op(body) if body.type == "list" else ""
            for i, c in enumerate(body.named_children):
                saved = _enter(ctx, _RHS.get(op, "") if i > 0 else "")
                if c is not None and last is not None and _contains(c, last):
                    if c.type == "command":
                        cmd = _simple(c, ctx, reds)
                        out = _command(cmd, ctx, stdin, piped=None) if cmd else None
                        _continue(node, ctx, stdin, out)
                    elif c.type == "pipeline":
                        _pipeline(c, ctx, stdin, reds)
                    else:
                        _walk(c, ctx, stdin)
                else:
                    _walk(c, ctx, stdin)
                _leave(ctx, saved)
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
        for c in node.named_children:
            saved = _enter(ctx, "inside a `case` branch" if c.type == "case_item" else "")
            _walk(c, ctx, stdin)
            _leave(ctx, saved)
    elif t == "list":
        kids = node.named_children
        op = _list_op(node)
        for i, c in enumerate(kids):
            guards = _guards(kids[0], ctx) if i > 0 and op == "&&" else {}
            saved = _enter(ctx, _RHS.get(op, "") if i > 0 else "", guards)
            _walk(c, ctx, stdin)
            _leave(ctx, saved)
    elif t in ("while_statement", "until_statement", "c_style_for_statement"):
        for c in node.named_children:
            in_body = c.type == "do_group"
            saved = _enter(ctx, f"inside a `{t.split('_')[0]}` loop" if in_body else "")
            _walk(c, ctx, stdin)
            _leave(ctx, saved)
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


_RHS = {"&&": "on the right of `&&`", "||": "on the right of `||`"}
_Saved = tuple[str, dict[tuple[str, str], str]]


def _list_op(node: Node) -> str:
    for c in node.children:
        if not c.is_named and c.type in ("&&", "||"):
            return c.type
    return ""


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


def _contains(outer: Node, inner: Node) -> bool:
    return outer.start_byte <= inner.start_byte and inner.end_byte <= outer.end_byte


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


def _continuations(node: Node) -> list[tuple[str, Node]]:
    """tree-sitter-bash puts what follows a heredoc's start on its line (``| tee f``,
    ``&& next``) inside the heredoc_redirect node: (the operator before it, node)."""
    found = []
    for c in node.children:
        if c.type == "heredoc_redirect":
            op = ""
            for cc in c.children:
                if not cc.is_named:
                    op = cc.type if cc.type in ("&&", "||", "|") else op
                elif cc.type not in (
                    "heredoc_start",
                    "heredoc_body",
                    "heredoc_end",
                    "heredoc_content",
                ):
                    found.append((op, cc))
    return found


PREFIXES = {"sudo", "nohup", "exec", "env", "time", "nice", "ionice", "stdbuf", "setsid", "doas"}

# Launchers that start a command in the background: their options that take a value.
_SYSTEMD_RUN_VALUES = {
    "-u",
    "--unit",
    "-p",
    "--property",
    "--description",
    "--slice",
    "--uid",
    "--gid",
    "--nice",
    "--working-directory",
    "-E",
    "--setenv",
    "-M",
    "--machine",
    "-H",
    "--host",
    "--service-type",
    "--on-active",
    "--on-boot",
    "--on-startup",
    "--on-unit-active",
    "--on-unit-inactive",
    "--on-calendar",
    "--timer-property",
    "--path-property",
    "--socket-property",
}
_SCREEN_VALUES = {"-S", "-c", "-e", "-h", "-p", "-t", "-T", "-Logfile", "-s"}
_TMUX_VALUES = {"-s", "-n", "-c", "-x", "-y", "-e", "-t", "-F", "-f"}
_SSD_VALUES = {
    "-p",
    "--pidfile",
    "-x",
    "--exec",
    "-n",
    "--name",
    "-u",
    "--user",
    "-g",
    "--group",
    "-c",
    "--chuid",
    "-a",
    "--startas",
    "-d",
    "--chdir",
    "-r",
    "--chroot",
    "-N",
    "--nicelevel",
    "-P",
    "--procsched",
    "-I",
    "--iosched",
    "-k",
    "--umask",
    "-s",
    "--signal",
    "-R",
    "--retry",
    "-O",
    "--output",
    "--ppid",
    "--notify-timeout",
}
_DAEMONIZE_VALUES = {"-c", "-e", "-E", "-o", "-p", "-l", "-u"}


def _options(args: list[str], values: set[str]) -> tuple[dict[str, str], list[str]]:
    """Leading options (``--k=v``, ``-k v``, flags) and what follows them (after ``--``)."""
    opts: dict[str, str] = {}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        a = args[i]
        if a == "--":
            i += 1
            break
        key, eq, val = a.partition("=")
        if not eq and a in values and i + 1 < len(args):
            val = args[i + 1]
            i += 1
        opts[key] = val
        i += 1
    return opts, args[i:]


def _launched(prog: str, args: list[str]) -> list[str] | str | None:
    """What a launcher starts: an argv, a shell string (tmux), [] (it starts nothing
    the guard reads), or None (``prog`` is no launcher)."""
    if prog == "systemd-run":
        return _options(args, _SYSTEMD_RUN_VALUES)[1]
    if prog == "screen":
        i = 0
        while i < len(args) and args[i].startswith("-"):
            a = args[i]
            if a in ("-X", "-Q", "-r", "-R", "-x", "-ls", "-list", "-wipe"):
                return []  # talks to a session; starts nothing
            # `-dmS NAME`: a bundle of flags whose last one takes a value
            if a in _SCREEN_VALUES or (len(a) > 2 and a[-1] in "Sc" and a[1] != "-"):
                i += 1
            i += 1
        return args[i:]
    if prog == "tmux":
        while args and args[0].startswith("-"):  # tmux -L sock -f conf new -d ...
            args = args[2:] if args[0] in ("-L", "-S", "-f", "-T") else args[1:]
        if not args or args[0] not in ("new-session", "new", "new-window", "neww"):
            return []
        rest = _options(args[1:], _TMUX_VALUES)[1]
        return rest[0] if len(rest) == 1 else rest
    if prog == "start-stop-daemon":
        opts, rest = _options(args, _SSD_VALUES)
        path = opts.get("--startas") or opts.get("-a") or opts.get("--exec") or opts.get("-x")
        if not ({"--start", "-S"} & opts.keys()) or not path:
            if {"--stop", "-K"} & opts.keys() and (path or opts.get("--name") or opts.get("-n")):
                return ["pkill", posixpath.basename(path or opts.get("--name") or opts["-n"])]
            return []
        if rest and posixpath.basename(rest[0]) == posixpath.basename(path):
            rest = rest[1:]  # argv[0] repeated after `--`
        return [path, *rest]
    if prog == "daemonize":
        return _options(args, _DAEMONIZE_VALUES)[1]
    return None


def _session(prog: str, args: list[str]) -> tuple[str, str] | None:
    """The unit or session a launcher names, and whether it starts ("run") or
    ends ("kill") it: ``systemd-run --unit=N`` (stopped by ``systemctl stop N``),
    ``screen -S N`` (``screen -S N -X quit``), ``tmux new -s N``
    (``tmux kill-session -t N``; ``kill-server`` ends every session)."""
    if prog == "systemd-run":
        opts = _options(args, _SYSTEMD_RUN_VALUES)[0]
        unit = opts.get("--unit") or opts.get("-u")
        return (f"unit:{_unit(unit)}", "run") if unit else None
    if prog == "screen":
        name = ""
        for i, a in enumerate(args[:-1]):
            if a == "-S" or (a.startswith("-") and not a.startswith("--") and a.endswith("S")):
                name = args[i + 1]
        if not name:
            return None
        if "-X" in args:
            cmd = args[args.index("-X") + 1 : args.index("-X") + 2]
            return (f"screen:{name}", "kill") if cmd in (["quit"], ["kill"]) else None
        return (f"screen:{name}", "run")
    if prog == "tmux":
        while args and args[0].startswith("-"):
            args = args[2:] if args[0] in ("-L", "-S", "-f", "-T") else args[1:]
        if not args:
            return None
        if args[0] == "kill-server":
            return ("tmux:*", "kill")
        opts = _options(args[1:], _TMUX_VALUES)[0]
        if args[0] in ("new-session", "new") and opts.get("-s"):
            return (f"tmux:{opts['-s']}", "run")
        if args[0] == "kill-session" and opts.get("-t"):
            return (f"tmux:{opts['-t']}", "kill")
    return None


def _nested(script: str, ctx: _Ctx, stdin: str | None) -> None:
    """A script run by ``bash -c`` or a launcher: its own shell (an ``exit`` there
    leaves only it), this one's variables and functions are not inherited
    except exported ones; the guard passes the variables it knows."""
    ctx.events += parse(script, stdin=stdin, variables=dict(ctx.vars))


def _strip_prefixes(argv: list[str]) -> list[str]:
    while argv:
        head = posixpath.basename(argv[0])
        if head in PREFIXES:
            argv = argv[1:]
            while argv and (argv[0].startswith("-") or "=" in argv[0]):
                if argv[0] in ("-u", "-g", "-C", "-n") and head in ("sudo", "nice"):
                    argv = argv[2:] if argv[0] != "-n" or head == "nice" else argv[1:]
                else:
                    argv = argv[1:]
        elif head == "timeout":
            argv = argv[1:]
            while argv and argv[0].startswith("-"):
                argv = argv[1:]
            argv = argv[1:]
        else:
            return argv
    return argv


def _input(cmd: _Simple, stdin: str | None, piped: str | None) -> str | None:
    """The text a command reads on stdin: heredoc, here-string, pipe or the Command's stdin."""
    for op, target in reversed(cmd.redirects):
        if op in ("<<", "<<-", "<<<"):
            return target
        if op == "<":
            return None
    if piped is not None:
        return piped
    return STDIN if stdin is not None else None


def _outputs(cmd: _Simple) -> list[tuple[str, bool]]:
    return [(t, op == ">>") for op, t in cmd.redirects if t and op in (">", ">>", ">|", "&>")]


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


def _run(cmd: _Simple, ctx: _Ctx, stdin: str | None, piped: str | None) -> str | None:
    argv = _strip_prefixes(cmd.argv)
    if not argv:
        return None
    prog = posixpath.basename(argv[0])
    args = argv[1:]
    out: str | None = None
    if prog in ("bash", "sh", "dash", "zsh") and "-c" in args:
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
                    replace(e, content=given) if e.content == STDIN else e
                    for e in ctx.events[mark:]
                ]
        return None
    launched = _launched(prog, args)
    if launched is not None:
        session = _session(prog, args)
        if session is not None and session[1] == "kill":
            ctx.events.append(Event("process", session[0], "kill"))
            return None
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
        return None
    if prog in ("bash", "sh", "dash", "zsh") or ("/" in argv[0] and prog not in KNOWN_PROGS):
        # a script the stack does not hold: piped in (`curl URL | sudo bash -s -- ARGS`),
        # or a file run by path (`./edge-nat.sh apply ...`, `bash /opt/x.sh ...`)
        script = next((a for a in args if not a.startswith("-")), None)
        if "/" in argv[0] and prog not in ("bash", "sh", "dash", "zsh"):
            ctx.events.append(Event("script", argv[0], argv=tuple(args)))
        elif script is None or "-s" in args:
            given = _input(cmd, stdin, piped)
            if given not in (None, STDIN) and piped is None:
                _nested(
                    str(given), ctx, None
                )  # `sudo bash <<'EOF' ... EOF`: the heredoc is the script
            elif given in (None, STDIN) and piped is None:
                ctx.events.append(Event("script", "a script piped into " + prog, argv=tuple(args)))
        else:
            ctx.events.append(Event("script", script, argv=tuple(args[args.index(script) + 1 :])))
        return None
    if prog in NETFILTER_PROGS:
        # NAT rules and LVS services, read by guard_nat; `nft -f FILE` by its file
        ctx.events.append(Event("netfilter", prog, argv=tuple(args)))
        return None
    if prog == "cat":
        files = [a for a in args if not a.startswith("-")]
        out = (
            _input(cmd, stdin, piped)
            if not files
            else ("\0file:" + files[0] if len(files) == 1 else None)
        )
    elif prog == "printf":
        out = _printf(args)
    elif prog == "echo":
        flags = {a for a in args[:1] if a in ("-n", "-e", "-ne", "-en")}
        words = args[len(flags) :]
        out = " ".join(words)
        if any("e" in f for f in flags):
            out = out.replace("\\n", "\n").replace("\\t", "\t")
        if not any("n" in f for f in flags):
            out += "\n"
    elif prog == "tee":
        data = _input(cmd, stdin, piped)
        for path in [a for a in args if not a.startswith("-")]:
            ctx.events.append(_write(path, data))
        out = data
    elif prog == "install" or prog == "cp" or prog == "mv":
        pos = [a for a in args if not a.startswith("-")]
        if prog == "install":
            skip = {"-m", "-o", "-g", "--mode", "--owner", "--group", "-t"}
            pos = [
                a
                for i, a in enumerate(args)
                if not a.startswith("-") and (i == 0 or args[i - 1] not in skip)
            ]
            if "-d" in args or "--directory" in args:
                pos = []
        if len(pos) >= 2:
            src, dest = pos[0], pos[-1]
            if src in ("/dev/stdin", "-"):
                ctx.events.append(_write(dest, _input(cmd, stdin, piped)))
            else:
                ctx.events.append(Event("move" if prog == "mv" else "copy", dest, source=src))
    elif prog == "rm":
        for path in [a for a in args if not a.startswith("-")]:
            ctx.events.append(Event("remove", path))
    elif prog == "ln":
        pos = [a for a in args if not a.startswith("-")]
        if len(pos) == 2:
            ctx.events.append(Event("copy", pos[1], source=pos[0]))
    else:
        ctx.events += _service_events(prog, args)
    for path, append in _outputs(cmd):
        if path.startswith("/dev/"):
            continue
        data = out
        if data is not None and data.startswith("\0file:"):
            ctx.events.append(Event("copy", path, source=data[6:]))
            continue
        ev = _write(path, data)
        ctx.events.append(Event("append", path, content=ev.content) if append else ev)
    if _outputs(cmd):
        return None
    return out


def _printf(args: list[str]) -> str | None:
    """printf FORMAT ARGS: %s conversions and backslash escapes (the format is
    reused until the arguments run out, as printf does)."""
    if not args:
        return None
    fmt, rest = args[0], args[1:]
    if "%" in fmt.replace("%s", "").replace("%%", ""):
        return None  # other conversions: content not known
    count = fmt.count("%s")
    parts = []
    if count == 0 or not rest:
        parts.append(fmt.replace("%s", ""))
    else:
        for i in range(0, len(rest), count):
            chunk = rest[i : i + count] + [""] * (count - len(rest[i : i + count]))
            text = fmt
            for value in chunk:
                text = text.replace("%s", value.replace("%", "\0pct"), 1)
            parts.append(text)
    out = "".join(parts).replace("%%", "%").replace("\0pct", "%")
    return out.replace("\\n", "\n").replace("\\t", "\t")


def _write(path: str, data: str | None) -> Event:
    return Event("write", path, content=data)


SYSTEMCTL_ACTIONS = {
    "start",
    "stop",
    "restart",
    "reload",
    "reload-or-restart",
    "try-restart",
    "try-reload-or-restart",
    "condrestart",
    "force-reload",
    "enable",
    "disable",
    "mask",
    "unmask",
    "kill",
    "reenable",
}
PKG_INSTALL = {
    "apt-get": "apt",
    "apt": "apt",
    "aptitude": "apt",
    "dnf": "rpm",
    "yum": "rpm",
    "zypper": "rpm",
    "apk": "apk",
    "pacman": "pacman",
}


def _service_events(prog: str, args: list[str]) -> list[Event]:
    events: list[Event] = []
    if prog == "systemctl":
        flags = {a for a in args if a.startswith("-")}
        pos = [a for a in args if not a.startswith("-")]
        if pos and pos[0] in SYSTEMCTL_ACTIONS:
            action = pos[0]
            if "--now" in flags and action in ("enable", "disable", "mask"):
                action += "+now"
            for unit in pos[1:]:
                events.append(Event("service", _unit(unit), action))
    elif prog == "service" and len(args) >= 2:
        events.append(Event("service", _unit(args[0]), args[1]))
    elif prog in ("update-rc.d",) and len(args) >= 2:
        events.append(
            Event(
                "service",
                _unit(args[0]),
                {"enable": "enable", "disable": "disable", "remove": "disable"}.get(args[1], ""),
            )
        )
    elif prog in PKG_INSTALL:
        value_opts = {"-o", "-t", "-c", "--option", "--target-release", "--config-file", "-X"}
        pos = [
            a
            for i, a in enumerate(args)
            if not a.startswith("-") and (i == 0 or args[i - 1] not in value_opts)
        ]
        if pos and pos[0] in ("install", "add", "reinstall", "-S"):
            for pkg in pos[1:]:
                events.append(
                    Event("package", pkg.split("=")[0], "install", source=PKG_INSTALL[prog])
                )
        elif pos and pos[0] in ("remove", "purge", "del", "erase", "autoremove"):
            for pkg in pos[1:]:
                events.append(Event("package", pkg, "remove", source=PKG_INSTALL[prog]))
        elif "-S" in args:
            for pkg in pos:
                events.append(Event("package", pkg, "install", source=PKG_INSTALL[prog]))
    elif prog in ("docker", "podman", "nerdctl"):
        events += _container_events(prog, args)
    elif prog == "docker-compose" or prog == "podman-compose":
        events += _compose_events(args)
    elif prog in ("pkill", "killall"):
        pos = [a for a in args if not a.startswith("-")]
        for p in pos:
            events.append(Event("process", posixpath.basename(p), "kill"))
    else:
        events.append(Event("process", prog, "run", argv=tuple(args)))
    return events


def _unit(name: str) -> str:
    return name[: -len(".service")] if name.endswith(".service") else name


# docker run options that take a value (the rest are flags).
_RUN_VALUE_OPTS = {
    "-p",
    "--publish",
    "-v",
    "--volume",
    "--name",
    "-e",
    "--env",
    "--network",
    "--net",
    "--restart",
    "--mount",
    "-w",
    "--workdir",
    "--entrypoint",
    "-u",
    "--user",
    "-l",
    "--label",
    "--env-file",
    "--cap-add",
    "--cap-drop",
    "-h",
    "--hostname",
    "--log-driver",
    "--log-opt",
    "--memory",
    "-m",
    "--cpus",
    "--add-host",
    "--dns",
    "--ip",
    "--pull",
    "--platform",
    "--sysctl",
    "--ulimit",
    "--device",
    "--tmpfs",
    "--security-opt",
    "--health-cmd",
    "--stop-signal",
    "--pid",
    "--ipc",
    "--userns",
    "--expose",
}


def _container_events(prog: str, args: list[str]) -> list[Event]:
    # skip global options (docker -H x run ...)
    while args and args[0].startswith("-"):
        args = args[2:] if args[0] in ("-H", "--host", "--context", "-c", "--config") else args[1:]
    if not args:
        return []
    sub, rest = args[0], args[1:]
    if sub == "container" and rest:
        sub, rest = rest[0], rest[1:]
    if sub == "compose":
        return _compose_events(rest)
    if sub in ("run", "create"):
        name = ""
        i = 0
        while i < len(rest):
            a = rest[i]
            if a.startswith("-"):
                key = a.split("=", 1)[0]
                if key == "--name":
                    name = (
                        a.split("=", 1)[1]
                        if "=" in a
                        else (rest[i + 1] if i + 1 < len(rest) else "")
                    )
                if "=" not in a and key in _RUN_VALUE_OPTS:
                    i += 1
                i += 1
                continue
            break
        image = rest[i] if i < len(rest) else ""
        return [
            Event("container", name or image, "run" if sub == "run" else "create", argv=tuple(rest))
        ]
    if sub in ("rm", "stop", "kill", "start", "restart"):
        names = [a for a in rest if not a.startswith("-")]
        return [Event("container", n, sub) for n in names]
    return []


def _compose_events(args: list[str]) -> list[Event]:
    files = []
    i = 0
    sub = ""
    while i < len(args):
        a = args[i]
        if a in ("-f", "--file") and i + 1 < len(args):
            files.append(args[i + 1])
            i += 2
            continue
        if a.startswith("--file="):
            files.append(a.split("=", 1)[1])
        elif a in ("--project-directory", "-p", "--project-name", "--env-file") and i + 1 < len(
            args
        ):
            i += 2
            continue
        elif not a.startswith("-") and not sub:
            sub = a
        i += 1
    if sub in ("up", "start", "restart", "create", "run"):
        return [Event("compose", f, "up") for f in files] or [Event("compose", "", "up")]
    if sub in ("down", "stop", "rm", "kill"):
        return [Event("compose", f, "down") for f in files] or [Event("compose", "", "down")]
    return []


def parse(
    script: str, stdin: str | None = None, variables: dict[str, str] | None = None
) -> list[Event]:
    """The events of one script, in order. ``stdin``: the Command's stdin, if any."""
    ctx = _Ctx(vars=dict(variables or {}))
    tree = _PARSER.parse(script.encode("utf-8", "replace"))
    _walk(tree.root_node, ctx, stdin)
    return ctx.events


def split_exec(line: str) -> list[str]:
    """A systemd ExecStart= value as argv (its prefixes -@:+! dropped)."""
    line = line.lstrip("-@:+!")
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()
