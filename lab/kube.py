"""The lab's Kubernetes control plane, where the seed has its master.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (all
built by ``engine.build``) run in the master's namespace: the API serves at
the master's address and port (172.16.0.1:6443), so VIP:6443 carries the real
Kubernetes API through LVS. kwok makes the worker Nodes (with the workers'
addresses) Ready and their pods Running and Ready without containers, which is
what pulumi-kubernetes awaits for a Deployment.

This machine (the program, kubectl) reaches the API through a forward on
loopback (socat, one ``ip netns exec`` per connection), the way the lab reaches
the guest: the lab's subnets are never routed from the root namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.build import bin_dirs
from lab import paths
from lab.log import log

#: The lab's: its files, and the kubeconfig this machine uses (server on
#: loopback, through the forward), which the local stack file names.
DIR = paths.RUN / "kube"
KUBECONFIG = paths.RUN / "kubeconfig"
FORWARD_PORT = 16443
CONTEXT = "keepsource-lab"
SERVICE_CIDR = "10.96.0.0/16"


def binary(name: str) -> str:
    for d in bin_dirs(["kubernetes", "etcd", "kwok"]):
        if (d / name).is_file():
            return str(d / name)
    raise SystemExit(f"lab: {name} is not built: run ./build-engine")


@dataclass(frozen=True)
class Master:
    netns: str
    address: str
    port: int
    workers: tuple[tuple[str, str], ...]
    """(node name, InternalIP) of each kwok node."""
    extra_sans: tuple[str, ...] = ()
    """More addresses the serving certificate names (the VIP)."""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(m: Master, d: Path) -> None:
    """A CA, the apiserver's serving certificate (the master's address, the VIP,
    loopback and the in-cluster names), an admin client (system:masters) and
    the service-account key pair. Made per lab run: nothing long-lived."""
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    _openssl("genpkey", "-algorithm", "ed25519", "-out", "ca.key", cwd=d)
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=keepsource-lab-ca",
             "-days", "7", "-out", "ca.crt", cwd=d)  # fmt: skip
    ips = ["127.0.0.1", m.address, "10.96.0.1", *m.extra_sans]
    dns = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "localhost"]
    san = ",".join([*(f"IP:{i}" for i in ips), *(f"DNS:{n}" for n in dns)])
    for name, subj, ext in (
        ("apiserver", "/CN=kube-apiserver", f"subjectAltName={san}\nextendedKeyUsage=serverAuth"),
        ("admin", "/O=system:masters/CN=kubernetes-admin", "extendedKeyUsage=clientAuth"),
    ):
        _openssl("genpkey", "-algorithm", "ed25519", "-out", f"{name}.key", cwd=d)
        _openssl("req", "-new", "-key", f"{name}.key", "-subj", subj, "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "7", "-extfile", f"{name}.ext",
                 "-out", f"{name}.crt", cwd=d)  # fmt: skip
    _openssl(
        "genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key", cwd=d
    )
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def kubeconfig(d: Path, server: str) -> str:
    import base64

    def b64(name: str) -> str:
        return base64.b64encode((d / name).read_bytes()).decode()

    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": CONTEXT,
                    "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": b64("admin.crt"),
                        "client-key-data": b64("admin.key"),
                    },
                }
            ],
            "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": "admin"}}],
            "current-context": CONTEXT,
        },
        indent=2,
    )


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


@dataclass(frozen=True)
class Files:
    """Where a control plane keeps its files, and its loopback forward."""

    dir: Path = DIR
    kubeconfig: Path = KUBECONFIG
    forward_port: int = FORWARD_PORT


LAB = Files()


def _spawn(f: Files, name: str, argv: list[str], netns: str | None) -> int:
    full = (["ip", "netns", "exec", netns] if netns else []) + argv
    with open(f.dir / f"{name}.log", "w") as out:
        proc = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    (f.dir / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def kubectl(
    *args: str,
    timeout: float = 60,
    check: bool = True,
    stdin: str | None = None,
    files: Files = LAB,
) -> str:
    """kubectl against the control plane's API, from this machine (through the forward)."""
    p = subprocess.run(
        [binary("kubectl"), f"--kubeconfig={files.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )
    if check and p.returncode != 0:
        raise SystemExit(f"lab: kubectl {' '.join(args)}: {p.stderr.strip()[:400]}")
    return p.stdout


def watch_pods(files: Files = LAB) -> subprocess.Popen[str]:
    """A kubectl that prints a line at every pod event in the cluster (added,
    changed, deleted): what the lab's follower wakes up on, as kube-proxy
    wakes up on its watch. The caller stops it."""
    return subprocess.Popen(
        [
            binary("kubectl"),
            f"--kubeconfig={files.kubeconfig}",
            *("get", "pods", "-A", "--watch-only", "-o", "name"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _wait(f: Files, what: str, ok: Any, timeout: float, poll_s: float = 0.5) -> float:
    """Seconds until ``ok()`` held, asked every ``poll_s`` for at most
    ``timeout`` seconds. A probe that timed out (a starting apiserver on a
    busy host can hold a request past the probe's own limit) is a "not yet",
    not the end of the wait."""
    start = time.monotonic()
    for _ in range(int(timeout / poll_s) + 1):
        try:
            if ok():
                return time.monotonic() - start
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() - start >= timeout:
            break
        time.sleep(poll_s)
    raise SystemExit(f"lab: {what} not ready within {timeout:.0f} s; logs in {f.dir}")


def start(m: Master, f: Files = LAB, timeout: float = 120) -> dict[str, float]:
    """The control plane in ``m.netns``; the forward on 127.0.0.1:``f.forward_port``."""
    times: dict[str, float] = {}
    began = time.monotonic()
    f.dir.mkdir(parents=True, exist_ok=True)
    pki = f.dir / "pki"
    make_pki(m, pki)
    inside = f.dir / "admin.kubeconfig"  # for the components, in the master's namespace
    _write_private(inside, kubeconfig(pki, f"https://{m.address}:{m.port}"))
    _write_private(f.kubeconfig, kubeconfig(pki, f"https://127.0.0.1:{f.forward_port}"))
    ns = m.netns

    def api_ready() -> bool:
        out = kubectl("get", "--raw", "/readyz", check=False, timeout=10, files=f)
        return out.strip() == "ok"

    _spawn(f, "etcd", [binary("etcd"), "--data-dir", str(f.dir / "etcd"), "--unsafe-no-fsync",
                    "--listen-client-urls", "http://127.0.0.1:2379",
                    "--advertise-client-urls", "http://127.0.0.1:2379",
                    "--listen-peer-urls", "http://127.0.0.1:2380"], ns)  # fmt: skip
    _spawn(f, "kube-apiserver", [binary("kube-apiserver"),
        "--etcd-servers=http://127.0.0.1:2379", f"--advertise-address={m.address}",
        "--bind-address=0.0.0.0", f"--secure-port={m.port}",
        f"--tls-cert-file={pki}/apiserver.crt", f"--tls-private-key-file={pki}/apiserver.key",
        f"--client-ca-file={pki}/ca.crt", "--authorization-mode=Node,RBAC",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={pki}/sa.pub",
        f"--service-account-signing-key-file={pki}/sa.key",
        f"--service-cluster-ip-range={SERVICE_CIDR}", "--anonymous-auth=false"], ns)  # fmt: skip
    _spawn(f, "forward", ["socat", f"TCP-LISTEN:{f.forward_port},bind=127.0.0.1,fork,reuseaddr",
                       f"EXEC:ip netns exec {ns} socat STDIO TCP\\:{m.address}\\:{m.port}"],
           None)  # fmt: skip
    times["apiserver"] = _wait(f, "kube-apiserver", api_ready, timeout)
    common = [f"--kubeconfig={inside}", "--leader-elect=false"]
    _spawn(f, "kube-controller-manager", [binary("kube-controller-manager"), *common,
        f"--service-account-private-key-file={pki}/sa.key", f"--root-ca-file={pki}/ca.crt",
        "--use-service-account-credentials=false", "--controllers=*"], ns)  # fmt: skip
    _spawn(f, "kube-scheduler", [binary("kube-scheduler"), f"--kubeconfig={inside}",
                              "--leader-elect=false"], ns)  # fmt: skip
    for name, address in m.workers:
        kubectl("apply", "-f", "-", stdin=json.dumps(_node(name)), files=f)
        patch = {"status": {"addresses": [{"type": "InternalIP", "address": address},
                                          {"type": "Hostname", "address": name}]}}  # fmt: skip
        kubectl("patch", "node", name, "--subresource=status", "--type=merge",
                "-p", json.dumps(patch), files=f)  # fmt: skip
    stages = sorted(Path(binary("kwok")).parent.glob("*.yaml"))
    kwok = [binary("kwok"), *(f"--config={y}" for y in stages), f"--kubeconfig={inside}"]
    kwok += ["--manage-all-nodes=true", "--cidr=10.244.0.0/16", f"--node-ip={m.address}"]
    _spawn(f, "kwok", kwok, ns)
    names = [n for n, _ in m.workers]

    def nodes_ready() -> bool:
        out = kubectl("get", "nodes", "-o", "json", check=False, files=f)
        try:
            items = json.loads(out)["items"]
        except (ValueError, KeyError):
            return False
        ready = {
            i["metadata"]["name"]
            for i in items
            for c in i.get("status", {}).get("conditions", [])
            if c["type"] == "Ready" and c["status"] == "True"
        }
        return set(names) <= ready

    times["nodes"] = _wait(f, "the kwok nodes", nodes_ready, timeout)
    times["total"] = time.monotonic() - began
    log(
        f"control plane: API at {m.address}:{m.port} in {ns} ({times['apiserver']:.1f} s), "
        f"nodes {', '.join(names)} Ready; kubeconfig {f.kubeconfig}"
    )
    return times


def _node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "type": "kwok"},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
        },
    }


def stop(f: Files = LAB) -> list[str]:
    """Stop every process start() made (pidfiles in its folder); return their names."""
    stopped = []
    for pidfile in sorted(f.dir.glob("*.pid")):
        try:
            pid = int(pidfile.read_text())
            os.killpg(pid, signal.SIGTERM)
            stopped.append(pidfile.stem)
        except (ValueError, ProcessLookupError, PermissionError):
            pass
        pidfile.unlink(missing_ok=True)
    return stopped
