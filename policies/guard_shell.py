"""Reading a remote command's shell: what it writes and what it starts or stops.

The script is parsed with tree-sitter-bash (a maintained bash grammar with
binary wheels on PyPI; it never raises on odd input, it marks the bad part), so
heredocs, quoting, line continuations, ``&&``/``||`` lists, pipelines,
``if``/``case``/functions and ``bash -c '...'`` are read as bash reads them.
The result is a list of :class:`Event`s in script order. Commands inside a
condition's branches count as run: a guard cannot know the host's state, and
keepsource's own scripts stop HAProxy inside ``if systemctl is-active``.

Variables assigned a literal (``conf=/etc/x.cfg``) are substituted; any other
expansion stays symbolic (``${new}``), so ``cat > "$new"`` then ``mv "$new"
"$conf"`` still moves the content into place.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass, field

import tree_sitter_bash
from tree_sitter import Language, Node, Parser

_PARSER = Parser(Language(tree_sitter_bash.language()))

STDIN = "\0stdin"  # content marker: the Command's stdin


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


@dataclass
class _Ctx:
    vars: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


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
            for cont in _continuations(node):
                if cont.type == "pipeline":
                    _pipeline(cont, ctx, stdin, [], piped=out, first=1)
                else:
                    _walk(cont, ctx, stdin)
        elif body.type == "pipeline":
            _pipeline(body, ctx, stdin, reds)
        else:
            # `a && cat > f <<EOF`: bash binds the redirects to the last command.
            for c in body.named_children:
                if c is not None and last is not None and _contains(c, last):
                    if c.type == "command":
                        cmd = _simple(c, ctx, reds)
                        if cmd:
                            _command(cmd, ctx, stdin, piped=None)
                    elif c.type == "pipeline":
                        _pipeline(c, ctx, stdin, reds)
                    else:
                        _walk(c, ctx, stdin)
                else:
                    _walk(c, ctx, stdin)
    elif t == "pipeline":
        _pipeline(node, ctx, stdin, [])
    elif t == "function_definition":
        return  # a function body runs only when called; keepsource-style helpers are generic
    else:
        for c in node.named_children:
            _walk(c, ctx, stdin)


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


def _continuations(node: Node) -> list[Node]:
    """tree-sitter-bash puts what follows a heredoc's start on its line (``| tee f``,
    ``&& next``) inside the heredoc_redirect node."""
    found = []
    for c in node.children:
        if c.type == "heredoc_redirect":
            found += [
                cc
                for cc in c.named_children
                if cc.type
                not in ("heredoc_start", "heredoc_body", "heredoc_end", "heredoc_content")
            ]
    return found


PREFIXES = {"sudo", "nohup", "exec", "env", "time", "nice", "ionice", "stdbuf", "setsid", "doas"}


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
    """Record one simple command's effects; return what it writes to stdout (if known)."""
    argv = _strip_prefixes(cmd.argv)
    if not argv:
        return None
    prog = posixpath.basename(argv[0])
    args = argv[1:]
    out: str | None = None
    if prog in ("bash", "sh", "dash", "zsh") and "-c" in args:
        i = args.index("-c")
        if i + 1 < len(args):
            for ev in parse(args[i + 1], stdin=stdin, variables=dict(ctx.vars)):
                ctx.events.append(ev)
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
