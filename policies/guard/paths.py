"""The path model: entry hop -> Service -> pods -> the policies on those pods.

Entries are what clients (or LBs) talk to: a proxy left running on a host
(from guard_hosts), keepsource's LoadBalancerHost virtual services, in-cluster
routers (Ingress, Gateway API routes, IngressRoute-style CRDs), in-cluster
proxy Deployments read from their ConfigMaps, and Helm v3 Release values where
they name a Service (ingress-nginx ``tcp``/``udp``). A backend reaches a
Service by its nodePort (any node), an externalIP, clusterIP or LoadBalancer
address and port, or its DNS name. Everything is looked up in indexes built once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guard import cloud, hosts, nat
from guard.base import Malformed, Resource, Unknown, as_address, as_port, dig, is_ip
from guard.kube import Cluster, Pods, Svc, SvcPort, View, service_port
from guard.proxies import socat as proxy_socat
from guard.proxies.base import Backend, ConfigError, Hop, Mode

KEEPSOURCE_LB = "keepsource:lb:LoadBalancerHost"

FIX_L4 = "put an L4 LB that keeps the client address in front (keepalived/LVS NAT or DR)"
FIXES = {
    "HAProxy": FIX_L4
    + ", or make HAProxy transparent: `source 0.0.0.0 usesrc clientip` (TPROXY, the LB as the nodes' gateway)",
    "nginx": FIX_L4
    + ", or `proxy_bind $remote_addr transparent` (TPROXY, the LB as the nodes' gateway)",
    "Envoy": FIX_L4 + ", or the original_src listener filter (TPROXY)",
}


@dataclass
class Entry:
    res: Resource
    label: str
    mode: Mode
    detail: str
    fix: str
    backends: tuple[Backend, ...] = ()
    check_sources: tuple[str, ...] = ()
    checks: bool = False
    check_unknown: bool = False
    direct: list[tuple[str, str, Any]] = field(default_factory=list)  # (ns, service, port)
    ns: str | None = None  # an in-cluster hop's namespace (for short Service names)
    host: str | None = None  # the host a hop runs on (its NAT rules apply to it)
    vip: tuple[str | None, int | None] = (None, None)  # an LVS service's address and port
    protocol: str = "TCP"  # what it forwards (an LVS service may forward UDP)
    # what a terminating hop does to the client's address, in a violation's words
    why: str = "it ends the client's TCP connection, so the pods see the proxy's address"


@dataclass
class Path:
    entry: Entry
    svc: Svc
    sp: SvcPort
    via: str
    pods: Pods
    view: View


@dataclass
class Opaque:
    res: Resource
    message: str
    namespace: str | None = None  # only matters if this namespace has ipBlock-restricted pods


@dataclass
class Model:
    cluster: Cluster
    entries: list[Entry]
    paths: list[Path]
    opaque: list[Opaque]


def _lb_entries(
    res: Resource,
    note: Callable[[Resource, str, Any, str], None],
    unknown: Callable[[Resource, str, Unknown], None],
) -> list[Entry]:
    p = res.props
    keeps = dig(p, "preservesClientAddress")
    method = dig(p, "forwardingMethod")
    for fld, val in (("preservesClientAddress", keeps), ("forwardingMethod", method)):
        if isinstance(val, Unknown):
            unknown(res, fld, val)
    sources = _lb_check_sources(res, note, unknown)
    ctype = dig(p, "healthCheckType")
    checks = not isinstance(ctype, str) or ctype.upper() in (
        "TCP",
        "HTTP",
        "HTTPS",
        "TCP_CHECK",
        "HTTP_GET",
        "SSL_GET",
    )
    preserving = keeps is True and (
        not isinstance(method, str) or method.upper() in ("NAT", "DR", "TUN")
    )
    mode: Mode = "preserving" if preserving else "terminating"
    vss = dig(p, "virtualServices")
    if isinstance(vss, Unknown):
        unknown(res, "virtualServices", vss)
        return []
    entries = []
    for i, vs in enumerate(vss if isinstance(vss, list) else []):
        if isinstance(vs, Unknown):
            unknown(res, f"virtualServices[{i}]", vs)
            continue
        if not isinstance(vs, Mapping):
            note(res, f"virtualServices[{i}]", vs, "is not an object")
            continue
        own = list(sources)
        proto_v = dig(vs, "protocol")
        proto = proto_v.upper() if isinstance(proto_v, str) else "TCP"
        src = dig(vs, "check", "source")
        if isinstance(src, str):
            try:
                own.append(str(as_address(src, f"virtualServices[{i}].check.source")))
            except Malformed as err:
                note(res, err.field, err.value, err.reason)
        backends = _real_servers(res, i, vs, note, unknown)
        try:
            vport = as_port(dig(vs, "port"), f"virtualServices[{i}].port")
        except Malformed as err:
            note(res, err.field, err.value, err.reason)
            vport = None
        if not backends and isinstance(vport, int):
            backends.append(Backend("", vport))
        label = f"LoadBalancerHost {res.name} virtual service {dig(vs, 'name') or i} ({dig(vs, 'vip') or dig(p, 'vip')}:{vport})"
        detail = (
            f"LVS {method} keeps the client address"
            if preserving
            else f"forwardingMethod {method!r} / preservesClientAddress {keeps!r}: the real servers do not see the client"
        )
        entries.append(
            Entry(
                res,
                label,
                mode,
                detail,
                "forward with LVS NAT, DR or TUN (preservesClientAddress: true)",
                tuple(backends),
                tuple(dict.fromkeys(own)),
                checks,
                protocol=proto,
            )
        )
    return entries


def _lb_check_sources(
    res: Resource,
    note: Callable[[Resource, str, Any, str], None],
    unknown: Callable[[Resource, str, Unknown], None],
) -> list[str]:
    """The addresses a LoadBalancerHost's health checks come from
    (``healthCheckSource``, ``healthCheckSources``)."""
    sources: list[str] = []
    for fld in ("healthCheckSource", "healthCheckSources"):
        val = dig(res.props, fld)
        vals = val if isinstance(val, list) else [val]
        for i, s in enumerate(vals):
            if s is None:
                continue
            f = fld if not isinstance(val, list) else f"{fld}[{i}]"
            if isinstance(s, Unknown):
                unknown(res, f, s)
                continue
            try:
                sources.append(str(as_address(s, f)))
            except Malformed as err:
                note(res, err.field, err.value, err.reason)
    return sources


def _real_servers(
    res: Resource,
    i: int,
    vs: Mapping[str, Any],
    note: Callable[[Resource, str, Any, str], None],
    unknown: Callable[[Resource, str, Unknown], None],
) -> list[Backend]:
    """The real servers of a LoadBalancerHost's virtual service ``i`` as backends."""
    backends = []
    rss = dig(vs, "realServers")
    if isinstance(rss, Unknown):
        unknown(res, f"virtualServices[{i}].realServers", rss)
    for j, rs in enumerate(rss if isinstance(rss, list) else []):
        port = dig(rs, "port")
        addr = dig(rs, "address")
        if isinstance(port, Unknown) or isinstance(addr, Unknown):
            unknown(
                res,
                f"virtualServices[{i}].realServers[{j}]",
                port if isinstance(port, Unknown) else addr,
            )
            continue
        try:
            rport = as_port(port, f"virtualServices[{i}].realServers[{j}].port")
        except Malformed as err:
            note(res, err.field, err.value, err.reason)
            continue
        if isinstance(rport, int) and isinstance(addr, str):
            backends.append(Backend(addr, rport))
    return backends


def _host_entries(proxy: hosts.Proxy, lb_sources: Mapping[str, tuple[str, ...]]) -> list[Entry]:
    found = []
    for hop in proxy.hops:
        sources = hop.check_sources
        unknown_src = hop.check_source_unknown
        if proxy.managed_by is not None:
            sources = lb_sources.get(proxy.managed_by, sources)
            unknown_src = False
        found.append(
            Entry(
                proxy.by,
                f"{proxy.label} on host {proxy.host}, {hop.where}",
                hop.mode,
                hop.detail,
                FIXES.get(hop.proxy, FIX_L4),
                hop.backends,
                sources,
                hop.checks_backend_port,
                unknown_src,
                host=proxy.host,
            )
        )
    return found


_TARGET = re.compile(r"(?:^|[=\s,])((?:\d{1,3}\.){3}\d{1,3}:\d{1,5})\b")


def _scripts(host: hosts.Host) -> list[Opaque]:
    """Scripts the stack does not hold, given an address and port to reach: they
    may forward, proxy or NAT to it, and the pack cannot see which."""
    found = []
    for name, argv, by in host.scripts:
        targets = list(dict.fromkeys(m.group(1) for a in argv for m in _TARGET.finditer(a)))
        if targets:
            found.append(
                Opaque(
                    by,
                    f"{by.name} runs {name} on host {host.address} with {', '.join(targets)}; that "
                    "script is not in the stack, so the pack cannot tell whether it forwards, "
                    "proxies or NATs traffic there and what it does to the client's address. Put "
                    "the script in the stack (or its rules and config) so the path can be judged.",
                )
            )
    return found


_VS = re.compile(r"virtual_server (\S+) (\d+)")
FIX_SNAT = (
    "let the source NAT match only the sources it is for (`-s` the internal network, as a "
    "hairpin or the nodes' egress needs), not the outside clients: L4 NAT keeps the client "
    "address only without it"
)


def _nat_entries(host: hosts.Host, others: list[Entry]) -> list[Entry]:
    """A host's DNAT rules and ipvsadm services as hops, and its source NATs
    applied to every address-keeping hop on the host (guard_nat)."""
    files = {path: f.text for path, f in host.files.items()}
    hops, snats = nat.read(host.netfilter, files)
    found = [
        Entry(
            h.by,
            f"{h.label} on host {host.address}",
            "preserving",
            "destination NAT keeps the client address",
            FIX_L4,
            h.backends,
            host=host.address,
            vip=(h.vip, h.vport),
        )
        for h in hops
    ]
    for e in [*others, *found]:
        if e.mode != "preserving":
            continue
        vip = e.vip
        if vip == (None, None) and (m := _VS.search(e.label)):
            vip = (m.group(1), int(m.group(2)))
        for rule in snats:
            if rule.hides(e.backends, *vip):
                e.mode = "terminating"
                e.detail = (
                    f"{e.detail}, but `{rule.text}` on the same host rewrites the clients' source "
                    "address (source NAT)"
                )
                e.fix = FIX_SNAT
                e.why = "so the pods see that host's address"
                break
    return found


def _incluster_entries(
    c: Cluster, note: Callable[[Resource, str, Any, str], None], opaque: list[Opaque]
) -> list[Entry]:
    """Proxy workloads in the cluster: their configs from ConfigMaps; socat's
    from its arguments (an argument unknown at preview: advised)."""
    found = []
    for pods in c.pods:
        kinds = {k for img in pods.images if (k := hosts.image_kind(img))}
        if not kinds or pods.scaled_to_zero:
            continue
        if not pods.configmaps and kinds != {"socat"}:
            continue
        if "socat" in kinds and pods.args_unknown:
            opaque.append(
                Opaque(
                    pods.res,
                    f"socat in {pods.label()} (container {', '.join(pods.args_unknown)}): an "
                    "argument is unknown at preview, so the pack cannot tell where it connects. "
                    "socat ends the client's connection; if it fronts ipBlock-restricted pods, "
                    "they see its address.",
                    None,  # the target may be in any namespace
                )
            )
        for kind_name in kinds:
            texts = []
            for cm, _mount in pods.configmaps:
                data = c.configmaps.get((pods.ns, cm))
                if data:
                    texts += [
                        (f"ConfigMap {pods.ns}/{cm} key {k}", v)
                        for k, v in data.items()
                        if isinstance(v, str)
                    ]
            hops_: list[Hop] = []
            if kind_name == "socat":
                for a in pods.args:
                    hops_ += proxy_socat.parse_argv(a)
            else:
                kind = hosts.KINDS[kind_name]
                if kind_name == "nginx":
                    texts = (
                        [(" + ".join(t for t, _ in texts), "\n".join(v for _, v in texts))]
                        if texts
                        else []
                    )
                for where, text in texts:
                    try:
                        hops_ += kind.parse(text)
                    except ConfigError as err:
                        note(pods.res, where, None, f"is not a readable {kind.label} config: {err}")
            for hop in hops_:
                found.append(
                    Entry(
                        pods.res,
                        f"{hop.proxy} in {pods.label()} (config from its ConfigMap), {hop.where}",
                        hop.mode,
                        hop.detail,
                        FIXES.get(hop.proxy, FIX_L4),
                        hop.backends,
                        ns=pods.ns,
                    )
                )
    return found


def _walk_values(v: Any, path: str) -> Iterable[tuple[str, Any]]:
    if isinstance(v, Mapping):
        for k, x in v.items():
            yield from _walk_values(x, f"{path}.{k}" if path else str(k))
    else:
        yield path, v


def _release(
    res: Resource, unknown: Callable[[Resource, str, Unknown], None]
) -> tuple[list[Entry], list[Opaque]]:
    values = dig(res.props, "values")
    ns = dig(res.props, "namespace")
    ns = ns if isinstance(ns, str) else "default"
    chart = dig(res.props, "chart")
    label = f"Helm v3 Release {res.name} (chart {chart if isinstance(chart, str) else '?'}, namespace {ns})"
    if isinstance(values, Unknown):
        unknown(res, "values", values)
        return [], []
    entries: list[Entry] = []
    opaque: list[Opaque] = []
    files = dig(res.props, "valueYamlFiles")
    if isinstance(files, list) and files:
        opaque.append(
            Opaque(
                res,
                f"{label} takes values from {len(files)} file(s) the stack does not hold "
                "(valueYamlFiles): whether the chart renders an Ingress, a route or a "
                "NodePort/LoadBalancer Service in front of ipBlock-restricted pods cannot be "
                "seen. Put the values inline or use the Helm v4 Chart resource.",
                ns,
            )
        )
    for path, v in _walk_values(values if isinstance(values, Mapping) else {}, ""):
        if isinstance(v, Unknown):
            unknown(res, f"values.{path}", v)
            continue
        parts = path.split(".")
        if len(parts) >= 2 and parts[-2] in ("tcp", "udp") and isinstance(v, str) and "/" in v:
            target_ns, _, rest = v.partition("/")
            svc, _, port = rest.partition(":")
            e = Entry(
                res,
                f"{label}: TCP passthrough values.{path} = {v}",
                "terminating",
                "ingress-nginx relays TCP services through nginx's stream proxy",
                FIX_L4 + " for that port instead of the ingress controller",
            )
            e.direct.append((target_ns, svc, int(port) if port.isdigit() else port or None))
            entries.append(e)
        elif parts[-1] == "enabled" and "ingress" in [p.lower() for p in parts[:-1]] and v is True:
            opaque.append(
                Opaque(
                    res,
                    f"{label}: values.{path} is true, so the chart renders an Ingress the pack cannot see (a Helm v3 Release is opaque); if it routes to ipBlock-restricted pods, the controller hides the client. Use the Helm v4 Chart resource (its objects are visible) or check the rendered objects.",
                    ns,
                )
            )
        elif parts[-1] == "type" and v in ("NodePort", "LoadBalancer"):
            opaque.append(
                Opaque(
                    res,
                    f"{label}: values.{path} = {v}, so the chart renders a Service the pack cannot see; if it selects ipBlock-restricted pods it needs externalTrafficPolicy: Local. Use the Helm v4 Chart resource or check the rendered objects.",
                    ns,
                )
            )
    return entries, opaque


def _targets(
    c: Cluster, entry: Entry, unresolved: Callable[[Backend], None]
) -> Iterable[tuple[Svc, SvcPort, str]]:
    """The Service ports an entry's backends reach; ``unresolved``: a backend named
    by a host name (or a variable) that is no Service of the stack."""
    for ns, name, port in entry.direct:
        svc = c.svc_by_name.get((ns, name))
        if svc is not None:
            sp = service_port(svc, port)
            if sp is not None:
                yield svc, sp, f"port {sp.port}"
    for b in entry.backends:
        host = b.host
        if host and not is_ip(host):
            key = _service_dns(host, entry.ns)
            svc = c.svc_by_name.get(key) if key else None
            sp = service_port(svc, b.port) if svc is not None else None
            if svc is not None and sp is not None:
                yield svc, sp, f"DNS {host}:{sp.port}"
            elif host not in ("localhost", "ip6-localhost") and not host.startswith("127."):
                unresolved(b)
            continue
        if b.port is None:
            continue
        hit = c.svc_by_external.get((host, b.port))
        if hit:
            for svc, sp in hit:
                yield (
                    svc,
                    sp,
                    f"{_address_kind(svc, host)} {host}:{b.port}",
                )
            continue
        for svc, sp in c.svc_by_node_port.get(b.port, []):
            yield svc, sp, f"nodePort {b.port}"


def _address_kind(svc: Svc, host: str) -> str:
    if host in svc.external_ips:
        return "externalIP"
    return "LoadBalancer IP" if host in svc.lb_ips else "clusterIP"


def _service_dns(host: str, own_ns: str | None) -> tuple[str, str] | None:
    """(namespace, name) of a Service DNS name: ``name`` (in the pod's own
    namespace), ``name.ns``, ``name.ns.svc[.cluster.local]``; else None."""
    labels = host.rstrip(".").split(".")
    if len(labels) == 1:
        return (own_ns, labels[0]) if own_ns else None
    if len(labels) == 2 or labels[2] == "svc":
        return labels[1], labels[0]
    return None


def build(
    resources: Sequence[Resource],
    note: Callable[[Resource, str, Any, str], None],
    unknown: Callable[[Resource, str, Unknown], None],
    cluster: Cluster,
) -> Model:
    entries: list[Entry] = []
    opaque: list[Opaque] = []
    lb_sources: dict[str, tuple[str, ...]] = {}
    for res in resources:
        if res.type == KEEPSOURCE_LB:
            try:
                es = _lb_entries(res, note, unknown)
            except Malformed as err:
                note(res, err.field, err.value, err.reason)
                continue
            entries += es
            lb_sources[res.urn] = tuple(dict.fromkeys(s for e in es for s in e.check_sources))
    _host_hops(resources, note, unknown, lb_sources, entries, opaque)
    entries += _incluster_entries(cluster, note, opaque)
    lb_why = "so the pods see the load balancer's address"
    for res, label, detail, backends, fix in cloud.elbv2(resources, note, unknown):
        entries.append(Entry(res, label, "terminating", detail, fix, backends, why=lb_why))
    for svc in cluster.services:
        hidden = cloud.service_lb(svc)
        if hidden is not None:
            e = Entry(svc.res, hidden[0], "terminating", hidden[1], cloud.FIX, why=lb_why)
            e.direct += [(svc.ns, svc.name, sp.port) for sp in svc.ports]
            entries.append(e)
    for r in cluster.routes:
        e = Entry(r.res, r.label, "terminating", r.detail, r.fix)
        e.direct.append((r.service_ns, r.service, r.port))
        entries.append(e)
    for rel in cluster.releases:
        es, ops = _release(rel, unknown)
        entries += es
        opaque += ops
    paths = _paths(cluster, entries, opaque)
    return Model(cluster, entries, paths, opaque)


def _host_hops(
    resources: Sequence[Resource],
    note: Callable[[Resource, str, Any, str], None],
    unknown: Callable[[Resource, str, Unknown], None],
    lb_sources: Mapping[str, tuple[str, ...]],
    entries: list[Entry],
    opaque: list[Opaque],
) -> None:
    """The hosts' proxies and NAT rules as hops (into ``entries``), and what the
    pack cannot see on them (into ``opaque``); of :func:`build`."""
    for host in hosts.build(resources, note, unknown).values():
        for proxy in hosts.proxies(host, lb_sources):
            if proxy.managed_by is not None and proxy.kind == "keepalived":
                continue  # its LoadBalancerHost registers the same virtual services as facts
            _proxy_gaps(proxy, note, opaque)
            entries += _host_entries(proxy, lb_sources)
        if host.netfilter:
            entries += _nat_entries(host, [e for e in entries if e.host == host.address])
        opaque += _scripts(host)


def _proxy_gaps(
    proxy: hosts.Proxy, note: Callable[[Resource, str, Any, str], None], opaque: list[Opaque]
) -> None:
    """A host proxy's config error (noted), and its config or part of it not in
    the stack (into ``opaque``)."""
    if proxy.config_error:
        note(
            proxy.by,
            "config",
            None,
            f"{proxy.label} on host {proxy.host}: {proxy.config_error}",
        )
    if proxy.config_missing and proxy.kind != "keepalived":
        opaque.append(
            Opaque(
                proxy.by,
                f"{proxy.label} is {proxy.state} on host {proxy.host}, but its config is not in the stack: the pack cannot tell which pods it fronts. A proxy ends the client's connection; if it fronts ipBlock-restricted pods, they see its address. Put the config in the stack (stdin, heredoc, CopyToRemote) or stop it.",
            )
        )
    if proxy.missing_paths and not proxy.config_missing:
        opaque.append(
            Opaque(
                proxy.by,
                f"{proxy.label} is {proxy.state} on host {proxy.host}, and part of its config "
                f"({', '.join(proxy.missing_paths)}) is not in the stack: the pack judged the "
                "rest, and cannot tell which pods that part fronts. A proxy ends the client's "
                "connection; if it fronts ipBlock-restricted pods, they see its address. Put "
                "that config in the stack too.",
            )
        )


def _paths(cluster: Cluster, entries: list[Entry], opaque: list[Opaque]) -> list[Path]:
    """Every path from an entry through a Service port to its pods; an entry with
    backends the pack cannot resolve goes into ``opaque`` (of :func:`build`)."""
    paths = []
    for e in entries:
        seen: set[tuple[int, int, int]] = set()
        names: list[str] = []

        def unresolved(b: Backend, names: list[str] = names) -> None:
            names.append(f"{b.host}:{b.port}" if b.port is not None else b.host)

        for svc, sp, via in _targets(cluster, e, unresolved):
            if sp.protocol != e.protocol:
                continue  # a UDP Service port is no target of a TCP hop, and back
            for pods in cluster.pods_of(svc):
                key = (id(svc), sp.port, id(pods))
                if key in seen:
                    continue
                seen.add(key)
                paths.append(
                    Path(e, svc, sp, via, pods, cluster.view(pods, sp.target, sp.protocol))
                )
        if names and (e.mode == "terminating" or e.checks):
            opaque.append(_unresolved(e, list(dict.fromkeys(names))))
    return paths


def _unresolved(e: Entry, names: list[str]) -> Opaque:
    """A hop whose backends are host names the pack cannot map to an address or a
    Service of the stack: it cannot tell which pods they reach."""
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    plural = len(names) > 1
    what = "host names" if plural else "a host name"
    if any("$" in n for n in names):
        what += " or variables" if plural else " or a variable"
    return Opaque(
        e.res,
        f"{e.label}: its backend{'s' if plural else ''} {shown} "
        f"{'are' if plural else 'is'} {what} the pack cannot resolve to an "
        "address (the host resolves names at run time), so it cannot tell whether this hop "
        "reaches ipBlock-restricted pods (a worker's nodePort, say). The hop: "
        f"{e.detail}; pods behind it would see the proxy's address, not the client's. Name "
        "the backends by address (or by their Service's DNS name) so the pack can judge the "
        f"path. If they do reach such pods: {e.fix}.",
        e.ns,
    )
