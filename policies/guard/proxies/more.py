"""More proxies people run: stunnel, Apache mod_proxy, systemd-socket-proxyd,
``kubectl port-forward`` as a service.

- stunnel (its ini-style config, ``[service]`` sections): ``connect = HOST:PORT``
  opens a connection of its own (terminating) unless ``transparent = source``
  (stunnel manual: binds the client's address; TPROXY on the host).
- Apache httpd with mod_proxy: ``ProxyPass PATH URL``, ``ProxyPassMatch RE URL``
  and ``BalancerMember URL`` in ``<Proxy balancer://..>``: every one terminating
  (Apache's own connection; ``ProxyPreserveHost`` keeps only the Host header).
- systemd-socket-proxyd ``[OPTIONS] HOST:PORT``: a relay, terminating.
- ``ssh``/``autossh`` with ``-L [BIND:]PORT:HOST:HOSTPORT`` (local forwards): the
  SSH server opens each forwarded connection itself (ssh(1) ``-L``), so HOST sees
  the SSH server's address: terminating. ``-R`` and ``-D`` are not read.
- ``kubectl port-forward [--address A] svc/NAME|pod/NAME LOCAL:REMOTE [-n NS]``:
  the API server tunnels each connection to the pod; the pod sees a connection
  from its node's kubelet side, never the client (terminating). A ``svc/``
  target is that Service (by its DNS name, in the given namespace).
"""

from __future__ import annotations

import re
import shlex

from guard.proxies.base import Backend, ConfigError, Hop, split_hostport


def stunnel(text: str) -> list[Hop]:
    hops: list[Hop] = []
    section = ""
    values: dict[str, str] = {}

    def close() -> None:
        connect = values.get("connect")
        if not section or not connect:
            return
        backend = (
            split_hostport(connect)
            if ":" in connect
            else Backend("localhost", int(connect))
            if connect.isdigit()
            else None
        )
        if backend is None:
            return
        transparent = values.get("transparent", "").lower() in ("source", "both", "yes")
        hops.append(
            Hop(
                "stunnel",
                f"[{section}] accept {values.get('accept', '?')}",
                "transparent" if transparent else "terminating",
                (backend,),
                "`transparent = source` (binds the client's address)"
                if transparent
                else "stunnel opens its own connection (no `transparent = source`)",
            )
        )

    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";", 1)[0].split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            close()
            section, values = line[1:-1].strip(), {}
        elif "=" in line:
            key, _, value = line.partition("=")
            values[key.strip().lower()] = value.strip()
        else:
            raise ConfigError(f"line {n}: {line!r} is no `key = value` or `[service]`")
    close()
    return hops


_PROXYPASS = re.compile(
    r"^\s*(ProxyPass|ProxyPassMatch|BalancerMember)\s+(.*)$", re.IGNORECASE | re.MULTILINE
)


def apache(text: str) -> list[Hop]:
    hops: list[Hop] = []
    for m in _PROXYPASS.finditer(text):
        try:
            words = shlex.split(m.group(2))  # Apache arguments may be quoted
        except ValueError:
            words = m.group(2).split()
        url = next((w for w in words if "://" in w), None)
        if url is None or url.lower().startswith("balancer://"):
            continue
        backend = split_hostport(url)
        if backend is None:
            continue
        hops.append(
            Hop(
                "Apache",
                f"{m.group(1)} {' '.join(words[:2])}",
                "terminating",
                (backend,),
                "mod_proxy opens its own connection (ProxyPreserveHost keeps only the Host header)",
            )
        )
    return hops


def socket_proxyd(argv: list[str]) -> list[Hop]:
    target = next((a for a in reversed(argv) if not a.startswith("-")), None)
    backend = split_hostport(target) if target else None
    if backend is None:
        return []
    return [
        Hop(
            "systemd-socket-proxyd",
            target or "",
            "terminating",
            (backend,),
            "a relay: it opens its own connection",
        )
    ]


def port_forward(argv: list[str]) -> list[Hop]:
    if "port-forward" not in argv:
        return []
    rest = argv[argv.index("port-forward") + 1 :]
    ns = "default"
    for i, a in enumerate(argv):
        if a in ("-n", "--namespace") and i + 1 < len(argv):
            ns = argv[i + 1]
        elif a.startswith("--namespace="):
            ns = a.split("=", 1)[1]
    skip = {"--address", "-n", "--namespace", "--kubeconfig", "--context", "--pod-running-timeout"}
    pos = [
        a
        for i, a in enumerate(rest)
        if not a.startswith("-") and (i == 0 or rest[i - 1] not in skip)
    ]
    if len(pos) < 2 or "/" not in pos[0]:
        return []
    kind, _, name = pos[0].partition("/")
    if kind not in ("svc", "service", "services"):
        return []
    backends = []
    for mapping in pos[1:]:
        remote = mapping.split(":")[-1]
        if remote.isdigit():
            backends.append(Backend(f"{name}.{ns}", int(remote)))
    return [
        Hop(
            "kubectl port-forward",
            f"{pos[0]} {' '.join(pos[1:])}",
            "terminating",
            tuple(backends),
            "the API server tunnels each connection to the pod; the pod never sees the client",
        )
    ]


def ssh_forward(argv: list[str]) -> list[Hop]:
    """``ssh``/``autossh`` local forwards (``-L SPEC``, ``-LSPEC``, ``-o LocalForward=..``)."""
    specs: list[str] = []
    for i, a in enumerate(argv):
        if a == "-L" and i + 1 < len(argv):
            specs.append(argv[i + 1])
        elif a.startswith("-L") and len(a) > 2:
            specs.append(a[2:])
        elif i > 0 and argv[i - 1] == "-o" and a.lower().startswith("localforward"):
            spec = a.split("=", 1)[1] if "=" in a else a.split(None, 1)[-1]
            specs.append(":".join(spec.split()))
    hops = []
    for spec in specs:
        parts = spec.replace("[", "").replace("]", "").split(":")
        if len(parts) < 3 or not parts[-1].isdigit():
            continue  # a Unix socket forward, or not a forward to HOST:PORT
        backend = Backend(parts[-2], int(parts[-1]))
        hops.append(
            Hop(
                "ssh tunnel",
                f"-L {spec}",
                "terminating",
                (backend,),
                "the SSH server opens each forwarded connection itself (ssh -L)",
            )
        )
    return hops
