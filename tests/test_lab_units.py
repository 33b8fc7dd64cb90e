"""The lab's pure parts, without root or QEMU: the CNI stand-in's filter is
derived from the rendered manifests, and iptables accepts what it writes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from keepsource.artifacts import artifacts
from keepsource.stackfile import load
from lab import hosts, image
from tests.conftest import require_tool


def _manifests() -> str:
    return artifacts(load("local"))["manifests.yaml"]


def test_filter_follows_the_rendered_policy() -> None:
    fixed = hosts.pod_filter(_manifests(), seed=False, check_source="172.16.0.254")
    assert fixed == hosts.PodFilter(30080, 80, ("192.168.0.10/32", "172.16.0.254/32"))
    seed = hosts.pod_filter(_manifests(), seed=True, check_source="172.16.0.254")
    assert seed.admitted == ("192.168.0.10/32",)


def test_filter_changes_with_the_manifests() -> None:
    text = _manifests().replace("192.168.0.10/32", "192.168.0.64/26")
    f = hosts.pod_filter(text, seed=False, check_source="172.16.0.254")
    assert "192.168.0.64/26" in f.admitted and "192.168.0.10/32" not in f.admitted


def test_filter_refuses_a_cluster_service() -> None:
    text = _manifests().replace("externalTrafficPolicy: Local", "externalTrafficPolicy: Cluster")
    with pytest.raises(SystemExit, match="externalTrafficPolicy"):
        hosts.pod_filter(text, seed=False, check_source="172.16.0.254")


@pytest.mark.parametrize("mode", ["pod", "drop", "refuse"])
def test_worker_rules_pass_iptables_restore(tmp_path: Path, mode: str) -> None:
    tool = require_tool("iptables-restore")
    f = hosts.pod_filter(_manifests(), seed=False, check_source="172.16.0.254")
    rules = hosts.worker_rules(f, mode)
    (tmp_path / "rules").write_text(rules)
    done = subprocess.run(
        ["unshare", "-n", tool, "--test", str(tmp_path / "rules")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert ("REDIRECT --to-ports 80" in rules) == (mode == "pod")
    assert ("-s 172.16.0.254/32 --dport 80 -j ACCEPT" in rules) == (mode == "pod")
    assert ("--dport 30080 -j DROP" in rules) == (mode == "drop")
    assert ("tcp-reset" in rules) == (mode == "refuse")


def test_mirror_is_read_from_this_machines_apt_configuration() -> None:
    url = image.mirror()
    assert url.startswith(("http://", "https://", "file:"))
    sources = "".join(
        p.read_text()
        for p in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
        if p.is_file()
    )
    assert url in sources


def test_image_recipe_tracks_its_contents() -> None:
    before = image._recipe()
    image.IMAGE_PACKAGES.append("hello")
    try:
        assert image._recipe() != before
    finally:
        image.IMAGE_PACKAGES.remove("hello")
    assert image._recipe() == before
    assert "keepalived" not in image.IMAGE_PACKAGES and "ipvsadm" not in image.IMAGE_PACKAGES
