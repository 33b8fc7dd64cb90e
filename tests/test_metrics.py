"""keepsource:metrics with the real tools: the VRRP notify script (shellcheck,
then run: the file it writes, the count it keeps) read by Debian's own node
exporter's textfile collector, and the exporter's drop-in flags accepted by
that binary. The exporter comes from Debian's package, unpacked by run-tests
(never installed: its service would start on this machine)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from keepsource.render import metrics
from keepsource.settings import parse
from keepsource.stackfile import load_config
from tests.conftest import require_tool

PACKAGE = "prometheus-node-exporter"


@pytest.fixture(scope="module")
def node_exporter() -> Path:
    """Debian's node exporter binary, unpacked from its package by run-tests
    (KEEPSOURCE_NODE_EXPORTER): no network in the test."""
    path = Path(os.environ.get("KEEPSOURCE_NODE_EXPORTER", "/nonexistent"))
    if not path.is_file():
        pytest.fail(f"{PACKAGE} is not unpacked: run ./run-tests (KEEPSOURCE_NODE_EXPORTER={path})")
    return path


def _script(tmp: Path) -> Path:
    text = metrics.vrrp_state_script()
    text = text.replace(metrics.TEXTFILE_DIR, str(tmp / "textfile"))
    text = text.replace(metrics.VRRP_COUNT_PATH, str(tmp / "state/count"))
    path = tmp / "vrrp-state"
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_the_notify_script_passes_shellcheck(tmp_path: Path) -> None:
    tool = require_tool("shellcheck")
    done = subprocess.run(
        [tool, "-s", "bash", str(_script(tmp_path))], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(url: str) -> str:
    for _ in range(50):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing served {url}")


def test_the_exporter_serves_the_state_keepalived_reported(
    tmp_path: Path, node_exporter: Path
) -> None:
    """keepalived calls the notify with GROUP NAME STATE PRIORITY: Debian's
    node exporter, with the flags keepsource's drop-in gives it (its address
    made loopback here), serves the state and the count of changes."""
    script = _script(tmp_path)
    cfg = load_config("local-ha")  # the pair, with metrics turned on
    cfg["keepsource:metrics"] = {"scrapers": ["172.16.0.1/32"]}
    s = parse(cfg)
    dropin = metrics.render_dropin(s, s.lb_nodes[0])
    line = next(ln for ln in dropin.splitlines() if ln.startswith("ExecStart=/"))
    flags = line.split(" ", 1)[1]
    port = _free_port()
    argv = [
        str(node_exporter),
        *(f.replace(metrics.listen(s, s.lb_nodes[0]), f"127.0.0.1:{port}") for f in flags.split()),
    ]
    argv = [a.replace(metrics.TEXTFILE_DIR, str(tmp_path / "textfile")) for a in argv]
    subprocess.run([str(script), "GROUP", "KEEPSOURCE", "MASTER", "150"], check=True, timeout=30)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        text = _scrape(f"http://127.0.0.1:{port}/metrics")
        assert 'keepsource_vrrp_state{group="KEEPSOURCE",state="master"} 1' in text, text[-2000:]
        assert 'keepsource_vrrp_state{group="KEEPSOURCE",state="backup"} 0' in text
        assert 'keepsource_vrrp_transitions_total{group="KEEPSOURCE"} 1' in text
        assert "node_textfile_scrape_error 0" in text  # the file parsed
        subprocess.run([str(script), "GROUP", "KEEPSOURCE", "BACKUP", "100"], check=True)
        text = _scrape(f"http://127.0.0.1:{port}/metrics")
        assert 'keepsource_vrrp_state{group="KEEPSOURCE",state="backup"} 1' in text
        assert 'keepsource_vrrp_transitions_total{group="KEEPSOURCE"} 2' in text
        # A name that is no label value is ignored: nothing rewritten.
        before = (tmp_path / "textfile/keepsource-vrrp.prom").read_text()
        subprocess.run([str(script), "GROUP", 'x"y', "FAULT", "1"], check=True)
        assert (tmp_path / "textfile/keepsource-vrrp.prom").read_text() == before
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_misspelt_flag_is_refused_by_the_exporter(node_exporter: Path) -> None:
    """The check above can fail: the binary refuses a flag it does not know."""
    done = subprocess.run(
        [str(node_exporter), "--collector.ipvss", "--web.listen-address=127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0 and "ipvss" in done.stderr
