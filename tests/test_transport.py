"""The one SSH transport (keepsource/transport.py), read back by the real
OpenSSH client: ``ssh -G`` prints the configuration an argv resolves to
without connecting. ``-F /dev/null`` keeps this machine's ssh_config out."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepsource import transport
from keepsource.connection import lb_connection, ssh_options
from keepsource.render.scripts import Step
from keepsource.settings import ConfigError, parse
from keepsource.stackfile import load
from keepsource.transport import Destination, SshOptions, parse_destination
from keepsource.verify import _ssh_argv as client_argv
from keepsource.verify import lb_runner
from lab import guest, paths
from tests.conftest import dev_config, require_tool

Conf = dict[str, list[str]]


def resolved(argv: list[str]) -> Conf:
    """What ``ssh`` makes of ``argv`` (an ssh argv without a remote command)."""
    assert argv[0] == "ssh"
    done = subprocess.run(
        [require_tool("ssh"), "-G", "-F", "/dev/null", *argv[1:]],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    conf: Conf = {}
    for line in done.stdout.splitlines():
        name, _, value = line.partition(" ")
        conf.setdefault(name, []).append(value)
    return conf


def one(conf: Conf, name: str) -> str:
    (value,) = conf[name]
    return value


def proxy_conf(conf: Conf) -> Conf:
    """The jump host's own ssh, as its ProxyCommand runs it (its ``-W``
    forward dropped: ``ssh -G`` reads no ``%h:%p``)."""
    words = shlex.split(one(conf, "proxycommand"))
    at = words.index("-W")
    assert words[at + 1] == "%h:%p"
    return resolved([*words[:at], *words[at + 2 :]])


@pytest.fixture
def identity(tmp_path: Path) -> str:
    """An identity file that exists (ssh -G drops a missing one)."""
    path = tmp_path / "id_test"
    path.write_text("")
    return str(path)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory short enough for control sockets (pytest's tmp_path is
    often too deep: then no connection is shared)."""
    with tempfile.TemporaryDirectory(prefix="ks-", dir="/tmp") as path:
        yield Path(path)


def assert_pinned(conf: Conf, known: Path, identity: str) -> None:
    """Strict checking against the pinned file alone, one key offered, no prompt."""
    assert one(conf, "stricthostkeychecking") == "true"
    assert one(conf, "userknownhostsfile") == str(known)
    assert one(conf, "globalknownhostsfile") == "/dev/null"
    assert conf["identityfile"] == [identity]
    assert one(conf, "identitiesonly") == "yes"
    assert one(conf, "batchmode") == "yes"
    assert one(conf, "connecttimeout") == "5"
    assert one(conf, "loglevel") == "ERROR"


# --- the LB host -----------------------------------------------------------


def endpoint(conf: Conf) -> tuple[str, str, str]:
    """(user, hostname, port) as ssh resolved them."""
    return one(conf, "user"), one(conf, "hostname"), one(conf, "port")


def test_lb_as_root_directly(tmp_path: Path, identity: str) -> None:
    known = tmp_path / "kh"
    conn = lb_connection(load("dev"))
    argv = transport.ssh_argv(ssh_options(conn, known, identity))
    assert argv[-2] == "--"
    conf = resolved(argv)
    assert endpoint(conf) == ("root", "192.168.0.1", "22")
    assert_pinned(conf, known, identity)
    assert "proxycommand" not in conf and one(conf, "controlmaster") == "false"
    assert conn.command("ipvsadm -Ln") == "ipvsadm -Ln"  # root: no sudo


def test_lb_as_a_user_through_the_jump_host(tmp_path: Path, identity: str) -> None:
    known = tmp_path / "kh"
    conn = lb_connection(load("lab3"))
    conf = resolved(transport.ssh_argv(ssh_options(conn, known, identity)))
    assert endpoint(conf) == ("ops", "10.20.0.5", "2222")
    assert_pinned(conf, known, identity)
    # The jump's own ssh: the same pinned file and identity, its own endpoint.
    jump = proxy_conf(conf)
    assert endpoint(jump) == ("ops", "bastion.example.internal", "22")
    assert_pinned(jump, known, identity)
    assert "proxycommand" not in jump
    assert conn.command("true").startswith("sudo -n ")


def test_lb_with_host_key_checking_refused_by_name() -> None:
    cfg = dev_config()
    del cfg["keepsource:lb"]["ssh"]["hostKey"]
    cfg["keepsource:lb"]["ssh"]["insecureAcceptAnyHostKey"] = True
    conf = resolved(transport.ssh_argv(ssh_options(lb_connection(parse(cfg)), None, None)))
    assert one(conf, "stricthostkeychecking") == "false"
    assert one(conf, "userknownhostsfile") == "/dev/null"
    assert one(conf, "identitiesonly") == "no"  # no identity: ssh's own (an agent)
    assert one(conf, "batchmode") == "yes" and one(conf, "connecttimeout") == "5"
    # Through a jump host, its ssh accepts any key too (never half-checked).
    opts = SshOptions(
        "ops", "10.0.0.5", 22, accept_any_host_key=True, jump=Destination("j", "b", 2)
    )
    jump = proxy_conf(resolved(transport.ssh_argv(opts)))
    assert one(jump, "stricthostkeychecking") == "false"
    assert (one(jump, "user"), one(jump, "hostname"), one(jump, "port")) == ("j", "b", "2")


def test_lb_shares_one_connection_and_ends_it(
    tmp_path: Path, short_dir: Path, identity: str
) -> None:
    ctl = short_dir / "c"
    runner = lb_runner(load("lab3"), tmp_path, identity, control_dir=ctl)
    conf = resolved(list(runner.argv))
    assert one(conf, "controlmaster") == "auto" and one(conf, "controlpersist") == "30"
    path = one(conf, "controlpath")
    assert path.startswith(f"{ctl}/") and re.fullmatch(r"[0-9a-f]{40}", path.rsplit("/", 1)[1])
    assert one(proxy_conf(conf), "controlmaster") == "false"  # the jump's ssh shares none
    close = transport.exit_argv(runner.ssh)
    assert close is not None and close[-4:-2] == ["-O", "exit"]
    assert resolved(close) == conf  # the same master: the same resolved options
    deep = tmp_path / ("d" * 100)  # too long for a socket: one connection per command
    assert transport.exit_argv(lb_runner(load("lab3"), tmp_path, control_dir=deep).ssh) is None
    assert transport.exit_argv(lb_runner(load("lab3"), tmp_path).ssh) is None


def test_closing_a_shared_connection_that_is_not_up(short_dir: Path) -> None:
    """``-O exit`` with no master only talks to the (missing) socket."""
    opts = SshOptions("root", "127.0.0.1", 1, control_dir=short_dir)
    close = transport.exit_argv(opts)
    assert close is not None
    done = subprocess.run(
        [require_tool("ssh"), *close[1:]], capture_output=True, text=True, timeout=10, check=False
    )
    assert done.returncode == 255 and "Control socket" in done.stderr
    transport.close_shared(opts)  # quiet either way


# --- a verify client and a lab guest ---------------------------------------


@pytest.mark.parametrize(("target", "port"), [("ops@client.example:2200", "2200"), ("ops@c", "22")])
def test_client_host(tmp_path: Path, identity: str, target: str, port: str) -> None:
    known = tmp_path / "kh"
    argv = client_argv(target, identity, str(known))
    assert argv[-2] == "--"
    conf = resolved(argv)
    d = parse_destination(target)
    assert (one(conf, "user"), one(conf, "hostname"), one(conf, "port")) == (d.user, d.host, port)
    assert one(conf, "stricthostkeychecking") == "true"  # never trusted on first use
    assert one(conf, "userknownhostsfile") == str(known)
    assert one(conf, "globalknownhostsfile") != "/dev/null"  # the system's file counts
    assert conf["identityfile"] == [identity] and one(conf, "identitiesonly") == "yes"
    assert one(conf, "batchmode") == "yes" and one(conf, "connecttimeout") == "5"
    plain = resolved(client_argv(target, None, None))  # the user's own files and keys
    assert one(plain, "stricthostkeychecking") == "true"
    assert "/.ssh/known_hosts" in one(plain, "userknownhostsfile")  # ssh's own default
    assert one(plain, "identitiesonly") == "no"


@pytest.mark.parametrize(("batch", "mux"), [(True, True), (False, False)])
def test_lab_guest(tmp_path: Path, short_dir: Path, batch: bool, mux: bool) -> None:
    run_dir = short_dir / "run"
    (tmp_path / paths.KEY.name).write_text("")
    (tmp_path / paths.HOST_KEY.name).write_text("ssh-ed25519 AAAAC3Nza root@lab\n")
    argv = guest.ssh_argv(batch=batch, port=2299, mux=mux, run_dir=run_dir, cache=tmp_path)
    assert argv[-2] == "--"
    conf = resolved(argv)
    assert endpoint(conf) == ("root", "127.0.0.1", "2299")
    known = run_dir / "known_hosts.127.0.0.1.2299"
    assert known.read_text() == "[127.0.0.1]:2299 ssh-ed25519 AAAAC3Nza\n"
    assert one(conf, "userknownhostsfile") == str(known)
    assert one(conf, "stricthostkeychecking") == "true"
    assert conf["identityfile"] == [str(tmp_path / paths.KEY.name)]
    assert one(conf, "identitiesonly") == "yes"
    assert one(conf, "connecttimeout") == "5" and one(conf, "loglevel") == "ERROR"
    assert (one(conf, "serveraliveinterval"), one(conf, "serveralivecountmax")) == ("5", "3")
    assert one(conf, "batchmode") == ("yes" if batch else "no")
    if mux:
        assert one(conf, "controlmaster") == "auto" and one(conf, "controlpersist") == "60"
        assert one(conf, "controlpath").startswith(f"{run_dir / 'mux'}/")
    else:
        assert one(conf, "controlmaster") == "false" and "controlpath" not in conf


def test_the_destination_is_never_read_as_an_option() -> None:
    conf_argv = transport.ssh_argv(SshOptions("u", "-oProxyCommand=touch /nonexistent"))
    done = subprocess.run(
        [require_tool("ssh"), "-G", "-F", "/dev/null", *conf_argv[1:]],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert "proxycommand" not in done.stdout


# --- the destination parser ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("root@h", Destination("root", "h", None)),
        ("ops@10.0.0.1:2222", Destination("ops", "10.0.0.1", 2222)),
        ("a@b:65535", Destination("a", "b", 65535)),
        ("a@h:00022", Destination("a", "h", 22)),
        ("a@h%eth0", Destination("a", "h%eth0", None)),
    ],
)
def test_parser_accepts(text: str, want: Destination) -> None:
    assert parse_destination(text) == want


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("host", "must look like user@host or user@host:port"),
        ("", "must look like"),
        ("@b", "must look like"),
        ("a@", "must look like"),
        ("a@b@c", "must look like"),
        ("a b@c", "must look like"),
        ("a@b:", "must look like"),
        ("a@h:x", "must look like"),
        ("a@[::1]:22", "must look like"),
        ("a@b:123456", "must look like"),
        ("a@h\n", "must look like"),
        ("a@b:0", "has port 0: a port is 1-65535"),
        ("a@b:65536", "has port 65536"),
        ("-oProxyCommand=x@h", "must not start with '-'"),
        ("a@-h", "must not start with '-'"),
        ("a@h;rm", "no shell metacharacter"),
    ],
)
def test_parser_refuses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_destination(text)


def test_settings_show_the_parsers_reason() -> None:
    cfg = dev_config()
    cfg["keepsource:lb"]["ssh"]["jumpHost"] = "ops@bastion:0"
    with pytest.raises(ConfigError, match=r"jumpHost.*has port 0: a port is 1-65535"):
        parse(cfg)


# --- sudo -n ---------------------------------------------------------------

AWKWARD = ["a b", "it's", '"q"', "$HOME", "`id`", "$(id)", "; exit 3", "\\n", "*", "new\nline", ""]


def run_sh(line: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``line`` as sshd hands it to the login shell, with a ``sudo`` that
    insists on ``-n`` and logs its arguments, then runs them."""
    stub = tmp_path / "bin"
    stub.mkdir(exist_ok=True)
    (stub / "sudo").write_text(
        '#!/bin/sh\n[ "$1" = -n ] || exit 97\nshift\necho "$1" >>"$SUDO_LOG"\nexec "$@"\n'
    )
    (stub / "sudo").chmod(0o755)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "SUDO_LOG": str(tmp_path / "log")}
    return subprocess.run(
        ["/bin/sh", "-c", line], capture_output=True, text=True, env=env, timeout=10, check=False
    )


@pytest.mark.parametrize("stack", ["dev", "lab3"])
def test_sudo_wrapper_round_trips_through_the_shell(tmp_path: Path, stack: str) -> None:
    conn = lb_connection(load(stack))
    command = "printf '%s\\0' " + shlex.join(AWKWARD)
    done = run_sh(conn.command(command), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\0")[:-1] == AWKWARD
    log = tmp_path / "log"
    assert (log.read_text() if log.exists() else "") == ("/bin/sh\n" if conn.sudo else "")


@pytest.mark.parametrize("user", ["root", "ops"])
def test_step_command_runs_as_root_with_its_name(tmp_path: Path, user: str) -> None:
    script = 'printf "%s|%s" "$0" ' + shlex.quote("it's $HOME")
    done = run_sh(Step.command_line(script, "gateway", user), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "keepsource-gateway|it's $HOME"
    assert (tmp_path / "log").exists() == (user != "root")


def test_sudo_never_prompts_and_fails_without_rights(tmp_path: Path) -> None:
    line = transport.as_root("ops", ["true"])
    assert line.split()[:2] == ["sudo", "-n"]  # -n: no TTY over ssh, never a prompt
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sudo").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "sudo").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run(["/bin/sh", "-c", line], env=env, timeout=10, check=False)
    assert done.returncode == 1
