"""``./ks status STACK``: what each LB host serves, as a table.

One SSH command per LB host (the program's own connection model: jump host,
pinned host keys, ``sudo -n``) reads the IPVS table (``ipvsadm -Ln``, the
kernel's own view), whether keepalived runs, and the host's addresses. The
rows join that with the stack's pools (fwmark -> service, VIP port,
protocol, configured real servers): a configured real server missing from
the table is out of the pool (its checks fail); the connection counts are
IPVS's per real server. For a pair, which host holds the VIP and the nodes'
gateway. The same facts Prometheus gets from the LB's exporters
(docs/services.md, "Health in view").
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from keepsource import facts
from keepsource.host import lb_host
from keepsource.render.keepalived import VirtualService
from keepsource.settings import Settings

#: Markers between the command's parts in its output.
_PARTS = ("@@ipvs", "@@keepalived", "@@addr")
_KEEPALIVED = facts.unit_active("keepalived")
COMMAND = (
    f"echo @@ipvs; {facts.IPVS_TABLE.command} 2>&1; "
    f"echo @@keepalived; {_KEEPALIVED.command} 2>&1; "
    f"echo @@addr; {facts.IPV4_ADDRESSES.command} 2>&1"
)


def _split(out: str) -> dict[str, str]:
    parts: dict[str, list[str]] = {p: [] for p in _PARTS}
    at: str | None = None
    for line in out.splitlines():
        if line.strip() in _PARTS:
            at = line.strip()
        elif at is not None:
            parts[at].append(line)
    return {k: "\n".join(v) for k, v in parts.items()}


@dataclass(frozen=True)
class HostState:
    name: str
    reachable: bool
    keepalived: str
    addresses: frozenset[str]
    table: facts.IpvsTable


def read_host(name: str, run: Callable[[str], tuple[int, str]]) -> HostState:
    rc, out = run(COMMAND)
    if rc == 255 or "@@ipvs" not in out:
        return HostState(name, False, "unknown", frozenset(), {})
    parts = _split(out)
    addrs = facts.ips(facts.IPV4_ADDRESSES.parse(parts["@@addr"]))
    state = _KEEPALIVED.parse(parts["@@keepalived"])
    table = facts.IPVS_TABLE.parse(parts["@@ipvs"])
    return HostState(name, True, state, frozenset(addrs), table)


def rows(vss: Sequence[VirtualService], host: HostState) -> list[list[str]]:
    """One row per configured real server of each pool, as this host serves it."""
    out = []
    for vs in vss:
        live = {r.address: r for r in host.table.get(facts.fwmark_key(vs.fwmark), [])}
        for rs in vs.real_servers:
            key = f"{rs.address}:{rs.port}"
            r = live.get(key)
            state = "in pool" if r is not None and r.weight > 0 else "out (check failing)"
            if r is not None and r.weight == 0:
                state = "weight 0"
            out.append(
                [
                    vs.name,
                    f"{vs.vip}:{vs.port}/{vs.protocol.lower()}",
                    f"{rs.name} {key}",
                    state,
                    str(r.active) if r else "-",
                    str(r.inactive) if r else "-",
                ]
            )
    return out


HEADER = ["service", "on the VIP", "real server", "state", "active", "inactive"]


def table(lines: list[list[str]], header: list[str] = HEADER) -> str:
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r).rstrip() for r in [header, *lines])


def report(settings: Settings, states: dict[str, HostState]) -> tuple[str, bool]:
    """The whole report and whether every pool has a real server on the host
    that holds the VIP."""
    vip = str(settings.network.vip)
    text = []
    ok = True
    holders = [n for n, s in states.items() if vip in s.addresses]
    for node in settings.lb_nodes:
        st = states[node.name]
        holds = "holds the VIP" if node.name in holders else "does not hold the VIP"
        if not st.reachable:
            text.append(f"{node.name}: unreachable over SSH")
            ok = False
            continue
        text.append(f"{node.name}: keepalived {st.keepalived}, {holds} {vip}")
        vss = lb_host(settings, node).pools
        body = rows(vss, st)
        text.append(table(body))
        if node.name in holders:
            for vs in vss:
                if not any(r[3] == "in pool" for r in body if r[0] == vs.name):
                    ok = False
    if len(holders) != 1:
        ok = False
        text.append(f"VIP {vip} held by {', '.join(holders) or 'no LB host'}")
    return "\n".join(text), ok


def run_status(settings: Settings, root: Path, identity: str | None) -> int:
    """Print the report; 0 when every pool serves from the VIP's holder."""
    from keepsource.verify import lb_runner

    states: dict[str, HostState] = {}
    with tempfile.TemporaryDirectory(prefix="keepsource-ssh-") as control:
        for node in settings.lb_nodes:
            runner = lb_runner(settings, root, identity, node=node, control_dir=Path(control))
            try:
                states[node.name] = read_host(node.name, runner)
            finally:
                runner.close()
    text, ok = report(settings, states)
    print(text, flush=True)
    return 0 if ok else 1
