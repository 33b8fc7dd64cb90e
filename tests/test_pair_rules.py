"""A pair's VRRP and IPVS sync only from the pair: keepsource's filter chain,
loaded by the real iptables in a network namespace of this test's own, with
VRRP and sync datagrams sent from a second namespace from a peer's address
and from a stranger's. The rule counters say which rule took each."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepsource.render.gateway import INPUT_CHAIN, SYNC_PORT, render_input_rules
from keepsource.stackfile import load
from tests.conftest import require_tool

SEND = """
import socket, sys
src, dst, kind = sys.argv[1:4]
if kind == "vrrp":
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    payload = bytes([0x31, 51, 254, 1, 0, 100, 0, 0]) + socket.inet_aton(dst)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"forged sync message"
s.bind((src, 0))
s.sendto(payload, (dst, 8848 if kind == "sync" else 0))
"""


def _ns(name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", name, *argv], capture_output=True, text=True, timeout=30, check=True
    )


@pytest.fixture
def pair_link(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two namespaces on one veth: the LB (lb1's addresses) and the other
    end with lb2's addresses and a stranger's."""
    if os.geteuid() != 0:
        pytest.fail("needs root (network namespaces): run ./run-tests as root")
    require_tool("iptables-restore")
    tag = uuid.uuid4().hex[:6]
    lb, other = f"kst-lb-{tag}", f"kst-o-{tag}"
    for ns in (lb, other):
        subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        subprocess.run(
            [
                "ip",
                "link",
                "add",
                "v-lb",
                "netns",
                lb,
                "type",
                "veth",
                "peer",
                "v-o",
                "netns",
                other,
            ],
            check=True,
            timeout=30,
        )
        _ns(lb, "ip", "addr", "add", "192.168.0.2/24", "dev", "v-lb")
        _ns(lb, "ip", "addr", "add", "172.16.0.252/24", "dev", "v-lb")
        _ns(other, "ip", "addr", "add", "192.168.0.3/24", "dev", "v-o")
        _ns(other, "ip", "addr", "add", "172.16.0.253/24", "dev", "v-o")
        _ns(other, "ip", "addr", "add", "192.168.0.66/24", "dev", "v-o")
        for ns, dev in ((lb, "v-lb"), (other, "v-o")):
            _ns(ns, "ip", "link", "set", dev, "up")
        yield lb, other
    finally:
        for ns in (lb, other):
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)


def _counts(lb: str) -> dict[str, int]:
    """Packets per rule of the chain, keyed by its -S line."""
    rules = [
        r for r in _ns(lb, "iptables", "-S", INPUT_CHAIN).stdout.splitlines() if r.startswith("-A")
    ]
    counted = _ns(lb, "iptables", "-L", INPUT_CHAIN, "-v", "-n", "-x").stdout.splitlines()[2:]
    return {rule: int(line.split()[0]) for rule, line in zip(rules, counted, strict=True)}


def test_vrrp_and_sync_only_from_the_pair(pair_link: tuple[str, str], tmp_path: Path) -> None:
    lb, other = pair_link
    rules = tmp_path / "input.rules"
    rules.write_text("\n".join(render_input_rules(load("local-ha"))) + "\n")
    _ns(lb, "iptables-restore", "--noflush", str(rules))
    _ns(lb, "iptables", "-I", "INPUT", "1", "-j", INPUT_CHAIN)
    script = tmp_path / "send.py"
    script.write_text(SEND)
    for src in ("192.168.0.3", "192.168.0.66"):
        for kind in ("vrrp", "sync"):
            _ns(other, "python3", str(script), src, "192.168.0.2", kind)
    _ns(other, "python3", str(script), "172.16.0.253", "172.16.0.252", "sync")  # lb2's
    got = {rule: n for rule, n in _counts(lb).items() if n}
    sync = f"-p udp -m udp --dport {SYNC_PORT}"
    assert got == {
        f"-A {INPUT_CHAIN} -s 192.168.0.3/32 -p vrrp -j ACCEPT": 1,  # lb2's advert
        f"-A {INPUT_CHAIN} -p vrrp -j DROP": 1,  # the stranger's
        # Sync comes from the peer's internal address only.
        f"-A {INPUT_CHAIN} -s 172.16.0.253/32 {sync} -j ACCEPT": 1,
        f"-A {INPUT_CHAIN} {sync} -j DROP": 2,
    }, got
