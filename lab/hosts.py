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

import dataclasses
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
    """One port of one Service as a worker's stand-in serves it: the nodePort,
    the pod's port, the NetworkPolicy's ipBlocks admitted on that port, and
    its protocol (``tcp`` or ``udp``)."""

    node_port: int
    pod_port: int
    admitted: tuple[str, ...]
    protocol: str = "tcp"


def pod_filter(manifests: str, seed: bool, check_source: str | tuple[str, ...]) -> PodFilter:
    """The CNI stand-in's view of the rendered manifests.yaml (its first
    Service's first port). ``check_source``: the LB's check source, or every LB
    host's (the pair): the seed's policy admits none of them."""
    return pod_filters(manifests, seed, check_source)[0]


def pod_filters(
    manifests: str, seed: bool, check_source: str | tuple[str, ...]
) -> tuple[PodFilter, ...]:
    """Every Service port of the rendered manifests.yaml, each with the ipBlocks
    its NetworkPolicy (the one of the same name and namespace) admits."""
    sources = (check_source,) if isinstance(check_source, str) else check_source
    docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(manifests) if d]
    out: list[PodFilter] = []
    for service, policy in _pairs(docs):
        if service["spec"].get("externalTrafficPolicy") != "Local":
            raise SystemExit("lab: the rendered Service is not externalTrafficPolicy: Local")
        out += _from_objects(service, policy)
    if not out:
        raise SystemExit("lab: the rendered manifests hold no Service")
    if seed:  # the seed's policy admitted the clients only, not the LB's checks
        out = [
            dataclasses.replace(f, admitted=tuple(c for c in f.admitted if not _covers(c, sources)))
            for f in out
        ]
    return tuple(out)


def _pairs(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each Service with the NetworkPolicy of its name and namespace."""
    policies = {
        (d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in docs
        if d["kind"] == "NetworkPolicy"
    }
    pairs = []
    for d in docs:
        if d["kind"] != "Service":
            continue
        key = (d["metadata"].get("namespace"), d["metadata"]["name"])
        if key not in policies:
            raise SystemExit(f"lab: Service {key[0]}/{key[1]} has no NetworkPolicy of its name")
        pairs.append((d, policies[key]))
    return pairs


def api_filter(
    service: dict[str, Any], policy: dict[str, Any], node_addresses: tuple[str, ...]
) -> PodFilter:
    """:func:`api_filters`' first port."""
    return api_filters(service, policy, node_addresses)[0]


def api_filters(
    service: dict[str, Any], policy: dict[str, Any], node_addresses: tuple[str, ...]
) -> tuple[PodFilter, ...]:
    """The stand-ins' view of a Service and its NetworkPolicy *as the API holds
    them*, one filter per Service port. With ``externalTrafficPolicy: Cluster``
    kube-proxy masquerades every NodePort packet, so the pod sees a node's
    address: no client is admitted through the NodePort (refused when the
    policy admits a node address, which the stand-ins do not model)."""
    filters = _from_objects(service, policy)
    if service["spec"].get("externalTrafficPolicy", "Cluster") == "Local":
        return filters
    for f in filters:
        for cidr in f.admitted:
            if _covers(cidr, node_addresses):
                raise SystemExit(f"lab: the policy admits a node address ({cidr}): not modelled")
    return tuple(PodFilter(f.node_port, f.pod_port, (), f.protocol) for f in filters)


def _covers(cidr: str, addresses: tuple[str, ...]) -> bool:
    return any(ipaddress.ip_address(a) in ipaddress.ip_network(cidr) for a in addresses)


def _from_objects(service: dict[str, Any], policy: dict[str, Any]) -> tuple[PodFilter, ...]:
    """One filter per Service port: what the policy's rules admit on the pod's
    port and protocol (a NetworkPolicy matches the pod's port, after DNAT; a
    rule without ports admits on every port)."""
    rules = policy["spec"].get("ingress", [])
    out = []
    for port in service["spec"]["ports"]:
        proto = str(port.get("protocol", "TCP"))
        pod_port = int(port["targetPort"])
        admitted: list[str] = []
        for rule in rules:
            ports = rule.get("ports", [])
            if ports and not any(
                int(p["port"]) == pod_port and str(p.get("protocol", "TCP")) == proto for p in ports
            ):
                continue
            admitted += [p["ipBlock"]["cidr"] for p in rule.get("from", []) if "ipBlock" in p]
        if rules and not admitted and all(r.get("ports") for r in rules):
            raise SystemExit("lab: the policy's port is not the pod's port")
        out.append(
            PodFilter(
                int(port["nodePort"]), pod_port, tuple(dict.fromkeys(admitted)), proto.lower()
            )
        )
    return tuple(out)


def worker_rules(f: PodFilter | list[tuple[PodFilter, str]], mode: str = "pod") -> str:
    """iptables-restore input for a worker: for each filter, its mode "pod"
    (serves, filtered by the policy), "drop" (Local without an endpoint) or
    "refuse" (nothing listens). A filter alone takes ``mode``."""
    entries = [(f, mode)] if isinstance(f, PodFilter) else f
    nat = [
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
    ]
    filt = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    closed: list[str] = []
    for pf, m in entries:
        p = pf.protocol
        if m == "pod":
            nat.append(
                f"-A PREROUTING -p {p} --dport {pf.node_port} -j REDIRECT --to-ports {pf.pod_port}"
            )
            filt += [
                f"-A INPUT -p {p} -s {cidr} --dport {pf.pod_port} -j ACCEPT" for cidr in pf.admitted
            ]
        elif m == "refuse":
            reject = "tcp-reset" if p == "tcp" else "icmp-port-unreachable"
            filt.append(f"-A INPUT -p {p} --dport {pf.node_port} -j REJECT --reject-with {reject}")
        else:
            filt.append(f"-A INPUT -p {p} --dport {pf.node_port} -j DROP")
        closed.append(f"-A INPUT -p {p} --dport {pf.pod_port} -j DROP")
    lines = [*nat, "COMMIT", *filt, *dict.fromkeys(closed), "COMMIT"]
    return "\n".join(lines) + "\n"


def set_workers(
    workers: list[net.Host],
    modes: dict[str, str],
    f: PodFilter | None = None,
    *,
    views: list[tuple[PodFilter, dict[str, str]]] | None = None,
) -> None:
    """Each worker's stand-in rules: one filter with ``modes`` (worker name to
    mode; "drop" where none is named), or ``views``: several filters, each with
    its own modes (one per Service port)."""
    entries = views if views is not None else [(f, modes)] if f is not None else []
    for w in workers:
        subprocess.run(
            ["ip", "netns", "exec", w.netns, "iptables-restore"],
            input=worker_rules([(pf, m.get(w.name, "drop")) for pf, m in entries]),
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


def dns_log(worker: net.Host, pod_port: int) -> Path:
    """The query log of a worker's DNS stand-in (lab/dns.py)."""
    return paths.RUN / f"{worker.netns}-udp{pod_port}.log"


def _serve_dns(worker: net.Host, port: int) -> int:
    log = open(paths.RUN / f"{worker.netns}-udp{port}.out", "w")  # noqa: SIM115 (kept by the child)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", worker.netns, sys.executable, "-m", "lab.dns", "serve",
         "0.0.0.0", str(port), str(dns_log(worker, port))],
        cwd=paths.PROJECT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    return proc.pid


def start_pods(workers: list[net.Host], ports: list[tuple[str, int]]) -> list[int]:
    """Every worker's pod stand-ins: the nginx page on each TCP port, the DNS
    responder on each UDP port ((protocol, port) pairs, lower case)."""
    www = paths.RUN / "www"
    pids = []
    for w in workers:
        for proto, port in dict.fromkeys(ports):
            pids.append(
                _serve(w.netns, "0.0.0.0", port, str(www))
                if proto == "tcp"
                else _serve_dns(w, port)
            )
    return pids


def start_servers(
    repo: net.Host,
    master: net.Host | None,
    api_port: int,
    workers: list[net.Host],
    pod_ports: int | list[tuple[str, int]],
) -> list[int]:
    """The repository, the pods' stand-ins (one TCP port, or (protocol, port)
    pairs), and the master's (none: the lab's real control plane serves there,
    lab/kube.py)."""
    www = paths.RUN / "www"
    www.mkdir(parents=True, exist_ok=True)
    (www / "index.html").write_text(NGINX_PAGE)
    make_big(www)
    pids = [_serve(repo.netns, repo.address, 80, str(paths.REPO))]
    if master is not None:
        pids.append(_serve(master.netns, master.address, api_port, str(www)))
    ports = [("tcp", pod_ports)] if isinstance(pod_ports, int) else pod_ports
    return pids + start_pods(workers, ports)


def wait_listening(
    hosts: list[tuple[net.Host, int]], timeout: float = 20, protocol: str = "tcp"
) -> None:
    flags = "-Hltn" if protocol == "tcp" else "-Hlun"
    deadline = time.monotonic() + timeout
    for host, port in hosts:
        while True:
            out = net.in_ns(host.netns, "ss", flags, f"sport = :{port}", check=False).stdout
            if out.strip():
                break
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"lab: nothing listens on {host.name}:{port}/{protocol} after {timeout} s"
                )
            time.sleep(0.1)
