"""Reading shell with tree-sitter-bash, and replaying Commands on a host.

The scripts below are only parsed, never run.
"""

from __future__ import annotations

from typing import Any

import pytest
from guard import hosts, shell
from guard.base import Resource


def kinds(script: str, stdin: str | None = None) -> list[tuple[str, str, str]]:
    return [(e.kind, e.name, e.action) for e in shell.parse(script, stdin=stdin)]


HEREDOCS = """set -euo pipefail
cat > /etc/a.cfg <<'CONF'
a $literal
CONF
cat <<CONF | sudo tee -a /etc/b.cfg >/dev/null
b
CONF
printf '%s\\n' "c" > /etc/c.cfg
install -m 0644 /dev/stdin /etc/d.cfg
cp /etc/a.cfg /etc/e.cfg
"""


def test_heredoc_tee_install_and_redirect_targets() -> None:
    events = shell.parse(HEREDOCS, stdin="STDIN")
    writes = {e.name: e.content for e in events if e.kind in ("write", "append")}
    assert writes["/etc/a.cfg"] == "a $literal\n"
    assert writes["/etc/b.cfg"] == "b\n"
    assert writes["/etc/c.cfg"] == "c\n"
    assert writes["/etc/d.cfg"] == shell.STDIN
    assert [(e.kind, e.name, e.source) for e in events if e.kind == "copy"] == [
        ("copy", "/etc/e.cfg", "/etc/a.cfg")
    ]


def test_variables_and_symbolic_paths() -> None:
    script = (
        "conf=/etc/keepalived/keepalived.conf\n"
        'new="$(mktemp "${conf}.new.XXXXXX")"\n'
        'cat > "$new"\n'
        'mv -f "$new" "$conf"\n'
    )
    events = shell.parse(script, stdin="S")
    assert [(e.kind, e.name, e.source) for e in events] == [
        ("write", "${new}", None),
        ("move", "/etc/keepalived/keepalived.conf", "${new}"),
    ]


SERVICES = """
systemctl enable --now haproxy.service
sudo systemctl reload-or-restart nginx
service caddy restart
systemctl --quiet disable --now traefik
systemctl mask envoy
if systemctl is-active --quiet keepalived; then systemctl stop keepalived; fi
"""


def test_services_every_spelling() -> None:
    assert kinds(SERVICES) == [
        ("service", "haproxy", "enable+now"),
        ("service", "nginx", "reload-or-restart"),
        ("service", "caddy", "restart"),
        ("service", "traefik", "disable+now"),
        ("service", "envoy", "mask"),
        ("service", "keepalived", "stop"),
    ]


def test_bash_c_recurses_with_its_stdin() -> None:
    inner = "cat > /etc/haproxy/haproxy.cfg && systemctl restart haproxy"
    events = shell.parse(f"sudo -n /bin/bash -c '{inner}' step-name", stdin="CFG")
    assert [(e.kind, e.name, e.content) for e in events] == [
        ("write", "/etc/haproxy/haproxy.cfg", shell.STDIN),
        ("service", "haproxy", None),
    ]


def test_bash_c_reads_its_own_heredoc_or_pipe() -> None:
    """`sudo bash -c 'cat > F && ...' <<'EOF'`: the inner script's stdin is the
    heredoc (or the pipe), not the Command's stdin."""
    inner = "cat > /etc/haproxy/haproxy.cfg && systemctl reload haproxy"
    script = f"sudo bash -c '{inner}' <<'EOF'\nfrontend web\n    bind :80\nEOF\n"
    events = shell.parse(script, stdin="THE COMMAND'S STDIN")
    assert [(e.kind, e.name, e.content) for e in events] == [
        ("write", "/etc/haproxy/haproxy.cfg", "frontend web\n    bind :80\n"),
        ("service", "haproxy", None),
    ]
    piped = shell.parse(f"printf 'x y' | sudo sh -c '{inner}'")
    assert piped[0].content == "x y"


MIXED = """
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy=2.6.* socat
docker run -d --name=edge -p 80:80 \\
   -v /srv/edge:/etc/nginx/conf.d:ro \\
   nginx:1.27 nginx -g 'daemon off;'
podman container rm -f old
docker compose -f /opt/a.yml -p a up -d
docker-compose down
timeout 5 nohup socat TCP-LISTEN:1,fork TCP:10.0.0.1:2 &
nginx -t
"""


def test_containers_compose_packages_processes() -> None:
    got = kinds(MIXED)
    assert got[:2] == [("package", "haproxy", "install"), ("package", "socat", "install")]
    assert ("container", "edge", "run") in got
    assert ("container", "old", "rm") in got
    assert ("compose", "/opt/a.yml", "up") in got and ("compose", "", "down") in got
    assert ("process", "socat", "run") in got
    run = next(e for e in shell.parse(MIXED) if e.kind == "container" and e.name == "edge")
    assert run.argv[-4:] == ("nginx:1.27", "nginx", "-g", "daemon off;")


def marks(script: str) -> list[tuple[str, str, str]]:
    return [(e.name, e.action, e.uncertain) for e in shell.parse(script) if e.kind == "service"]


def test_commands_that_may_not_run_are_marked_with_why() -> None:
    script = """systemctl start a
if [ -e /x ]; then systemctl stop a; elif true; then systemctl stop b; else systemctl stop c; fi
case "$M" in lvs) systemctl stop d ;; esac
test -e /y && systemctl stop e || systemctl stop f
systemctl stop g || true
while false; do systemctl stop h; done
( exit 1 )
systemctl stop i
exit 0
systemctl stop j
"""
    assert marks(script) == [
        ("a", "start", ""),
        ("a", "stop", "inside an `if` branch"),
        ("b", "stop", "inside an `if` branch"),
        ("c", "stop", "inside an `if` branch"),
        ("d", "stop", "inside a `case` branch"),
        ("e", "stop", "on the right of `&&`"),
        ("f", "stop", "on the right of `||`"),
        ("g", "stop", ""),
        ("h", "stop", "inside a `while` loop"),
        ("i", "stop", ""),  # an exit in a subshell leaves only the subshell
        ("j", "stop", "after `exit`"),
    ]


def test_a_test_of_the_services_own_state_makes_its_stop_certain() -> None:
    script = """if systemctl is-active --quiet a; then systemctl stop a; fi
systemctl is-active b && systemctl disable --now b
if systemctl is-active c; then if [ -e /x ]; then systemctl stop c; fi; fi
if systemctl is-active d; then systemctl stop e; fi
"""
    assert marks(script) == [
        ("a", "stop", ""),
        ("b", "stop", ""),  # is-active covers running; enabled may remain
        ("b", "disable", "on the right of `&&`"),
        ("c", "stop", "inside an `if` branch"),  # the inner `if` is not the test
        ("e", "stop", "inside an `if` branch"),
    ]


def test_functions_run_where_called_with_their_arguments() -> None:
    script = """f() { systemctl restart "$1"; return 0; systemctl stop "$1"; }
function g { systemctl stop never; }
h() { exit 1; }
f haproxy
systemctl stop after-return
h
systemctl stop after-exit
"""
    assert marks(script) == [
        ("haproxy", "restart", ""),
        ("haproxy", "stop", "after `return`"),
        ("after-return", "stop", ""),  # a return leaves only the function
        ("after-exit", "stop", "after `exit`"),  # an exit in a function ends the script
    ]
    assert marks("r() { r; systemctl start x; }\nr\n") == [("x", "start", "")]  # no recursion


def test_for_loops_over_literal_values_run_once_per_value() -> None:
    assert marks("for s in haproxy nginx; do systemctl stop $s; done") == [
        ("haproxy", "stop", ""),
        ("nginx", "stop", ""),
    ]
    assert marks('for s in "$@"; do systemctl stop x; done') == [
        ("x", "stop", "inside a `for` loop over values not known here")
    ]


@pytest.mark.parametrize(
    "script",
    [
        "systemd-run --unit=fwd -p Restart=always --uid=0 /usr/bin/socat A:1 B:2",
        "screen -dmS fwd socat A:1 B:2",
        "screen -d -m -S fwd socat A:1 B:2",
        "tmux new-session -d -s fwd 'socat A:1 B:2'",
        "tmux -L x new -d socat A:1 B:2",
        "start-stop-daemon --start -b --pidfile /run/p --exec /usr/bin/socat -- A:1 B:2",
        "start-stop-daemon -S -x /usr/bin/socat -- socat A:1 B:2",
        "daemonize -p /run/p -u nobody /usr/bin/socat A:1 B:2",
    ],
)
def test_launchers_start_their_command(script: str) -> None:
    runs = [(e.name, e.argv) for e in shell.parse(script) if e.kind == "process"]
    assert runs == [("socat", ("A:1", "B:2"))]


def test_launchers_that_start_nothing() -> None:
    for script in ["screen -S fwd -X quit", "tmux kill-session -t fwd", "tmux ls"]:
        assert [e for e in shell.parse(script) if e.action == "run"] == []
    stop = shell.parse("start-stop-daemon --stop --exec /usr/bin/socat")
    assert [(e.kind, e.name, e.action) for e in stop] == [("process", "socat", "kill")]


def test_odd_input_never_raises() -> None:
    for script in ["if then fi", "cat <<X", "'unterminated", "$(", "}", "\x00\xff", ""]:
        assert isinstance(shell.parse(script), list)


# -- host replay ------------------------------------------------------------------


def command(
    name: str, create: str, deps: tuple[str, ...] = (), stdin: str | None = None
) -> Resource:
    props: dict[str, Any] = {"connection": {"host": "10.0.0.1"}, "create": create}
    if stdin is not None:
        props["stdin"] = stdin
    return Resource("command:remote:Command", name, f"urn:x::{name}", props, None, deps)


def running(resources: list[Resource]) -> list[tuple[str, str]]:
    notes: list[Any] = []
    built = hosts.build(resources, lambda *a: notes.append(a), lambda *a: notes.append(a))
    assert notes == []
    return [(p.kind, p.state) for p in hosts.proxies(built["10.0.0.1"], {})]


CFG = "frontend f\n  bind :80\n  default_backend b\nbackend b\n  server s 10.0.0.9:30080\n"
WRITE_CFG = "apt-get install -y haproxy && cat > /etc/haproxy/haproxy.cfg"


def test_stop_undoes_only_starts_that_surely_ran_before() -> None:
    start = command("start", WRITE_CFG, stdin=CFG)
    stop_after = command("stop", "systemctl disable --now haproxy", ("urn:x::start",))
    assert running([start, stop_after]) == []
    raced = running([start, command("stop", "systemctl disable --now haproxy")])
    assert [k for k, _ in raced] == ["haproxy"]
    assert "not ordered before" in raced[0][1] or raced[0][1] == "running"


def test_mask_blocks_later_starts_but_does_not_stop() -> None:
    start = command("start", "cat > /etc/haproxy/haproxy.cfg && systemctl start haproxy", stdin=CFG)
    masked = command("mask", "systemctl mask haproxy", ("urn:x::start",))
    assert running([start, masked])[0][1].startswith("masked but still running")
    premasked = command("mask", "systemctl mask --now haproxy", ("urn:x::start",))
    again = command("again", "systemctl start haproxy", ("urn:x::mask",))
    assert running([start, premasked, again]) == []
    unmask = command(
        "unmask", "systemctl unmask haproxy && systemctl start haproxy", ("urn:x::mask",)
    )
    assert [k for k, _ in running([start, premasked, unmask])] == ["haproxy"]


def test_enabled_only_counts_and_rpm_install_starts_nothing() -> None:
    assert running([command("i", "dnf install -y haproxy")]) == []
    enabled = running([command("e", "yum install -y haproxy; systemctl enable haproxy")])
    assert enabled == [("haproxy", "enabled (runs after a reboot)")]


def test_a_stop_that_may_not_run_leaves_the_proxy_possibly_running() -> None:
    start = command("start", WRITE_CFG, stdin=CFG)
    maybe = command("maybe", "[ -e /x ] && systemctl disable --now haproxy", ("urn:x::start",))
    got = running([start, maybe])
    assert [k for k, _ in got] == ["haproxy"]
    assert "its `disable --now` by maybe may not run: on the right of `&&`" in got[0][1]
    # A start after it makes that note moot; a certain stop after it stops HAProxy.
    sure = command("sure", "systemctl disable --now haproxy", ("urn:x::maybe",))
    assert running([start, maybe, sure]) == []
    again = command("again", "systemctl start haproxy", ("urn:x::maybe",))
    assert running([start, maybe, again]) == [("haproxy", "running")]


RELAY = "socat TCP-LISTEN:80,fork TCP:10.0.0.9:30080"


@pytest.mark.parametrize(
    ("start", "stop"),
    [
        (f"systemd-run --unit=fwd.service {RELAY}", "systemctl stop fwd"),
        (f"systemd-run -u fwd {RELAY}", "systemctl disable --now fwd.service"),
        (f"screen -dmS fwd {RELAY}", "screen -S fwd -X quit"),
        (f"tmux new-session -d -s fwd '{RELAY}'", "tmux kill-session -t fwd"),
        (f"tmux new -d -s fwd '{RELAY}'", "tmux kill-server"),
    ],
)
def test_a_launched_relay_stops_with_its_unit_or_session(start: str, stop: str) -> None:
    assert running([command("s", start)]) == [("socat", "running")]
    assert running([command("s", f"{start}\n{stop}\n")]) == []
    other = stop.replace("fwd", "other").replace("kill-server", "kill-session -t other")
    assert running([command("s", f"{start}\n{other}\n")]) == [("socat", "running")]
    maybe = f"{start}\n[ -e /x ] && {stop}\n"
    assert running([command("s", maybe)]) == [("socat", "running")]


def test_caddy_reload_reads_its_config_flag() -> None:
    caddyfile = ":80 {\n  reverse_proxy 10.0.0.9:30080\n}\n"
    reload = command(
        "r", "cat > /srv/Caddyfile && caddy reload --config /srv/Caddyfile", stdin=caddyfile
    )
    assert running([reload]) == [("caddy", "running")]
    assert running([command("v", "caddy version")]) == []


def test_dependency_order_beats_declaration_order() -> None:
    later = command("later", "systemctl disable --now nginx", ("urn:x::first",))
    first = command("first", "apt-get install -y nginx")
    assert running([later, first]) == []


def test_scripts_the_stack_does_not_hold() -> None:
    """A script piped in from a download, or run by its path, is an event of
    its own (the pack advises on it when it is given an address to reach);
    a known program run by path is not."""
    events = shell.parse(
        "curl -fsSL https://git.example/apply.sh | sudo bash -s -- --target 10.0.0.21:31092\n"
        "./scripts/edge-nat.sh apply --listen 7000 --target 10.0.0.22:31500\n"
        "bash /opt/setup.sh 10.0.0.23:30000\n"
        "/usr/sbin/haproxy -c -f /etc/haproxy/haproxy.cfg\n"
        "bash <<'EOF'\necho hi\nEOF\n"
    )
    scripts = [(e.name, e.argv) for e in events if e.kind == "script"]
    assert scripts == [
        ("a script piped into bash", ("-s", "--", "--target", "10.0.0.21:31092")),
        ("./scripts/edge-nat.sh", ("apply", "--listen", "7000", "--target", "10.0.0.22:31500")),
        ("/opt/setup.sh", ("10.0.0.23:30000",)),
    ]


def test_a_commands_environment_fills_its_variables() -> None:
    events = shell.parse(
        'printf "%s" "$CFG" | tee /etc/haproxy/haproxy.cfg', variables={"CFG": "frontend f"}
    )
    assert [(e.kind, e.name, e.content) for e in events] == [
        ("write", "/etc/haproxy/haproxy.cfg", "frontend f")
    ]


def test_a_shell_fed_a_heredoc_runs_it() -> None:
    """`sudo bash <<'EOF' ... EOF`: the heredoc is the script, read as one."""
    events = shell.parse(
        "sudo bash <<'EOF'\ncat > /etc/haproxy/haproxy.cfg <<'CFG'\nlisten l\n    bind :80\nCFG\n"
        "systemctl restart haproxy\nEOF\n"
    )
    assert [(e.kind, e.name, e.content) for e in events] == [
        ("write", "/etc/haproxy/haproxy.cfg", "listen l\n    bind :80\n"),
        ("service", "haproxy", None),
    ]


def test_a_heredoc_piped_to_tee_after_an_and_list() -> None:
    """``mkdir -p D && cat <<'EOF' | sudo tee F``: the heredoc's continuation
    (the pipe to tee) belongs to the last command of the list, on the right of
    ``&&`` (second blind set, 005)."""
    events = shell.parse(
        "sudo mkdir -p /etc/caddy && cat <<'EOF' | sudo tee /etc/caddy/c.json\n{}\nEOF\n"
    )
    writes = [(e.kind, e.name, e.content, e.uncertain) for e in events if e.kind == "write"]
    assert writes == [("write", "/etc/caddy/c.json", "{}\n", "on the right of `&&`")]
