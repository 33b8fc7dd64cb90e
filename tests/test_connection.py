"""keepsource's connection model: what the program and `verify` both use."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from keepsource.connection import lb_connection, read_host_key_file, ssh_argv
from keepsource.settings import ConfigError, parse
from keepsource.stackfile import load
from keepsource.verify import _ssh_argv as _client_ssh_argv
from keepsource.verify import lb_runner, runner_for
from tests.conftest import STAND_IN_HOST_KEY, dev_config


def test_dev_connection_is_root_direct_and_pinned() -> None:
    s = load("dev")
    conn = lb_connection(s)
    assert (conn.lb.host, conn.lb.port, conn.lb.user) == ("192.168.0.1", 22, "root")
    assert conn.jump is None and not conn.sudo and not conn.insecure
    assert conn.command("ipvsadm -Ln") == "ipvsadm -Ln"
    kind, blob = (s.lb_nodes[0].ssh.host_key or "").split()[:2]
    assert conn.known_hosts() == f"192.168.0.1 {kind} {blob}\n"


def test_lab3_goes_through_the_jump_host_with_sudo() -> None:
    s = load("lab3")
    conn = lb_connection(s)
    assert conn.sudo
    assert conn.command("iptables-save -t nat") == "sudo -n /bin/sh -c 'iptables-save -t nat'"
    lines = conn.known_hosts().splitlines()
    assert lines[0].startswith("[10.20.0.5]:2222 ssh-ed25519 ")
    assert lines[1].startswith("bastion.example.internal ssh-ed25519 ")
    argv = ssh_argv(conn, Path("/tmp/kh"), "id_test")
    assert argv[0] == "ssh" and argv[-2:] == ["--", "ops@10.20.0.5"]
    assert "StrictHostKeyChecking=yes" in argv and "UserKnownHostsFile=/tmp/kh" in argv
    assert "StrictHostKeyChecking=accept-new" not in " ".join(argv)
    proxy = next(a for a in argv if a.startswith("ProxyCommand="))
    # The jump's own ssh checks its pinned key against the same file.
    assert "UserKnownHostsFile=/tmp/kh" in proxy and "StrictHostKeyChecking=yes" in proxy
    assert proxy.endswith("-W %h:%p -- ops@bastion.example.internal")
    assert argv[argv.index("-p") + 1] == "2222"


def test_insecure_opt_out_turns_checking_off_only_by_name() -> None:
    cfg = dev_config()
    del cfg["keepsource:lb"]["ssh"]["hostKey"]
    cfg["keepsource:lb"]["ssh"]["insecureAcceptAnyHostKey"] = True
    conn = lb_connection(parse(cfg))
    assert conn.insecure and conn.known_hosts() == ""
    argv = ssh_argv(conn, None, None)
    assert "StrictHostKeyChecking=no" in argv and "UserKnownHostsFile=/dev/null" in argv


def test_host_key_file_is_read_relative_to_the_root(tmp_path: Path) -> None:
    s = load("local")
    with pytest.raises(ConfigError, match=r"keepsource:lb\.ssh\.hostKeyFile"):
        lb_connection(s)  # not read yet: refused, never unpinned
    with pytest.raises(ConfigError, match="cannot read"):
        read_host_key_file(s, tmp_path)
    path = tmp_path / (s.lb_nodes[0].ssh.host_key_file or "")
    path.parent.mkdir(parents=True)
    path.write_text("not a key\n")
    with pytest.raises(ConfigError, match="OpenSSH public key"):
        read_host_key_file(s, tmp_path)
    path.write_text(STAND_IN_HOST_KEY)
    pinned = read_host_key_file(s, tmp_path)
    assert pinned.lb_nodes[0].ssh.host_key == STAND_IN_HOST_KEY.strip()
    assert lb_connection(pinned).lb.host_key == STAND_IN_HOST_KEY.strip()


def test_verify_reaches_the_lb_through_the_same_model(tmp_path: Path) -> None:
    """verify's LB runner: the program's host, port, user, jump, pinned keys, sudo."""
    seen: list[list[str]] = []
    known: list[str] = []

    def fake_run(argv: list[str], timeout: float) -> tuple[int, str]:
        seen.append(argv)
        kh = next(a for a in argv if a.startswith("UserKnownHostsFile="))
        known.append(Path(kh.split("=", 1)[1]).read_text())
        return 0, "ok"

    s = load("lab3")
    run = lb_runner(s, tmp_path, identity="id_test", run=fake_run)
    assert run("ipvsadm -Ln") == (0, "ok")
    argv = seen[0]
    assert argv[-3:-1] == ["--", "ops@10.20.0.5"]
    assert argv[-1] == "sudo -n /bin/sh -c 'ipvsadm -Ln'"
    assert any(a.startswith("ProxyCommand=") for a in argv)
    assert known[0] == lb_connection(s).known_hosts()


def test_every_ssh_argv_ends_its_options_before_the_destination() -> None:
    """Defence in depth next to the settings' refusal of a leading '-': the
    LB's argv, the jump's ProxyCommand and verify's client argv all put '--'
    right before the destination."""
    assert ssh_argv(lb_connection(load("dev")), Path("/tmp/kh"), None)[-2:] == [
        "--",
        "root@192.168.0.1",
    ]
    client = _client_ssh_argv("root@192.168.0.10:2222", "id_test", "/tmp/kh")
    assert client[-2:] == ["--", "root@192.168.0.10"]
    assert client[client.index("-p") + 1] == "2222"
    seen: list[list[str]] = []

    def fake_run(argv: list[str], timeout: float) -> tuple[int, str]:
        seen.append(argv)
        return 0, ""

    runner_for("ssh", "root@192.168.0.10", None, run_argv=fake_run)("true")
    assert seen[0][-3:] == ["--", "root@192.168.0.10", "true"]


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client here to parse the argv")
def test_openssh_reads_the_argv_as_meant() -> None:
    """``ssh -G`` parses the argv and prints the resolved config without
    connecting: the destination after '--' is the LB, with its user and port."""
    argv = ssh_argv(lb_connection(load("lab3")), Path("/tmp/kh"), "id_test")
    done = subprocess.run(
        ["ssh", "-G", *argv[1:]], capture_output=True, text=True, check=False, timeout=10
    )
    assert done.returncode == 0, done.stderr
    conf = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert (conf["user"], conf["hostname"], conf["port"]) == ("ops", "10.20.0.5", "2222")
    assert "-W %h:%p -- ops@bastion.example.internal" in conf["proxycommand"]


def test_verify_shares_one_connection_per_lb_and_ends_it(tmp_path: Path) -> None:
    """verify's commands on one LB share a connection (ControlMaster) in a
    private directory; close() ends it with ``-O exit`` before the ``--``."""
    seen: list[list[str]] = []

    def fake_run(argv: list[str], timeout: float) -> tuple[int, str]:
        seen.append(argv)
        return 0, ""

    ctl = Path("/tmp/ks-ctl")  # nothing is created: the runner's run is a fake
    run = lb_runner(load("lab3"), tmp_path, identity="id_test", control_dir=ctl, run=fake_run)
    run("true")
    run.close()
    assert f"ControlPath={ctl}/%C" in seen[0] and "ControlMaster=auto" in seen[0]
    assert seen[1][-4:] == ["-O", "exit", "--", "ops@10.20.0.5"]
    assert seen[1][:-4] == seen[0][:-3]  # the same options reach the same master
    plain = lb_runner(load("lab3"), tmp_path, identity="id_test", run=fake_run)
    plain.close()  # nothing shared: nothing to end
    assert len(seen) == 2 and not any("ControlMaster" in a for a in plain.argv)
    deep = tmp_path / ("d" * 90)
    long_dir = lb_runner(load("lab3"), tmp_path, identity="id_test", control_dir=deep)
    assert not any("ControlMaster" in a for a in long_dir.argv)  # too long for a socket
