"""NAT on a host: DNAT and LVS services as hops, SNAT/MASQUERADE that hides clients.

Read from what a host's Commands run (guard_shell's ``netfilter`` events):

- ``iptables -t nat -A PREROUTING|OUTPUT ... -j DNAT --to-destination A:P``: an
  L4 hop that keeps the client address (destination NAT only), to ``A:P``.
- ``ipvsadm -A -t|-u VIP:PORT`` with ``-a ... -r RIP[:RPORT] -m|-g|-i``: an LVS
  service (NAT, DR or tunnel), which keeps the client address.
- ``iptables -t nat -A POSTROUTING ... -j MASQUERADE|SNAT``: a source NAT. It
  hides the clients of a hop on the same host when it matches that hop's
  traffic: no ``-s`` (a rule with ``-s`` names the sources it rewrites, such as
  the nodes' own egress or internal clients of a hairpin, not outside
  clients), ``-d`` containing a backend, ``--dport`` a backend's port,
  ``-m ipvs --vaddr/--vport`` the LVS service's.
- ``nft -f FILE`` (its text from the stack) and ``nft add rule ...``: each rule
  with ``dnat to A:P`` is a hop; each with ``masquerade`` or ``snat to`` a source
  NAT, its conditions from ``ip saddr``, ``ip daddr`` and ``tcp dport``.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from guard.base import Resource
from guard.proxies.base import Backend, split_hostport

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class NatHop:
    by: Resource
    label: str
    backends: tuple[Backend, ...]
    vip: str | None = None  # an LVS service's address (for ``-m ipvs --vaddr``)
    vport: int | None = None


@dataclass(frozen=True)
class Snat:
    by: Resource
    text: str
    sources: bool  # the rule names its sources (-s / ip saddr): not the outside clients
    dst: tuple[Net, ...] = ()
    dport: int | None = None
    vaddr: Net | None = None
    vport: int | None = None

    def hides(self, backends: Sequence[Backend], vip: str | None, vport: int | None) -> bool:
        """Whether this rule rewrites the source of traffic a hop sends to ``backends``."""
        if self.sources:
            return False
        if self.vaddr is not None:
            if vip is None or not _in(vip, [self.vaddr]):
                return False
            if self.vport is not None and vport is not None and self.vport != vport:
                return False
        if self.dst and not any(_in(b.host, self.dst) for b in backends):
            return False
        return not (self.dport is not None and all(b.port != self.dport for b in backends))


def _in(addr: str, nets: Iterable[Net]) -> bool:
    try:
        a = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(a.version == n.version and a in n for n in nets)


def _net(text: str) -> Net | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _opts(argv: Sequence[str]) -> dict[str, str]:
    """iptables options: the last value of each (``! -s X`` kept as ``!-s``)."""
    out: dict[str, str] = {}
    neg = False
    for i, a in enumerate(argv):
        if a == "!":
            neg = True
            continue
        if a.startswith("-") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            out[("!" if neg else "") + a] = argv[i + 1]
        elif a.startswith("-"):
            out.setdefault(a, "")
        neg = False
    return out


def _iptables(argv: Sequence[str], by: Resource) -> NatHop | Snat | None:
    o = _opts(argv)
    if o.get("-t", o.get("--table", "filter")) != "nat":
        return None
    chain = next((o[k] for k in ("-A", "--append", "-I", "--insert") if k in o), "")
    target = o.get("-j", o.get("--jump", ""))
    text = "iptables " + " ".join(argv)
    if target == "DNAT" and chain in ("PREROUTING", "OUTPUT"):
        to = split_hostport(o.get("--to-destination", o.get("--to", "")))
        if to is None:
            return None
        port = to.port or _int(o.get("--dport", o.get("--destination-port", "")))
        return NatHop(by, f"iptables DNAT ({text})", (Backend(to.host, port),))
    if target in ("MASQUERADE", "SNAT") and chain == "POSTROUTING":
        dst = (
            _net(o["-d"])
            if "-d" in o
            else _net(o.get("--destination", ""))
            if "--destination" in o
            else None
        )
        vaddr = _net(o["--vaddr"]) if "--vaddr" in o else None
        return Snat(
            by,
            text,
            sources="-s" in o or "--source" in o,
            dst=(dst,) if dst is not None else (),
            dport=_int(o.get("--dport", o.get("--destination-port", ""))),
            vaddr=vaddr,
            vport=_int(o.get("--vport", "")),
        )
    return None


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


_NFT_DEFINE = re.compile(r"define\s+([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.+)$")
_NFT_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_NFT_DNAT = re.compile(r"\bdnat\s+(?:ip\s+)?to\s+(\S+)")
_NFT_SADDR = re.compile(r"\bip6?\s+saddr\s+(!=\s*)?(\S+)")
_NFT_DADDR = re.compile(r"\bip6?\s+daddr\s+(\S+)")
_NFT_DPORT = re.compile(r"\b(?:tcp|udp|th)\s+dport\s+(\d+)")


def nft_rules(text: str, by: Resource) -> list[NatHop | Snat]:
    """The NAT statements of an nftables ruleset (one rule per line or ``;``),
    with its ``define NAME = VALUE`` variables (``$NAME``) expanded."""
    found: list[NatHop | Snat] = []
    defines: dict[str, str] = {}
    for raw in re.split(r"[\n;]", text):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if m := _NFT_DEFINE.match(line):
            defines[m.group(1)] = _NFT_VAR.sub(
                lambda v: defines.get(v.group(1), v.group(0)), m.group(2)
            )
            continue
        line = _NFT_VAR.sub(lambda v: defines.get(v.group(1), v.group(0)), line)
        dnat = _NFT_DNAT.search(line)
        dport = _NFT_DPORT.search(line)
        if dnat:
            to = split_hostport(dnat.group(1))
            if to is not None:
                port = to.port or (int(dport.group(1)) if dport else None)
                found.append(NatHop(by, f"nftables dnat ({line})", (Backend(to.host, port),)))
        elif re.search(r"\b(masquerade|snat\s+(ip\s+)?to)\b", line):
            saddr = _NFT_SADDR.search(line)
            daddr = _NFT_DADDR.search(line)
            dst = _net(daddr.group(1)) if daddr else None
            found.append(
                Snat(
                    by,
                    f"nftables ({line})",
                    sources=bool(saddr and not saddr.group(1)),
                    dst=(dst,) if dst is not None else (),
                    dport=int(dport.group(1)) if dport else None,
                )
            )
    return found


def read(
    calls: Sequence[tuple[str, tuple[str, ...], Resource]],
    files: dict[str, str | None],
) -> tuple[list[NatHop], list[Snat]]:
    """A host's NAT hops and source NATs from its netfilter calls, in order."""
    hops: list[NatHop] = []
    snats: list[Snat] = []
    services: dict[str, tuple[Resource, list[Backend]]] = {}
    for prog, argv, by in calls:
        items: list[NatHop | Snat] = []
        if _checks_only(prog, argv):
            continue
        if prog.endswith("-restore"):
            path = next((a for a in argv if not a.startswith("-")), None)
            text = files.get(path) if path else None
            items = restore_rules(text, by) if text else []
        elif prog.startswith("ip") and prog != "ipvsadm":
            one = _iptables(argv, by)
            items = [one] if one is not None else []
        elif prog == "nft":
            if "-f" in argv and argv.index("-f") + 1 < len(argv):
                text = files.get(argv[argv.index("-f") + 1])
                items = nft_rules(text, by) if text else []
            elif "add" in argv or "insert" in argv:
                items = nft_rules(" ".join(argv), by)
        elif prog == "ipvsadm":
            _ipvsadm(argv, by, services)
        for it in items:
            (hops if isinstance(it, NatHop) else snats).append(it)  # type: ignore[arg-type]
    for vs, (by, backends) in services.items():
        vip = split_hostport(vs)
        hops.append(
            NatHop(
                by,
                f"LVS service {vs} (ipvsadm)",
                tuple(backends),
                vip.host if vip else None,
                vip.port if vip else None,
            )
        )
    return hops, snats


def _checks_only(prog: str, argv: Sequence[str]) -> bool:
    """``nft -c``, ``iptables-restore --test``: a check that loads nothing."""
    if prog == "nft":
        return "-c" in argv or "--check" in argv
    return prog.endswith("-restore") and ("-t" in argv or "--test" in argv)


def restore_rules(text: str, by: Resource) -> list[NatHop | Snat]:
    """The NAT rules of an ``iptables-save`` file (``*nat`` ... ``COMMIT``), as
    ``iptables-restore`` loads them."""
    found: list[NatHop | Snat] = []
    table = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(("-A ", "-I ")) and table == "nat":
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            one = _iptables(("-t", "nat", *words), by)
            if one is not None:
                found.append(one)
    return found


def _ipvsadm(
    argv: Sequence[str], by: Resource, services: dict[str, tuple[Resource, list[Backend]]]
) -> None:
    o = _opts(argv)
    vs = o.get("-t") or o.get("--tcp-service") or o.get("-u") or o.get("--udp-service")
    if not vs:
        return
    if "-A" in o or "--add-service" in o:
        services.setdefault(vs, (by, []))
    elif "-a" in o or "--add-server" in o:
        real = split_hostport(o.get("-r", o.get("--real-server", "")))
        if real is None:
            return
        default = split_hostport(vs)
        port = real.port or (default.port if default else None)
        services.setdefault(vs, (by, []))[1].append(Backend(real.host, port))
