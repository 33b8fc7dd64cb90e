"""Every generated artifact, for every stack, judged by the real tool."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from keepsource.artifacts import artifacts
from keepsource.host import lb_host
from keepsource.render import gateway, kube
from keepsource.render.keepalived import FWMARK_BASE, HEADER, check_budget
from keepsource.settings import HealthCheck, Settings
from keepsource.stackfile import load, load_config
from tests.conftest import ALL_STACKS, require_tool

K8S_VERSION = "1.35.0"


def _write(tmp_path: Path, stack: str) -> Path:
    out = tmp_path / stack
    for name, text in artifacts(load(stack)).items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return out


def _confs(stack: str) -> dict[str, str]:
    """Each LB host's keepalived.conf path in the render output."""
    s = load(stack)
    if not s.is_pair:
        return {"lb": "keepalived.conf"}
    return {n.name: f"{n.name}/keepalived.conf" for n in s.lb_nodes}


def _keepalived_t(tool: str, conf: Path, interfaces: list[str]) -> subprocess.CompletedProcess[str]:
    """``keepalived -t`` checks that a VRRP instance's interface exists: a pair's
    config is checked in a network namespace of its own that has them (veth)."""
    setup = "".join(
        f"ip link add {i} type veth peer name ks-peer{n} && " for n, i in enumerate(interfaces)
    )
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", f"{setup}exec {tool} -t -e -l -f {conf}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_keepalived_accepts_the_config(tmp_path: Path, stack: str) -> None:
    tool = require_tool("keepalived")
    require_tool("unshare")
    out = _write(tmp_path, stack)
    s = load(stack)
    for node in s.lb_nodes:
        ifaces = [i for i in (node.external_interface, node.internal_interface) if i]
        done = _keepalived_t(tool, out / _confs(stack)[node.name], ifaces)
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_pairs_keepalived_check_can_fail(tmp_path: Path) -> None:
    """Without its interfaces the pair's config is refused: the check above is real."""
    tool = require_tool("keepalived")
    out = _write(tmp_path, "local-ha")
    assert _keepalived_t(tool, out / "lb1/keepalived.conf", []).returncode != 0


def test_keepalived_check_does_reject_a_bad_keyword(tmp_path: Path) -> None:
    """The check above can fail: the seed's ng_get_retry is refused."""
    tool = require_tool("keepalived")
    conf = lb_host(load("dev")).keepalived_conf.replace(" retry 1\n", " ng_get_retry 1\n", 1)
    path = tmp_path / "bad.conf"
    path.write_text(conf)
    done = subprocess.run(
        [tool, "-t", "-e", "-f", str(path)], capture_output=True, check=False, timeout=30
    )
    assert done.returncode != 0


@pytest.mark.parametrize("stack", ALL_STACKS)
@pytest.mark.parametrize("restore", ["iptables-restore", "iptables-legacy-restore"])
def test_rules_pass_iptables_restore_test(tmp_path: Path, stack: str, restore: str) -> None:
    require_tool("unshare")
    tool = require_tool(restore)
    out = _write(tmp_path, stack)
    for name in ("rules.v4", "switch.rules"):
        done = subprocess.run(
            ["unshare", "-n", tool, "--test", "--noflush", str(out / name)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert done.returncode == 0, name + done.stderr


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_fragments_are_in_iptables_save_form(tmp_path: Path, stack: str) -> None:
    """net-load compares the live chains with the files line by line: each
    file's rules must read back from the kernel exactly as written."""
    require_tool("unshare")
    tool = require_tool("iptables-restore")
    out = _write(tmp_path, stack)
    for name in ("rules.v4", "switch.rules"):
        path = out / name
        done = subprocess.run(
            ["unshare", "-n", "sh", "-c", f"{tool} --noflush {path} && iptables-save"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        written = [line for line in path.read_text().splitlines() if line.startswith("-A ")]
        live = [line for line in done.stdout.splitlines() if line.startswith("-A ")]
        assert written
        for chain in dict.fromkeys(line.split()[1] for line in written):
            mine = [line for line in written if line.split()[1] == chain]
            assert [line for line in live if line.split()[1] == chain] == mine


def test_legacy_restore_rejects_a_typo(tmp_path: Path) -> None:
    tool = require_tool("iptables-legacy-restore")
    text = artifacts(load("dev"))["rules.v4"].replace("MASQUERADE", "MASQUERAD")
    path = tmp_path / "bad.v4"
    path.write_text(text)
    done = subprocess.run(
        ["unshare", "-n", tool, "--test", "--noflush", str(path)],
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert done.returncode != 0


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_shellcheck_passes_every_remote_script(tmp_path: Path, stack: str) -> None:
    tool = require_tool("shellcheck")
    out = _write(tmp_path, stack)
    hosts = [Path(_confs(stack)[n.name]).parent for n in load(stack).lb_nodes]
    scripts = [p for h in hosts for p in sorted((out / h / "steps").glob("*.sh"))]
    names = ["gateway", "packages", "keepalived-config", "cutover"]
    if load(stack).metrics is not None:
        names.insert(2, "metrics")
    assert [p.name for p in scripts] == [f"{i:02d}-{n}.sh" for i, n in enumerate(names, 1)] * len(
        hosts
    )
    scripts.append(out / "net-load")
    done = subprocess.run(
        [tool, "--shell=bash", "--severity=style", *map(str, scripts)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_manifests_validate_strictly(tmp_path: Path, stack: str) -> None:
    s = load(stack)
    text = (_write(tmp_path, stack) / "manifests.yaml").read_text()
    objs = list(yaml.safe_load_all(text))
    workloads = kube.workloads(s)
    assert [o["kind"] for o in objs] == ["Namespace"] * len(kube.namespaces(s, workloads)) + [
        "Deployment",
        "Service",
        "NetworkPolicy",
    ] * len(workloads)
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_strict_validation_can_fail() -> None:
    svc = kube.service(load("dev"))
    svc["spec"]["externalTrafficPolicyy"] = "Local"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(svc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_manifests_express_the_fix(stack: str) -> None:
    """Each workload service: externalTrafficPolicy Local, its nodePorts, its
    policy admitting its clients and every LB host's check source on each of
    the pod's ports (TCP and UDP), a TCP readiness probe where it has TCP."""
    s = load(stack)
    objs = {(o["kind"], o["metadata"]["name"]): o for o in kube.objects(s)}
    assert kube.workloads(s)
    for ex in kube.workloads(s):
        svc, pol = objs[("Service", ex.name)], objs[("NetworkPolicy", ex.name)]
        dep = objs[("Deployment", ex.name)]
        assert svc["spec"]["externalTrafficPolicy"] == "Local"
        assert [p["nodePort"] for p in svc["spec"]["ports"]] == [p.backend_port for p in ex.ports]
        assert [p["protocol"] for p in svc["spec"]["ports"]] == [p.protocol for p in ex.ports]
        assert svc["spec"]["selector"] == pol["spec"]["podSelector"]["matchLabels"]
        assert dep["spec"]["template"]["metadata"]["labels"] == svc["spec"]["selector"]
        cidrs = [p["ipBlock"]["cidr"] for p in pol["spec"]["ingress"][0]["from"]]
        for node in s.lb_nodes:  # every LB host's check source
            assert f"{node.check_source}/32" in cidrs
        assert set(map(str, ex.allowed_clients)) <= set(cidrs) and ex.allowed_clients
        assert pol["spec"]["ingress"][0]["ports"] == [
            {"protocol": p.protocol, "port": p.target_port}
            for p in dict.fromkeys(ex.ports)  # distinct pod ports in this example
        ]
        container = dep["spec"]["template"]["spec"]["containers"][0]
        tcp = [p.target_port for p in ex.ports if p.protocol == "TCP"]
        if tcp:
            assert container["readinessProbe"]["tcpSocket"]["port"] == tcp[0]
        else:
            assert "readinessProbe" not in container


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_keepalived_conf_routes_vip_to_the_nodes(stack: str) -> None:
    s = load(stack)
    for node in s.lb_nodes:
        _routes_vip_to_the_nodes(s, lb_host(s, node).keepalived_conf, node.check_source)


def _routes_vip_to_the_nodes(s: Settings, conf: str, check_source: object) -> None:
    vip = s.network.vip
    switch = gateway.render_switch_rules(lb_host(s).pools)
    # Each VIP:port/protocol is marked for exactly one fwmark virtual server,
    # in the order of the services (the seed's layout: apiserver, workload).
    pools = [(ex, p) for ex in s.exposed for p in ex.ports]
    for i, (ex, port) in enumerate(pools):
        mark = FWMARK_BASE + i + 1
        assert f"virtual_server fwmark {mark} {{" in conf
        proto = port.protocol.lower()
        rule = (
            f"-d {vip}/32 -p {proto} -m {proto} --dport {port.port} "
            f"-j MARK --set-xmark {mark:#x}/0xffffffff"
        )
        assert rule in switch
        for _name, address in ex.real_servers:
            assert f"real_server {address} {port.backend_port} {{" in conf
    assert conf.count("virtual_server ") == len(pools) and "protocol" not in conf
    assert conf.splitlines()[0] == HEADER
    if s.services is None:
        assert pools[0][0].real_servers == (("apiserver", str(s.apiserver.address)),)
        assert pools[1][0].real_servers == tuple((w.name, str(w.address)) for w in s.workers)
    tcp = sum(len(ex.real_servers) for ex, p in pools if p.protocol == "TCP")
    udp = sum(len(ex.real_servers) for ex, p in pools if p.protocol == "UDP")
    assert conf.count("TCP_CHECK") == tcp and conf.count("UDP_CHECK") == udp
    assert conf.count("require_reply") == udp
    assert conf.count("lvs_method NAT") == len(pools) and conf.count("alpha") == len(pools)
    assert f"bindto {check_source}" in conf
    assert "ng_get_retry" not in conf and "nb_get_retry" not in conf


def test_default_timing_meets_the_budget() -> None:
    budget = check_budget(HealthCheck())
    assert budget.refused_s <= 2.0
    assert budget.dropped_s <= 3.0
    assert budget.readd_s <= 2.0
    slow = check_budget(HealthCheck(delay_loop=2, connect_timeout=3, retry=1, delay_before_retry=1))
    # FACTS.md measured 7-10 s for this timing: the formula's worst case agrees.
    assert slow.dropped_s == 9.0


# -- the cut-over's view of HAProxy's other listeners -------------------------------------

_SS = """\
tcp   LISTEN 0  4096  192.168.0.1:6443   0.0.0.0:*  users:(("haproxy",pid=420,fd=7))
tcp   LISTEN 0  4096  192.168.0.1:30080  0.0.0.0:*  users:(("haproxy",pid=420,fd=8))
tcp   LISTEN 0  4096  0.0.0.0:80         0.0.0.0:*  users:(("haproxy",pid=420,fd=9))
tcp   LISTEN 0  4096  *:8404             *:*        users:(("haproxy",pid=420,fd=10))
tcp   LISTEN 0  4096  172.16.0.254:6443  0.0.0.0:*  users:(("haproxy",pid=420,fd=12))
tcp   LISTEN 0  128   0.0.0.0:22         0.0.0.0:*  users:(("sshd",pid=300,fd=3))
udp   UNCONN 0  0     [::]:514           [::]:*     users:(("haproxy",pid=420,fd=11))
"""


def _haproxy_others(tmp_path: Path, script: str, ss_output: str) -> list[str]:
    """The rendered cut-over's own ``haproxy_others`` run with ``ss`` answering
    ``ss_output`` (its variables as the script sets them)."""
    lines = script.splitlines()
    start = lines.index("haproxy_others() {")
    end = lines.index("}", start)
    head = [ln for ln in lines if ln.startswith(("vip=", "own_ports="))]
    (tmp_path / "ss").write_text(f"#!/bin/sh\ncat <<'X'\n{ss_output}X\n")
    (tmp_path / "ss").chmod(0o755)
    body = "\n".join([*head, *lines[start : end + 1], "haproxy_others"])
    done = subprocess.run(
        ["bash", "-c", body],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def test_the_cutover_names_haproxys_listeners_it_does_not_take_over(tmp_path: Path) -> None:

    s = load("local")
    script = lb_host(s).step("cutover").script
    assert "stop_haproxy=no" in script.splitlines()
    others = _haproxy_others(tmp_path, script, _SS)
    # VIP:6443 and VIP:30080 are taken over; sshd is not HAProxy's.
    assert others == [
        "tcp *:8404",
        "tcp 0.0.0.0:80",
        "tcp 172.16.0.254:6443",
        "udp [::]:514",
    ]
    seed_only = "".join(ln + "\n" for ln in _SS.splitlines()[:2])
    assert _haproxy_others(tmp_path, script, seed_only) == []


def test_takeover_haproxy_lets_the_cutover_stop_it() -> None:
    from keepsource.settings import parse

    cfg = load_config("local")
    cfg["keepsource:lb"]["takeOver"] = ["haproxy"]
    s = parse(cfg)
    script = lb_host(s).step("cutover").script
    assert "stop_haproxy=yes" in script.splitlines()


def _lib_until_lock(tmp_path: Path, wait_s: int) -> str:
    """The steps' shared prelude (lib.sh as a step carries it), its lock file
    and wait bound set for this machine, up to and including taking the lock."""
    from keepsource.render.scripts import _template

    lib = _template("lib.sh").replace("ks_lock_wait=600", f"ks_lock_wait={wait_s}")
    lib = lib.replace("ks_lock_file=/run/keepsource.lock", f"ks_lock_file={tmp_path / 'lock'}")
    assert lib.rstrip().endswith("\nks_lock")
    return "KS_STEP=test\n" + lib + "\nks_say locked\n"


def test_a_second_step_on_the_host_waits_for_the_lock_then_fails_clearly(tmp_path: Path) -> None:
    holder = subprocess.Popen(["flock", str(tmp_path / "lock"), "sleep", "3"])
    try:
        time.sleep(0.5)
        refused = subprocess.run(
            ["bash", "-c", _lib_until_lock(tmp_path, 1)], capture_output=True, text=True
        )
        assert refused.returncode == 1 and "locked" not in refused.stdout
        assert "waiting up to 1 s" in refused.stderr
        assert "FAILED: another keepsource step has held" in refused.stderr
        assert "nothing changed" in refused.stderr
        waited = subprocess.run(
            ["bash", "-c", _lib_until_lock(tmp_path, 20)], capture_output=True, text=True
        )
        assert waited.returncode == 0 and waited.stdout.strip() == "keepsource: test: locked"
        assert "holds" in waited.stderr and "waiting up to 20 s" in waited.stderr
        assert "got " in waited.stderr and "after waiting" in waited.stderr
    finally:
        holder.kill()
        holder.wait()


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)


def _install_with_dpkg(
    tmp_path: Path, dpkg_fails: int
) -> tuple[subprocess.CompletedProcess[str], float]:
    """ks_install keepalived with stub dpkg/apt-get (the real bash, timeout and
    lib.sh): dpkg --configure -a fails its first ``dpkg_fails`` tries."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _stub(bin_dir, "dpkg-query", "exit 1")  # nothing installed
    _stub(
        bin_dir,
        "dpkg",
        f'echo dpkg >> {calls}; n=$(grep -c dpkg {calls}); [ "$n" -gt {dpkg_fails} ]',
    )
    _stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {calls}')
    prelude = _lib_until_lock(tmp_path, 5).replace("ks_dpkg_wait=300", "ks_dpkg_wait=3")
    script = prelude.replace("\nks_say locked\n", "\nks_install keepalived\nks_done\n")
    start = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", f"export PATH={bin_dir}:$PATH\n{script}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, time.monotonic() - start


def test_a_dpkg_that_stays_broken_fails_the_install_in_bounded_time(tmp_path: Path) -> None:
    done, seconds = _install_with_dpkg(tmp_path, dpkg_fails=1000)
    assert done.returncode == 1
    assert "FAILED: dpkg --configure -a still fails after 3 s" in done.stderr
    assert "apt-get" not in (tmp_path / "calls").read_text()  # apt never ran
    assert seconds < 30  # retried for ks_dpkg_wait (3 s here), not for hours


def test_a_dpkg_that_recovers_lets_the_install_go_on(tmp_path: Path) -> None:
    done, _ = _install_with_dpkg(tmp_path, dpkg_fails=1)
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[:2] == ["dpkg", "dpkg"]
    assert any(c.startswith("apt-get") and " install " in c for c in calls)
    assert done.stdout.strip().endswith("keepsource: test: changed")


#: Runs the rendered net-load in a network and mount namespace of its own:
#: a tmpfs over /proc/sys/net/ipv4 stands for the sysctls (ip_forward and,
#: once the stand-in modprobe "loads ip_vs", vs/conntrack), iptables is the
#: machine's own. Prints "NAME RC" after each step.
_NET_LOAD_DRIVER = r"""
set -u
mount --make-rprivate /
mount -t tmpfs none /proc/sys/net/ipv4
echo 0 > /proc/sys/net/ipv4/ip_forward
step() { local name="$1"; shift; "$@" >/dev/null 2>&1; echo "$name $?"; }
rules() { iptables-save | grep -E '^(\*|:|-A )' | sed 's/ \[[0-9]*:[0-9]*\]$//'; }
# The host's own rules, in the chains keepsource jumps from.
iptables -t nat -A POSTROUTING -s 10.99.0.0/16 -j MASQUERADE
iptables -t filter -A INPUT -p tcp --dport 22 -j ACCEPT
step before "$LOADER" --check
step load "$LOADER"
step check "$LOADER" --check
rules > "$OUT/first"
step again "$LOADER"
rules > "$OUT/second"
iptables -t nat -S POSTROUTING > "$OUT/postrouting"
iptables -t filter -S INPUT > "$OUT/input"
iptables -t nat -D "$CHAIN" 1
step rule-gone "$LOADER" --check
"$LOADER" >/dev/null
iptables -t nat -I POSTROUTING 1 -j "$CHAIN"
step jump-twice "$LOADER" --check
"$LOADER" >/dev/null
iptables -t filter -I INPUT 1 -p tcp --dport 23 -j ACCEPT
step jump-not-first "$LOADER" --check
"$LOADER" >/dev/null
step repaired "$LOADER" --check
rules > "$OUT/repaired"
echo 0 > /proc/sys/net/ipv4/ip_forward
step no-forward "$LOADER" --check
"$LOADER" >/dev/null
step forward-back "$LOADER" --check
"""


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_net_load_loads_checks_and_repairs_for_real(tmp_path: Path, stack: str) -> None:
    """The loader every LB host runs at boot and at apply, against the real
    iptables in a namespace of its own: --check fails before and passes after
    a load; a second load changes no rule; the host's own rules stay, with
    keepsource's jumps where they belong (hairpin and input first, the
    gateway's MASQUERADE last); a removed rule, a doubled jump, a jump no
    longer first and ip_forward off are each seen by --check and repaired."""
    require_tool("unshare")
    require_tool("iptables-save")
    out = _write(tmp_path, stack)
    files = {
        gateway.SYSCTL_PATH: out / "90-keepsource-gateway.conf",
        gateway.IPVS_SYSCTL_PATH: out / "ipvs.sysctl",
        gateway.RULES_PATH: out / "rules.v4",
        gateway.SWITCH_PATH: out / "switch.rules",
    }
    loader = (out / "net-load").read_text()
    for path, local in files.items():
        assert path in loader
        loader = loader.replace(f'"{path}"', f'"{local}"')
    (out / "net-load").write_text(loader)
    (out / "net-load").chmod(0o755)
    stand_ins = tmp_path / "bin"
    stand_ins.mkdir()
    (stand_ins / "modprobe").write_text(
        '#!/bin/sh\n[ "$1" = ip_vs ] || exit 1\nmkdir -p /proc/sys/net/ipv4/vs\n'
        "[ -f /proc/sys/net/ipv4/vs/conntrack ] || echo 0 > /proc/sys/net/ipv4/vs/conntrack\n"
    )
    (stand_ins / "modprobe").chmod(0o755)
    driver = tmp_path / "driver.sh"
    driver.write_text(_NET_LOAD_DRIVER)
    env = {
        "PATH": f"{stand_ins}:/usr/sbin:/usr/bin:/sbin:/bin",
        "LOADER": str(out / "net-load"),
        "CHAIN": gateway.CHAIN,
        "OUT": str(tmp_path),
    }
    done = subprocess.run(
        ["unshare", "-n", "-m", "bash", str(driver)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    codes = dict(line.split() for line in done.stdout.splitlines())
    assert codes == {
        "before": "1",
        "load": "0",
        "check": "0",
        "again": "0",
        "rule-gone": "1",
        "jump-twice": "1",
        "jump-not-first": "1",
        "repaired": "0",
        "no-forward": "1",
        "forward-back": "0",
    }, done.stdout + done.stderr
    first = (tmp_path / "first").read_text()
    assert first == (tmp_path / "second").read_text()
    postrouting = (tmp_path / "postrouting").read_text().splitlines()
    rules = [line for line in postrouting if line.startswith("-A ")]
    assert rules == [
        f"-A POSTROUTING -j {gateway.HAIRPIN_CHAIN}",
        "-A POSTROUTING -s 10.99.0.0/16 -j MASQUERADE",
        f"-A POSTROUTING -j {gateway.CHAIN}",
    ]
    assert [line for line in (tmp_path / "input").read_text().splitlines() if "-A" in line] == [
        f"-A INPUT -j {gateway.INPUT_CHAIN}",
        "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
    ]
    repaired = (tmp_path / "repaired").read_text()
    assert repaired.count(f"-A POSTROUTING -j {gateway.CHAIN}") == 1
    assert repaired.count(f"-A INPUT -j {gateway.INPUT_CHAIN}") == 1
    for name in ("rules.v4", "switch.rules"):
        for line in (out / name).read_text().splitlines():
            if line.startswith("-A "):
                assert line in first.splitlines(), line
