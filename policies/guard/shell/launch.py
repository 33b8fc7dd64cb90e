"""Prefixes and launchers: what command a command line actually starts.
``PREFIXES`` (``sudo``, ``nohup``, ``setsid``...) and ``timeout`` run the rest of
the line (:func:`_strip_prefixes`); launchers (``systemd-run``, ``screen``,
``tmux``, ``start-stop-daemon``, ``daemonize``) start a command found past their
own options (the ``*_VALUES`` tables list the options that take a value) and
may name the unit or session it runs in (:func:`_session`). Also
:func:`split_exec`, a systemd ``ExecStart=`` value as argv.
"""

from __future__ import annotations

import posixpath
import shlex

from guard.shell.events import _unit

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


def split_exec(line: str) -> list[str]:
    """A systemd ExecStart= value as argv (its prefixes -@:+! dropped)."""
    line = line.lstrip("-@:+!")
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()
