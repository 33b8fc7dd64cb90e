"""keepsource:metrics with the real tools: the VRRP FIFO reader (shellcheck,
then run on a FIFO of its own: the file it writes, the count it keeps) read by Debian's own node
exporter's textfile collector, and the exporter's drop-in flags accepted by
that binary. The exporter comes from Debian's package, unpacked by run-tests
(never installed: its service would start on this machine)."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from keepsource.render import metrics
from keepsource.settings import parse
from keepsource.stackfile import load_config
from tests.conftest import free_port, require_tool

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


def test_the_fifo_reader_passes_shellcheck(tmp_path: Path) -> None:
    tool = require_tool("shellcheck")
    done = subprocess.run(
        [tool, "-s", "bash", str(_script(tmp_path))], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout


def _scrape(url: str) -> str:
    for _ in range(50):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing served {url}")


class Reader:
    """The script reading a FIFO of its own, as keepalived runs it
    (``vrrp_notify_fifo_script``): lines written in, the textfile read back."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.fifo = tmp / "vrrp.fifo"
        os.mkfifo(self.fifo)
        self.proc = subprocess.Popen(
            [str(_script(tmp)), str(self.fifo)], stderr=subprocess.PIPE, text=True
        )
        self.prom = tmp / "textfile/keepsource-vrrp.prom"

    def send(self, *lines: str) -> None:
        """One writer's open of the FIFO (keepalived keeps it open; a reload reopens)."""
        with open(self.fifo, "w") as f:
            for line in lines:
                f.write(line + "\n")
                f.flush()

    def wait_count(self, n: int) -> str:
        """The textfile once the script has counted ``n`` changes (at most 30 s:
        200 changes took over 10 s once, with two other test runs on the 2 cores)."""
        want = f'keepsource_vrrp_transitions_total{{group="KEEPSOURCE"}} {n}\n'
        text = ""
        for _ in range(600):
            text = self.prom.read_text() if self.prom.exists() else ""
            if want in text:
                return text
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            time.sleep(0.05)
        raise AssertionError(f"no {want!r} in {text!r}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_the_exporter_serves_the_state_keepalived_reported(
    tmp_path: Path, node_exporter: Path
) -> None:
    """keepalived writes GROUP "NAME" STATE PRIORITY lines into the FIFO:
    Debian's node exporter, with the flags keepsource's drop-in gives it (its
    address made loopback here), serves the state and the count of changes."""
    reader = Reader(tmp_path)
    cfg = load_config("local-ha")
    s = parse(cfg)
    assert s.metrics is not None  # the pair's stack has metrics
    dropin = metrics.render_dropin(s, s.lb_nodes[0])
    line = next(ln for ln in dropin.splitlines() if ln.startswith("ExecStart=/"))
    flags = line.split(" ", 1)[1]
    port = free_port()
    argv = [
        str(node_exporter),
        *(f.replace(metrics.listen(s, s.lb_nodes[0]), f"127.0.0.1:{port}") for f in flags.split()),
    ]
    argv = [a.replace(metrics.TEXTFILE_DIR, str(tmp_path / "textfile")) for a in argv]
    proc = None
    try:
        reader.send('INSTANCE "VI_EXTERNAL" MASTER 150', 'GROUP "KEEPSOURCE" MASTER 150')
        reader.wait_count(1)  # the instance's line is not counted
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        text = _scrape(f"http://127.0.0.1:{port}/metrics")
        assert 'keepsource_vrrp_state{group="KEEPSOURCE",state="master"} 1' in text, text[-2000:]
        assert 'keepsource_vrrp_state{group="KEEPSOURCE",state="backup"} 0' in text
        assert 'keepsource_vrrp_transitions_total{group="KEEPSOURCE"} 1' in text
        assert "node_textfile_scrape_error 0" in text  # the file parsed
        # keepalived reopened the FIFO (a reload): the reader goes on.
        reader.send('GROUP "KEEPSOURCE" BACKUP 100')
        reader.wait_count(2)
        text = _scrape(f"http://127.0.0.1:{port}/metrics")
        assert 'keepsource_vrrp_state{group="KEEPSOURCE",state="backup"} 1' in text
        assert 'keepsource_vrrp_transitions_total{group="KEEPSOURCE"} 2' in text
        # A name that is no label value is skipped, not counted: the next
        # change is the third.
        reader.send('GROUP "x\\"y" FAULT 1', 'GROUP "KEEPSOURCE" FAULT 0')
        text = reader.wait_count(3)
        assert 'state="fault"} 1' in text and 'group="x' not in text
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        reader.close()


def test_changes_written_back_to_back_end_in_the_last_state(tmp_path: Path) -> None:
    """The race the FIFO fixes: 200 changes written at once (keepalived's
    BACKUP then MASTER at start, a flapping link) end in the last one's state,
    each counted once; the count survives the reader's restart."""
    reader = Reader(tmp_path)
    try:
        states = ["BACKUP", "MASTER"] * 100
        reader.send(*(f'GROUP "KEEPSOURCE" {s} 100' for s in states))
        text = reader.wait_count(200)
        assert 'keepsource_vrrp_state{group="KEEPSOURCE",state="master"} 1' in text
        assert 'state="backup"} 0' in text
    finally:
        reader.close()
    (tmp_path / "textfile/keepsource-vrrp.prom").unlink()
    tmp_path.joinpath("vrrp.fifo").unlink()
    again = Reader(tmp_path)
    try:
        again.send('GROUP "KEEPSOURCE" BACKUP 100')
        assert 'state="backup"} 1' in again.wait_count(201)
    finally:
        again.close()


def test_a_misspelt_flag_is_refused_by_the_exporter(node_exporter: Path) -> None:
    """The check above can fail: the binary refuses a flag it does not know."""
    done = subprocess.run(
        [str(node_exporter), "--collector.ipvss", "--web.listen-address=127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0 and "ipvss" in done.stderr
