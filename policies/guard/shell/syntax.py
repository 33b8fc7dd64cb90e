"""What the walk reads off tree-sitter-bash's nodes, and the state it
carries: :class:`_Ctx` (variables, events so far, why what is walked now may not
run, functions defined), words with the known variables substituted
(:func:`_word`), a simple command's argv and redirects (:class:`_Simple`),
assignments, list operators, the commands tree-sitter-bash hangs inside a
heredoc's redirect, and what a command reads on stdin or writes to files. None
of it walks the tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tree_sitter import Node

from guard.shell.events import STDIN, Event


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


def _list_op(node: Node) -> str:
    for c in node.children:
        if not c.is_named and c.type in ("&&", "||"):
            return c.type
    return ""


def _contains(outer: Node, inner: Node) -> bool:
    return outer.start_byte <= inner.start_byte and inner.end_byte <= outer.end_byte


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
