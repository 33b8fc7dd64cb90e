"""What runs in the lab's namespaces: the repo, the master, and the workers.

The workers stand in for kube-proxy with ``externalTrafficPolicy: Local`` and
for the CNI's NetworkPolicy enforcement (there is no cluster here):

* the worker that has the pod redirects the NodePort to the pod's port
  (kube-proxy's DNAT) and serves the nginx page there; an iptables filter on
  the pod's port admits exactly the ipBlocks of the NetworkPolicy in the
  rendered manifests.yaml (a NetworkPolicy matches the pod's port, after DNAT);
* a worker without the pod drops packets to the NodePort (Local, no endpoint).

The filter is derived from the rendered manifests, never from a hand-written
copy. In the fault phase it uses the seed's original policy: the same
NetworkPolicy without the LB's health-check source (host01 only).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab import net, paths

NGINX_PAGE = """<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>
<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"""


@dataclass(frozen=True)
class PodFilter:
    node_port: int
    pod_port: int
    admitted: tuple[str, ...]


def pod_filter(manifests: str, seed: bool, check_source: str | tuple[str, ...]) -> PodFilter:
    """The CNI stand-in's view of the rendered manifests.yaml. ``check_source``:
    the LB's check source, or every LB host's (the pair): the seed's policy
    admits none of them."""
    sources = (check_source,) if isinstance(check_source, str) else check_source
    docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(manifests) if d]
    service = next(d for d in docs if d["kind"] == "Service")
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    if service["spec"].get("externalTrafficPolicy") != "Local":
        raise SystemExit("lab: the rendered Service is not externalTrafficPolicy: Local")
    f = _from_objects(service, policy)
    if seed:  # the seed's policy admitted the clients only, not the LB's checks
        kept = tuple(c for c in f.admitted if not _covers(c, sources))
        f = PodFilter(f.node_port, f.pod_port, kept)
    return f


def api_filter(
    service: dict[str, Any], policy: dict[str, Any], node_addresses: tuple[str, ...]
) -> PodFilter:
    """The stand-ins' view of the Service and NetworkPolicy *as the API holds
    them*. With ``externalTrafficPolicy: Cluster`` kube-proxy masquerades every
    NodePort packet, so the pod sees a node's address: no client is admitted
    through the NodePort (refused when the policy admits a node address, which
    the stand-ins do not model)."""
    f = _from_objects(service, policy)
    if service["spec"].get("externalTrafficPolicy", "Cluster") == "Local":
        return f
    for cidr in f.admitted:
        if _covers(cidr, node_addresses):
            raise SystemExit(f"lab: the policy admits a node address ({cidr}): not modelled")
    return PodFilter(f.node_port, f.pod_port, ())


def _covers(cidr: str, addresses: tuple[str, ...]) -> bool:
    return any(ipaddress.ip_address(a) in ipaddress.ip_network(cidr) for a in addresses)


def _from_objects(service: dict[str, Any], policy: dict[str, Any]) -> PodFilter:
    port = service["spec"]["ports"][0]
    rule = policy["spec"]["ingress"][0]
    admitted = [p["ipBlock"]["cidr"] for p in rule["from"] if "ipBlock" in p]
    pod_ports = [int(p["port"]) for p in rule.get("ports", [])]
    if pod_ports and pod_ports != [int(port["targetPort"])]:
        raise SystemExit("lab: the policy's port is not the pod's port")
    return PodFilter(int(port["nodePort"]), int(port["targetPort"]), tuple(admitted))


def worker_rules(f: PodFilter, mode: str) -> str:
    """iptables-restore input for a worker: mode "pod" (serves, filtered by the
    policy), "drop" (Local without an endpoint) or "refuse" (nothing listens)."""
    has_pod = mode == "pod"
    lines = [
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
    ]
    if has_pod:
        lines.append(
            f"-A PREROUTING -p tcp --dport {f.node_port} -j REDIRECT --to-ports {f.pod_port}"
        )
    lines += [
        "COMMIT",
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
    ]
    if has_pod:
        for cidr in f.admitted:
            lines.append(f"-A INPUT -p tcp -s {cidr} --dport {f.pod_port} -j ACCEPT")
    elif mode == "refuse":
        lines.append(f"-A INPUT -p tcp --dport {f.node_port} -j REJECT --reject-with tcp-reset")
    else:
        lines.append(f"-A INPUT -p tcp --dport {f.node_port} -j DROP")
    lines.append(f"-A INPUT -p tcp --dport {f.pod_port} -j DROP")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def set_workers(workers: list[net.Host], modes: dict[str, str], f: PodFilter) -> None:
    for w in workers:
        subprocess.run(
            ["ip", "netns", "exec", w.netns, "iptables-restore"],
            input=worker_rules(f, modes.get(w.name, "drop")),
            text=True,
            check=True,
            timeout=30,
        )


def _serve(ns: str, bind: str, port: int, directory: str) -> int:
    log = open(paths.RUN / f"{ns}-{port}.log", "w")  # noqa: SIM115 (kept by the child)
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            bind,
            "--directory",
            directory,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    return proc.pid


#: A body for a transfer held open across a failover: /lab-big, generated per run.
BIG_NAME = "lab-big"
BIG_SIZE = 64 * 1024 * 1024


def make_big(www: Path, size: int = BIG_SIZE) -> str:
    """Write ``www/lab-big`` (random bytes) once, with its sha256 beside it;
    returns the sha256. Not committed: it lives in the run dir."""
    body, digest_file = www / BIG_NAME, www.parent / f"{BIG_NAME}.sha256"
    if body.is_file() and digest_file.is_file() and body.stat().st_size == size:
        return digest_file.read_text().strip()
    digest = hashlib.sha256()
    tmp = body.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        left = size
        while left > 0:
            chunk = os.urandom(min(left, 1 << 20))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    tmp.replace(body)
    digest_file.write_text(digest.hexdigest() + "\n")
    return digest.hexdigest()


def big_sha256() -> str:
    """The sha256 of this run's /lab-big."""
    return (paths.RUN / f"{BIG_NAME}.sha256").read_text().strip()


#: An access log line of python's http.server: the peer address comes first.
_ACCESS = re.compile(
    r'^(?P<peer>[0-9a-fA-F.:]+) - - \[[^]]*\] "(?P<request>[^"]*)" (?P<status>\d{3})'
)


def access_peers(log_text: str) -> list[tuple[str, str, int]]:
    """(peer address, request line, status) of each access log line, in order:
    the address the pod stand-in saw (after the LB and the node's DNAT)."""
    out = []
    for line in log_text.splitlines():
        m = _ACCESS.match(line)
        if m:
            out.append((m.group("peer"), m.group("request"), int(m.group("status"))))
    return out


def pod_log(worker: net.Host, pod_port: int) -> Path:
    """The access log of a worker's pod stand-in."""
    return paths.RUN / f"{worker.netns}-{pod_port}.log"


def start_servers(
    repo: net.Host, master: net.Host | None, api_port: int, workers: list[net.Host], pod_port: int
) -> list[int]:
    """The repository, the pods' stand-ins, and the master's (none: the lab's
    real control plane serves there, lab/kube.py)."""
    www = paths.RUN / "www"
    www.mkdir(parents=True, exist_ok=True)
    (www / "index.html").write_text(NGINX_PAGE)
    make_big(www)
    pids = [_serve(repo.netns, repo.address, 80, str(paths.REPO))]
    if master is not None:
        pids.append(_serve(master.netns, master.address, api_port, str(www)))
    for w in workers:
        pids.append(_serve(w.netns, "0.0.0.0", pod_port, str(www)))
    return pids


def wait_listening(hosts: list[tuple[net.Host, int]], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    for host, port in hosts:
        while True:
            out = net.in_ns(host.netns, "ss", "-Hltn", f"sport = :{port}", check=False).stdout
            if out.strip():
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"lab: nothing listens on {host.name}:{port} after {timeout} s")
            time.sleep(0.1)
