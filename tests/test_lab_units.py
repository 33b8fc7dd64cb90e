"""The lab's pure parts, without root or QEMU: the CNI stand-in's filter is
derived from the rendered manifests, and iptables accepts what it writes; the
layouts (single and pair) and their addresses, each guest's kernel command line and what
the image's identity script makes of it; the run-state library."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from keepsource.artifacts import artifacts
from keepsource.stackfile import PROJECT_ROOT, load
from lab import guest, ha, hosts, image, kube, layout, paths, run
from tests.conftest import free_port, require_tool


def _manifests() -> str:
    return artifacts(load("local"))["manifests.yaml"]


def test_filter_follows_the_rendered_policy() -> None:
    # the local stack's checkAddress: the policy admits it, not the gateway
    fixed = hosts.pod_filter(_manifests(), seed=False, check_source="172.16.0.250")
    assert fixed == hosts.PodFilter(30080, 80, ("192.168.0.10/32", "172.16.0.250/32"))
    seed = hosts.pod_filter(_manifests(), seed=True, check_source="172.16.0.250")
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
    f = hosts.pod_filter(_manifests(), seed=False, check_source="172.16.0.250")
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
    assert ("-s 172.16.0.250/32 --dport 80 -j ACCEPT" in rules) == (mode == "pod")
    assert "172.16.0.254" not in rules  # the gateway address is no check source
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


# -- the layouts and their addresses --------------------------------------------------

#: The guest's network files before the pair (then baked into the image): the
#: single layout must still produce exactly these, now from the command line.
BEFORE_THE_PAIR = {
    "20-lbext.network": "[Match]\nName=lbext\n\n[Network]\nAddress=192.168.0.1/24\n"
    "LinkLocalAddressing=no\nIPv6AcceptRA=no\nConfigureWithoutCarrier=yes\n",
    "20-lbint.network": "[Match]\nName=lbint\n\n[Network]\nAddress=172.16.0.254/24\n"
    # the local stack's checkAddress (issue 15), after the gateway: secondary
    "Address=172.16.0.250/24\n"
    "LinkLocalAddressing=no\nIPv6AcceptRA=no\nConfigureWithoutCarrier=yes\n",
}


def _identity(tmp_path: Path, cmdline: str) -> tuple[int, str, dict[str, str]]:
    """Run the image's identity script on a command line; the files it wrote."""
    tmp_path.mkdir(exist_ok=True)
    script, line, out = tmp_path / "identity", tmp_path / "cmdline", tmp_path / "network"
    script.write_text(image.IDENTITY_SCRIPT)
    line.write_text(cmdline + "\n")
    done = subprocess.run(
        ["sh", str(script), str(line), str(out)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    files = {p.name: p.read_text() for p in sorted(out.glob("*"))} if out.is_dir() else {}
    return done.returncode, done.stderr, files


def test_single_layout_is_the_seed_lb_from_the_local_stack() -> None:
    (g,) = layout.guests(layout.SINGLE)
    assert (g.name, g.ssh_port, g.external, g.internal, g.haproxy) == (
        "lb",
        2222,
        ("192.168.0.1/24",),
        ("172.16.0.254/24", "172.16.0.250/24"),  # the gateway, then the checks' own
        True,
    )
    # as before the pair: the same taps, files and MACs
    assert g.taps == {"ext": "ks-lbext", "int": "ks-lbint"}
    assert (g.overlay, g.console, g.pidfile) == (paths.OVERLAY, paths.CONSOLE, paths.QEMU_PID)
    assert g.macs == {
        "mgmt": "52:54:00:4b:53:01",
        "lbext": "52:54:00:4b:53:02",
        "lbint": "52:54:00:4b:53:03",
    }
    # ... read from the stack file, not typed here
    config = layout.stack_config(layout.SINGLE)
    config["keepsource:lb"]["ssh"]["port"] = 2300
    assert layout.guests(layout.SINGLE, config)[0].ssh_port == 2300


def test_single_layout_network_files_are_todays(tmp_path: Path) -> None:
    (g,) = layout.guests(layout.SINGLE)
    rc, err, files = _identity(tmp_path, layout.kernel_cmdline(g))
    assert rc == 0, err
    assert files == BEFORE_THE_PAIR
    # the image no longer carries fixed addresses: networkd files in /etc win over /run
    assert not [k for k in image._files() if k.endswith((".network",)) and "lb" in k]


def test_pair_from_the_draft_stack_file() -> None:
    lb1, lb2 = layout.guests(layout.PAIR)
    assert (lb1.name, lb1.ssh_port, lb2.name, lb2.ssh_port) == ("lb1", 2222, "lb2", 2223)
    # lb1: its own addresses first, then the VIP and the gateway (the seed's fault state)
    assert lb1.external == ("192.168.0.2/24", "192.168.0.1/24")
    assert lb1.internal == ("172.16.0.252/24", "172.16.0.254/24", "172.16.0.250/24")
    assert lb1.haproxy and not lb2.haproxy
    assert (lb2.external, lb2.internal) == (
        ("192.168.0.3/24",),
        ("172.16.0.253/24", "172.16.0.249/24"),
    )
    # one bridge pair, so every NIC differs; every file and tap is the guest's own
    assert not set(lb1.macs.values()) & set(lb2.macs.values())
    for attr in ("overlay", "console", "pidfile", "known_hosts"):
        assert getattr(lb1, attr) != getattr(lb2, attr), attr
    taps = [*lb1.taps.values(), *lb2.taps.values(), "ks-lbext", "ks-lbint"]
    assert len(set(taps)) == 6 and all(len(t) <= 15 for t in taps)
    assert layout.stack_config(layout.PAIR)["keepsource:lb"]["hosts"][1]["name"] == "lb2"


def _pair_config() -> dict[str, Any]:
    return copy.deepcopy(layout.stack_config(layout.PAIR))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["keepsource:lb"]["hosts"].append({}),
            r"keepsource:lb.hosts\[2\].name: required",
        ),
        (
            lambda c: c["keepsource:lb"]["hosts"][1].update(externalAddress="10.0.0.3"),
            r"keepsource:lb.hosts\[1\].externalAddress: 10.0.0.3 is outside externalSubnet",
        ),
        (
            lambda c: c["keepsource:lb"]["hosts"][1].update(internalInterface="eth1"),
            r"lb.hosts\[1\].internalInterface must be lbint",
        ),
        (
            lambda c: c["keepsource:lb"]["hosts"][1]["ssh"].update(port=2222),
            r"keepsource:lb.hosts\[1\].ssh: the same SSH endpoint as hosts\[0\]",
        ),
        (
            lambda c: c["keepsource:lb"]["hosts"][0].update(externalAddress="192.168.0.1"),
            r"keepsource:lb.hosts\[0\].externalAddress: duplicate address 192.168.0.1",
        ),
        (
            lambda c: c["keepsource:lb"]["hosts"][0].pop("internalAddress"),
            r"keepsource:lb.hosts\[0\].internalAddress: required key is missing",
        ),
        (lambda c: c["keepsource:network"].update(vip="192.168.0.5"), r"seed HAProxy is built for"),
    ],
)
def test_the_pair_layout_refuses_what_the_lab_cannot_boot(change: Any, message: str) -> None:
    """The settings' own errors (the lab reads stacks through them), then the
    lab's: the image's interface names, the seed's addresses."""
    config = _pair_config()
    change(config)
    with pytest.raises(SystemExit, match=message):
        layout.guests(layout.PAIR, config)


def test_pair_identity_on_the_kernel_command_line(tmp_path: Path) -> None:
    lb1, lb2 = layout.guests(layout.PAIR)
    line1, line2 = layout.kernel_cmdline(lb1), layout.kernel_cmdline(lb2)
    assert line1.startswith(layout.BASE_CMDLINE) and line2.startswith(layout.BASE_CMDLINE)
    assert "systemd.hostname=lb1" in line1 and "ks.haproxy=off" not in line1
    assert "systemd.hostname=lb2" in line2 and line2.endswith(" ks.haproxy=off")
    rc, err, files = _identity(tmp_path / "lb1", line1)
    assert rc == 0, err
    assert "Address=192.168.0.2/24\nAddress=192.168.0.1/24\n" in files["20-lbext.network"]
    assert (
        "Address=172.16.0.252/24\nAddress=172.16.0.254/24\nAddress=172.16.0.250/24\n"
        in files["20-lbint.network"]
    )
    rc, err, files = _identity(tmp_path / "lb2", line2)
    assert rc == 0, err
    assert [ln for ln in files["20-lbext.network"].splitlines() if ln.startswith("Address=")] == [
        "Address=192.168.0.3/24"
    ]
    assert [ln for ln in files["20-lbint.network"].splitlines() if ln.startswith("Address=")] == [
        "Address=172.16.0.253/24",
        "Address=172.16.0.249/24",
    ]
    # HAProxy's unit skips itself on the guest booted with ks.haproxy=off
    dropin = image._files()["/etc/systemd/system/haproxy.service.d/keepsource-lab.conf"]
    assert "ConditionKernelCommandLine=!ks.haproxy=off" in dropin


@pytest.mark.parametrize(
    "cmdline",
    [
        layout.BASE_CMDLINE,  # no identity: no addresses, a failed unit, not a guess
        layout.BASE_CMDLINE + " ks.lbext=192.168.0.1/24 ks.lbint=",
        layout.BASE_CMDLINE + " ks.lbext=192.168.0.1/24;reboot ks.lbint=172.16.0.254/24",
    ],
)
def test_identity_script_refuses_a_missing_or_odd_identity(tmp_path: Path, cmdline: str) -> None:
    rc, err, files = _identity(tmp_path, cmdline)
    assert rc == 1 and "no valid ks.lb" in err
    assert not [name for name, text in files.items() if "192.168.0.1/24;reboot" in text]


def test_kernel_cmdline_refuses_bad_addresses() -> None:
    (g,) = layout.guests(layout.SINGLE)
    bad = layout.Guest(g.name, 0, 2222, ("192.168.0.1/24 init=/bin/sh",), g.internal, True)
    with pytest.raises(SystemExit, match="bad external addresses"):
        layout.kernel_cmdline(bad)


def test_image_names_every_guests_nics_and_runs_the_identity_first() -> None:
    files = image._files()
    for name in ("mgmt", "lbext", "lbint"):
        link = files[f"/etc/systemd/network/10-{name}.link"]
        for i in range(layout.GUESTS_MAX):
            assert layout.macs(i)[name] in link, (name, i)
    unit = files["/etc/systemd/system/keepsource-lab-identity.service"]
    assert "Before=systemd-networkd.service" in unit and "WantedBy=systemd-networkd.service" in unit
    before = image._recipe()
    changed = dict(files)
    changed["/usr/local/sbin/keepsource-lab-identity"] += "# changed\n"
    assert image._recipe(changed) != before  # the recipe (the cache key) follows the script
    assert image._recipe() == before


@pytest.mark.parametrize("script", sorted(p.name for p in paths.FILES.glob("*.sh")))
def test_the_labs_scripts_pass_shellcheck(script: str) -> None:
    tool = require_tool("shellcheck")
    done = subprocess.run(
        [tool, str(paths.FILES / script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout


def test_a_lab_script_runs_with_its_arguments_and_keeps_stdin() -> None:
    """guest.script's command line, run by a local shell as the guest's sshd
    would: the poller waits for GO on stdin, then polls its query."""
    line = guest.script("ipvs-poll", "2", "@@mark", "echo table")
    proc = subprocess.Popen(
        ["sh", "-c", line], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(0.5)
        go = time.time()
        out, _ = proc.communicate("GO\n", timeout=30)
    finally:
        proc.kill()
    rows = out.splitlines()
    assert rows[0::2] == ["table", "table"], rows
    marks = [r.split() for r in rows[1::2]]
    assert [m[0] for m in marks] == ["@@mark", "@@mark"] and all(len(m) == 3 for m in marks)
    assert float(marks[0][2]) >= go - 0.05  # its clock starts at GO, not before
    assert float(marks[1][1]) >= float(marks[0][1]) >= float(marks[0][2])


# -- the run-state library -------------------------------------------------------------


def test_state_records_the_layout(tmp_path: Path) -> None:
    file = tmp_path / "state.json"
    with pytest.raises(SystemExit, match="not up"):
        run.State.load(file)
    run.State(pod="worker02", phase="seed", pids=[1, 2], layout=layout.PAIR).save(file)
    assert run.State.load(file) == run.State("worker02", "seed", [1, 2], layout.PAIR)
    assert run.current_lab(file).layout == layout.PAIR
    # a state file written before the pair is the single layout
    file.write_text(json.dumps({"pod": "worker01", "phase": "fixed", "pids": []}))
    assert run.State.load(file).layout == layout.SINGLE
    assert [g.name for g in run.current_lab(file).guests] == ["lb"]


def test_labs_of_both_layouts_share_the_namespaces() -> None:
    single, pair = run.make_lab(layout.SINGLE), run.make_lab(layout.PAIR)
    assert [h.netns for h in single.all] == [h.netns for h in pair.all]
    assert pair.stack == "local-ha" and single.stack == "local"
    assert pair.guest("lb2").ssh_port == 2223
    assert single.guest(None).name == "lb"
    with pytest.raises(SystemExit, match="several guests: --lb"):
        pair.guest(None)
    with pytest.raises(SystemExit, match="no guest 'lb3'"):
        pair.guest("lb3")
    # the seed's policy (the fault) admits no LB's check source, in either layout
    assert run._filter(single, "seed").admitted == ("192.168.0.10/32",)
    assert run._filter(pair, "seed").admitted == ("192.168.0.10/32",)
    assert set(pair.check_sources) == {
        *("172.16.0.254", "172.16.0.252", "172.16.0.253"),  # the gateway, the hosts' own
        *("172.16.0.250", "172.16.0.249"),  # their checkAddresses
    }


def _step(port: int) -> run.Declared:
    return run.Declared("x", "127.0.0.1", port, "root")


def test_pair_apply_needs_a_command_for_every_guest() -> None:
    pair = run.make_lab(layout.PAIR)
    lb1, lb2 = pair.guests
    assert run.unserved([_step(2222)], pair.guests) == [lb2]
    assert run.unserved([_step(2222), _step(2223)], pair.guests) == []
    assert run.unserved([], pair.guests) == [lb1, lb2]
    # Whatever the program declares today, the refusal names the guest and
    # nothing is run (plan_steps only plans).
    try:
        steps = run.plan_steps(pair)
    except SystemExit as error:
        assert "declares no command for" in str(error) and "nothing was run" in str(error)
    else:
        assert run.unserved(steps, pair.guests) == []


# -- the long transfer and what the pod saw ----------------------------------------------


def test_big_body_is_made_once_with_its_digest(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    digest = hosts.make_big(www, size=3 * (1 << 20) + 5)
    body = www / hosts.BIG_NAME
    assert body.stat().st_size == 3 * (1 << 20) + 5
    assert digest == hashlib.sha256(body.read_bytes()).hexdigest()
    assert (tmp_path / "lab-big.sha256").read_text().strip() == digest
    mtime = body.stat().st_mtime_ns
    assert hosts.make_big(www, size=3 * (1 << 20) + 5) == digest
    assert body.stat().st_mtime_ns == mtime  # once per run
    assert hosts.BIG_SIZE == 64 * 1024 * 1024


def _http_server(
    directory: Path, port: int = 0, stderr: Any = subprocess.DEVNULL
) -> subprocess.Popen[str]:
    """python's http.server on loopback (the pod stand-in's server); port 0:
    the kernel picks one, which its first stdout line names."""
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    return subprocess.Popen(
        [*argv, "--directory", str(directory)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def test_access_log_names_the_peer_the_server_saw(tmp_path: Path) -> None:
    """python's http.server (the pod stand-in), on loopback: its log names the peer."""
    (tmp_path / "index.html").write_text("hi\n")
    log = tmp_path / "access.log"
    with open(log, "w") as out:
        server = _http_server(tmp_path, stderr=out)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N ..."
        port = int(line.split(" port ")[1].split()[0])
        for path in ("/", "/missing"):
            subprocess.run(
                ["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}{path}"],
                timeout=10,
                check=False,
            )
        deadline = time.monotonic() + 5
        while len(hosts.access_peers(log.read_text())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.kill()
        server.wait(timeout=10)
    assert hosts.access_peers(log.read_text()) == [
        ("127.0.0.1", "GET / HTTP/1.1", 200),
        ("127.0.0.1", "GET /missing HTTP/1.1", 404),
    ]


def test_resume_after_a_kill_from_the_probes_gaps() -> None:
    probe = {"start": 100.0, "gaps": [[5.0, 5.7]], "last_ok": 20.0, "requests": 200, "failures": 3}
    assert ha.resume_after(probe, 105.2) == pytest.approx(0.5)
    assert ha.resume_after(probe, 110.0) == pytest.approx(2 * ha.INTERVAL)
    assert ha.resume_after({**probe, "last_ok": 4.0}, 105.2) is None  # never answered again


def _served(log: Path, at_least: int, limit: float = 20.0) -> None:
    """Wait (bounded) until the server's access log holds ``at_least`` requests."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count('"GET / ') >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"the server saw fewer than {at_least} requests in {limit} s")


def test_probe_reports_gaps_on_loopback(tmp_path: Path) -> None:
    """lab.probe against a server, then nothing listening, then a server again:
    one gap. Paced by what the servers saw (their access logs), not by sleeps,
    so a busy machine (a slow interpreter start) changes nothing."""
    (tmp_path / "index.html").write_text("hi\n")
    stop = tmp_path / "stop"
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    with open(first, "w") as err:
        server = _http_server(tmp_path, stderr=err)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split(" port ")[1].split()[0])
        probe = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lab.probe",
                f"http://127.0.0.1:{port}/",
                "0.05",
                "60",
                str(stop),
                "0.5",
            ],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        _served(first, 2)
        server.kill()
        server.wait(timeout=10)
        time.sleep(0.6)  # the outage: at least 0.6 s of refused requests
        with open(second, "w") as err:
            server = _http_server(tmp_path, port, stderr=err)
        _served(second, 2)
        stop.touch()
        out, _ = probe.communicate(timeout=30)
    finally:
        server.kill()
        server.wait(timeout=10)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["failures"] >= 3, result
    assert len(result["gaps"]) == 1, result
    begin, end = result["gaps"][0]
    # At least the 0.6 s outage; at most that plus a busy machine's server start.
    assert 0.5 < end - begin < 10.0 and result["last_ok"] > end - 0.01, result


# -- what an up did, read from the engine's event log -------------------------------------


def _event(kind: str, urn: str, op: str = "", **more: Any) -> dict[str, Any]:
    meta = {"urn": urn, "type": "command:remote:Command", "op": op}
    if kind == "diagnosticEvent":
        return {kind: {"urn": urn, **more}}
    return {kind: {"metadata": meta, **more}}


def test_an_up_tells_what_ran_what_changed_and_what_failed() -> None:
    from lab import engine

    u = "urn:pulumi:local::keepsource::keepsource:lb:LoadBalancerHost$command:remote:Command::"
    events = [
        _event("resourcePreEvent", u + "lb-gateway", "same"),
        _event("resOutputsEvent", u + "lb-gateway", "same"),
        _event("resOutputsEvent", u + "lb-packages", "update"),
        _event("resOutputsEvent", u + "lb-keepalived-config", "create-replacement"),
        _event("resOutputsEvent", u + "lb-keepalived-config", "replace"),
        _event("resOutputsEvent", u + "lb-gateway", "delete-replaced"),
        _event("diagnosticEvent", u + "lb-cutover", severity="info", message="progress"),
        _event("diagnosticEvent", u + "lb-cutover", severity="error", message="pool empty"),
        _event("resOpFailedEvent", u + "lb-cutover", "update", status=1),
    ]
    steps = {
        n: engine.Step(n, u + n, f"keepsource: {n}: {r}", f"keepsource: {n}: {r}")
        for n, r in (
            ("lb-gateway", "changed"),  # from an earlier up: it did not run in this one
            ("lb-packages", "unchanged"),
            ("lb-keepalived-config", "changed"),
            ("lb-cutover", "changed"),
        )
    }
    up = engine.Up(False, 1.0, "", events, steps)
    assert up.ran() == ["lb-packages", "lb-keepalived-config"]
    assert up.ran_changed() == ["lb-keepalived-config"]
    assert up.failed() == {"lb-cutover": "pool empty"}
    assert up.sequence("resOutputsEvent", "::lb-packages") is not None


def test_the_export_check_finds_paths_and_tells_pulumis_own_records_apart() -> None:
    from lab import full

    state = {
        "deployment": {
            "manifest": {"plugins": [{"path": "/var/cache/x/pulumi-resource-command"}]},
            "resources": [
                {
                    "inputs": {"kubeconfig": "/root/.kube/config", "ok": "project:///x.py#3"},
                    "stackTrace": [{"sourcePosition": "project:///../../root/.pyenv/runpy.py#1"}],
                }
            ],
        }
    }
    found = full.leaks(state, ["/root/", "/var/cache/"])
    assert sorted(found) == [
        "deployment.manifest.plugins[0].path",
        "deployment.resources[0].inputs.kubeconfig",
        "deployment.resources[0].stackTrace[0].sourcePosition",
    ]
    ours = [w for w in found if not full._ENGINE_OWN.search(w)]
    assert ours == ["deployment.resources[0].inputs.kubeconfig"]


def test_the_stand_ins_follow_the_apis_traffic_policy() -> None:
    docs = [d for d in yaml.safe_load_all(_manifests()) if d]
    service = next(d for d in docs if d["kind"] == "Service")
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    local = hosts.api_filter(service, policy, ("172.16.0.11", "172.16.0.12"))
    assert local.admitted == ("192.168.0.10/32", "172.16.0.250/32")
    cluster = {**service, "spec": {**service["spec"], "externalTrafficPolicy": "Cluster"}}
    assert hosts.api_filter(cluster, policy, ("172.16.0.11",)).admitted == ()
    with pytest.raises(SystemExit, match="admits a node address"):
        hosts.api_filter(cluster, policy, ("172.16.0.250",))


def test_the_engines_event_order_and_step_reports_are_read_from_its_own_records() -> None:
    from lab import engine

    urn = "urn:pulumi:local::keepsource::keepsource:lb:LoadBalancerHost$command:remote:Command"

    def event(seq: int, kind: str, of: str) -> dict[str, Any]:
        return {"sequence": seq, "timestamp": 9, kind: {"metadata": {"urn": of}}}

    events = [
        event(3, "resourcePreEvent", f"{urn}::lb-packages"),
        event(5, "resOutputsEvent", "x::workload-deployment"),
        event(7, "resourcePreEvent", f"{urn}::lb-packages"),
    ]
    up = engine.Up(True, 1.0, "", events)
    assert up.sequence("resourcePreEvent", "::lb-packages") == 3  # the first one
    assert up.sequence("resOutputsEvent", "::workload-deployment") == 5
    assert up.sequence("resourcePreEvent", "::lb-gateway") is None
    state = {
        "deployment": {
            "resources": [
                {"type": "command:remote:Command", "urn": f"{urn}::lb-packages",
                 "outputs": {"stdout": "installing\nkeepsource: packages: unchanged\n"}},
                {"type": "pulumi:pulumi:Stack", "urn": "urn:pulumi:local::keepsource::s"},
            ]
        }
    }  # fmt: skip
    steps = engine.steps_of(state)
    assert list(steps) == ["lb-packages"]
    assert steps["lb-packages"].report == "keepsource: packages: unchanged"
    assert engine.Up(True, 1.0, "", [], steps).changed() == []


# -- every boot detects a stall and boots once more; reboots boot cold -----------------


class _Qemu:
    """A guest.Machine without qemu: the boots in ``stalls`` (1-based) never
    answer SSH; a reboot's ``systemctl reboot`` ends the qemu."""

    def __init__(self, stalls: set[int], boot_ids: tuple[str, ...] = ("old", "new")) -> None:
        self.calls: list[str] = []
        self.sent: list[str] = []
        self.boots = 0
        self.running = False
        self.stalls = stalls
        self.boot_ids = iter(boot_ids)

    def start(self, g: layout.Guest, fresh: bool = True) -> None:
        self.boots += 1
        self.running = True
        self.calls.append(f"start fresh={fresh}")

    def wait_ssh(
        self, timeout: float = 180, lb: layout.Guest | None = None, quiet_s: float | None = None
    ) -> float:
        assert timeout == guest.BOOT_LIMIT_S
        self.calls.append(f"wait {quiet_s:.0f}")
        if self.boots in self.stalls:
            raise SystemExit(
                f"lab: no SSH to the guest lb, and its disk did not move for"
                f" {quiet_s:.0f} s (90 s into the boot); console tail:\nrcu: INFO stall"
            )
        return 1.0

    def stop(self, g: layout.Guest | None = None, hard: bool = False, pidfile: Any = None) -> bool:
        self.calls.append(f"stop hard={hard}")
        was, self.running = self.running, False
        return was

    def ssh(self, command: str, **_: Any) -> subprocess.CompletedProcess[str]:
        self.sent.append(command)
        return subprocess.CompletedProcess(["ssh"], 0, "", "")

    def machine(self, reset_ends_qemu: bool = True) -> guest.Machine:
        def ssh(command: str, **kw: Any) -> subprocess.CompletedProcess[str]:
            if reset_ends_qemu:
                self.running = False  # -no-reboot: the guest's reset ends its qemu
            return self.ssh(command, **kw)

        return guest.Machine(
            start=self.start,
            stop=self.stop,
            wait_ssh=self.wait_ssh,
            console_tail=lambda *a, **k: "rcu: INFO stall\n",
            ssh=ssh,
            boot_id=lambda lb=None: next(self.boot_ids),
            qemu_pid=lambda lb=None, pidfile=None: 1 if self.running else None,
            close_shared_connection=lambda lb=None: None,
        )


def _single_guest() -> layout.Guest:
    return layout.guests(layout.SINGLE)[0]


def test_a_stalled_boot_is_shown_killed_and_booted_once_more(
    capsys: pytest.CaptureFixture[str],
) -> None:
    qemu = _Qemu(stalls={1})
    guest.boot(_single_guest(), fresh=False, stall_s=5, m=qemu.machine())
    assert qemu.calls == ["start fresh=False", "wait 5", "stop hard=True", "start fresh=False",
                          "wait 5"]  # fmt: skip
    out = capsys.readouterr().out
    assert "lb: no boot (no SSH to the guest lb, and its disk did not move for 5 s" in out
    assert "rcu: INFO stall" in out


def test_two_stalled_boots_fail_with_the_console() -> None:
    qemu = _Qemu(stalls={1, 2})
    with pytest.raises(SystemExit) as error:
        guest.boot(_single_guest(), stall_s=5, tries=2, m=qemu.machine())
    assert qemu.boots == 2
    assert "did not boot in 2 tries; the last one: no SSH to the guest lb" in str(error.value)
    assert "rcu: INFO stall" in str(error.value)


def test_a_reboot_is_the_guests_own_then_a_cold_boot_on_the_same_disk() -> None:
    qemu = _Qemu(stalls=set())
    qemu.running = True
    guest.reboot(_single_guest(), m=qemu.machine())
    assert qemu.sent == ["systemctl reboot"]
    assert qemu.calls == ["stop hard=True", "start fresh=False", f"wait {guest.STALL_S:.0f}"]
    assert "-no-reboot" in guest.qemu_argv(_single_guest())


def test_a_shutdown_that_hangs_is_cut_like_a_power_cut(
    capsys: pytest.CaptureFixture[str],
) -> None:
    qemu = _Qemu(stalls=set())
    qemu.running = True
    guest.reboot(_single_guest(), shutdown_s=0.5, m=qemu.machine(reset_ends_qemu=False))
    assert qemu.calls[0] == "stop hard=True"
    assert "did not end within 0 s; cutting its power" in capsys.readouterr().out


def test_a_boot_that_keeps_moving_is_waited_for_and_a_still_one_is_a_stall() -> None:
    """The real wait: a guest with no SSH (a closed port) whose disk keeps
    moving is waited for until the limit; one whose disk stops is a stall once
    still for ``quiet_s``, long before the limit; samples qemu did not answer
    (None) are no news, so they neither move the boot nor keep it alive."""
    import dataclasses

    g = dataclasses.replace(_single_guest(), ssh_port=free_port())
    ticks = iter(range(10**6))
    start = time.monotonic()
    with pytest.raises(SystemExit) as moving:
        guest.wait_ssh(2.5, lb=g, quiet_s=1.5, progress_of=lambda _: next(ticks), sample_s=0.3)
    assert "within 2.5 s" in str(moving.value) and time.monotonic() - start >= 2.5
    # moves once, then stays; then the same with every other sample unanswered (a wait
    # that took None for a move would see 40 moves and stall only after the last, ~14 s)
    for samples in ([1, 2], [1, 2, *[None, 2] * 20]):
        answers = iter(samples)

        def disk(_: layout.Guest, answers: Iterator[int | None] = answers) -> int | None:
            return next(answers, 2)

        start = time.monotonic()
        with pytest.raises(SystemExit) as still:
            guest.wait_ssh(60.0, lb=g, quiet_s=2.0, progress_of=disk, sample_s=0.3)
        waited = time.monotonic() - start
        assert "its disk did not move for 2 s" in str(still.value)
        # still for 2 s after the move seen at the first sample; far from the 60 s limit
        assert 2.0 + 0.3 <= waited < 8, waited


class _FakeQmp:
    """A unix socket that answers QMP as qemu does: a greeting, then one reply
    per command (after an asynchronous event, to be skipped)."""

    def __init__(self, path: Path, blockstats: object) -> None:
        import socket
        import threading

        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.blockstats = blockstats
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn, conn.makefile("rw") as f:
            f.write('{"QMP": {"version": {}}}\n')
            f.flush()
            for line in f:
                asked = json.loads(line)["execute"]
                answer = {} if asked == "qmp_capabilities" else self.blockstats
                f.write('{"event": "RESUME"}\n' + json.dumps({"return": answer}) + "\n")
                f.flush()

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=5)


def test_progress_sums_the_disks_operations_from_qmp(tmp_path: Path) -> None:
    qmp = tmp_path / "lb-qmp.sock"
    stats = [
        {"device": "virtio0", "stats": {"rd_operations": 700, "wr_operations": 27}},
        {"device": "", "stats": {"rd_operations": 3}},
    ]
    fake = _FakeQmp(qmp, stats)
    try:
        assert guest.progress(_single_guest(), qmp=qmp) == 730
    finally:
        fake.close()
    assert guest.progress(_single_guest(), qmp=tmp_path / "none.sock") is None  # no news


def test_a_started_guest_is_only_waited_for_until_it_stalls() -> None:
    qemu = _Qemu(stalls={0})  # the boot started outside counts as number 0
    guest.boot(_single_guest(), stall_s=5, started=True, m=qemu.machine())
    assert qemu.calls == ["wait 5", "stop hard=True", "start fresh=True", "wait 5"]


def test_overlap_reads_each_hosts_span_from_the_engines_event_sequence() -> None:
    from lab.engine import Up

    def events(order: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return [
            {"sequence": i, kind: {"metadata": {"urn": f"urn:pulumi:s::p::t::{name}"}}}
            for i, (kind, name) in enumerate(order, 1)
        ]

    pre, out = "resourcePreEvent", "resOutputsEvent"
    at_once = [(pre, "lb1-a"), (pre, "lb2-a"), (out, "lb1-a"), (out, "lb2-a")]
    ok, detail = run.overlap(Up(True, 1.0, "", events(at_once)), ["lb1", "lb2"], ("a",))
    assert ok, detail
    one_after = [(pre, "lb1-a"), (out, "lb1-a"), (pre, "lb2-a"), (out, "lb2-a")]
    assert not run.overlap(Up(True, 1.0, "", events(one_after)), ["lb1", "lb2"], ("a",))[0]
    missing = [(pre, "lb1-a"), (out, "lb1-a")]
    ok, detail = run.overlap(Up(True, 1.0, "", events(missing)), ["lb1", "lb2"], ("a",))
    assert not ok and "lb2" in detail


def test_the_kernel_is_taken_out_of_its_bzimage() -> None:
    """The PVH boot's kernel: the xz payload of a bzImage-like file (setup
    code before it, padding after it, as a real bzImage has), byte for byte."""
    import lzma

    elf = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 64
    payload = lzma.compress(elf, format=lzma.FORMAT_XZ)
    bzimage = b"MZ" + b"\x00" * 1000 + b"HdrS" + b"\x90" * 500 + payload + b"\x00" * 4096
    assert image.uncompressed_kernel(bzimage) == elf


def test_a_kernel_that_is_not_xz_or_not_elf_is_refused() -> None:
    import lzma

    with pytest.raises(SystemExit, match="not xz-compressed"):
        image.uncompressed_kernel(b"MZ" + b"\x1f\x8b\x08" + b"gzip payload" * 10)
    with pytest.raises(SystemExit, match="not an ELF"):
        image.uncompressed_kernel(b"MZ" + lzma.compress(b"plain text", format=lzma.FORMAT_XZ))
    with pytest.raises(SystemExit, match="payload is corrupt"):
        image.uncompressed_kernel(b"MZ\xfd7zXZ\x00" + b"\x00" * 64)


def test_the_module_blacklist_is_in_the_image_recipe() -> None:
    """What udev must not load reaches the guest as modprobe.d lines, and a
    change to the list changes the recipe (the image is rebuilt)."""
    files = image._files()
    lines = files["/etc/modprobe.d/keepsource-lab.conf"].splitlines()
    assert lines == [f"blacklist {m}" for m in image.BLACKLISTED_MODULES]
    assert "virtio_net" not in image.BLACKLISTED_MODULES  # the NICs' own driver


def _server(reply: bytes | None) -> tuple[Any, int]:
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def serve() -> None:
        for _ in range(4):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            if reply is not None:
                conn.sendall(reply)
            time.sleep(0.5)  # as qemu's forwarder does when the guest does not listen
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def test_the_ssh_banner_poll_tells_a_listener_from_a_forwarder() -> None:
    """A port that answers with an SSH version line is up; one that accepts
    and says nothing (qemu's forward before the guest listens), or answers
    with something else, or is closed, is not, each within the poll's timeout."""
    srv, port = _server(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n")
    try:
        assert guest.ssh_banner(port, timeout=1.0)
    finally:
        srv.close()
    for reply in (None, b"HTTP/1.0 400\r\n"):
        srv, port = _server(reply)
        try:
            begin = time.monotonic()
            assert not guest.ssh_banner(port, timeout=0.3)
            assert time.monotonic() - begin < 2
        finally:
            srv.close()
    srv, port = _server(None)
    srv.close()
    assert not guest.ssh_banner(port, timeout=0.3)


def test_qemu_boots_the_guest_without_firmware_extras() -> None:
    """The boot-time cuts in qemu's command line: no default devices, qboot,
    no NIC boot ROMs, the uncompressed kernel; the lab's own devices still there."""
    g = guest.single()
    argv = guest.qemu_argv(g)
    assert "-nodefaults" in argv
    assert argv[argv.index("-bios") + 1] == "qboot.rom"
    assert argv[argv.index("-kernel") + 1] == str(paths.KERNEL)
    assert paths.KERNEL.name == "vmlinux"
    nics = [a for a in argv if a.startswith("virtio-net-pci,")]
    assert len(nics) == 3 and all(n.endswith(",romfile=") for n in nics)
    assert "-serial" in argv and "-qmp" in argv


def test_a_port_is_free_despite_time_wait_but_not_with_a_listener() -> None:
    """After the banner polls the forwarded port has TIME-WAIT ends; qemu can
    bind it again (SO_REUSEADDR), so the lab must not call it taken."""
    import socket

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    srv.listen(1)
    assert not guest.port_free(port)
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()  # the server side closes first: its end waits in TIME-WAIT
    client.close()
    srv.close()
    assert guest.port_free(port)


def test_the_measured_haproxy_config_is_valid_and_connects_from_the_check_address(
    tmp_path: Path,
) -> None:
    """lab.measure's HAProxy (throughput only) is one HAProxy accepts, and it
    connects from the check address the pods' policy admits."""
    from lab import measure, run

    tool = require_tool("haproxy")
    the_lab = run.make_lab(layout.SINGLE)
    cfg = tmp_path / "bench.cfg"
    cfg.write_text(measure.haproxy_bench_config(the_lab, 30081))
    done = subprocess.run(
        [tool, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    source = the_lab.settings.network.check_address
    assert source is not None and f"    source {source}\n" in cfg.read_text()


def test_a_control_plane_probe_that_times_out_is_not_yet_and_the_wait_stays_bounded(
    tmp_path: Path,
) -> None:
    """A starting apiserver on a busy host held `kubectl get --raw /readyz`
    past its 10 s (CI, 2026-12-04): the wait took that as an error and the
    lab module failed. A probe's timeout is a "not yet"; the wait still ends
    at its own limit with a clear message naming the logs."""
    answers: Iterator[bool | None] = iter([None, False, True])

    def probe() -> bool:
        answer = next(answers)
        if answer is None:  # kubectl killed at its timeout
            raise subprocess.TimeoutExpired(["kubectl"], 10)
        return answer

    files = kube.Files(dir=tmp_path)
    assert kube._wait(files, "the API", probe, timeout=5, poll_s=0.01) < 5

    def never() -> bool:
        raise subprocess.TimeoutExpired(["kubectl"], 10)

    began = time.monotonic()
    with pytest.raises(SystemExit, match=f"the API not ready within 1 s; logs in {tmp_path}"):
        kube._wait(files, "the API", never, timeout=1, poll_s=0.05)
    assert time.monotonic() - began < 5
