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

from guard.shell.events import (
    _RUN_VALUE_OPTS,
    KNOWN_PROGS,
    NETFILTER_PROGS,
    PKG_INSTALL,
    STDIN,
    SYSTEMCTL_ACTIONS,
    Event,
)
from guard.shell.launch import PREFIXES, split_exec
from guard.shell.walk import parse

__all__ = [
    "KNOWN_PROGS",
    "NETFILTER_PROGS",
    "PKG_INSTALL",
    "PREFIXES",
    "STDIN",
    "SYSTEMCTL_ACTIONS",
    "_RUN_VALUE_OPTS",
    "Event",
    "parse",
    "split_exec",
]
