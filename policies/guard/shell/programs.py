"""What a program does once the walk knows it is no shell, launcher or
script (:func:`_program`, the last step of the walk's ``_run``): ``iptables``,
``nft``, ``ipvsadm`` and friends become ``netfilter`` events; the file tools
(``cat``, ``printf``, ``echo``, ``tee``, ``install``/``cp``/``mv``, ``rm``,
``ln``) and output redirects become writes, appends, copies, moves and removes;
anything else goes to the service, package, container and process events.
"""

from __future__ import annotations

import posixpath

from guard.shell.events import NETFILTER_PROGS, Event, _service_events
from guard.shell.syntax import _Ctx, _input, _outputs, _Simple


def _program(
    cmd: _Simple, ctx: _Ctx, stdin: str | None, piped: str | None, argv: list[str]
) -> str | None:
    """What a program that is no shell, launcher or script does: its netfilter
    rules, the files it writes (``cat``, ``printf``, ``echo``, ``tee``, ``install``,
    ``cp``, ``mv``, and its redirects), removes or links, else its service,
    package, container or process events. Returns what it writes to stdout (if
    known and not redirected)."""
    prog = posixpath.basename(argv[0])
    args = argv[1:]
    out: str | None = None
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
