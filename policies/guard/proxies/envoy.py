"""Envoy (static YAML or JSON bootstrap): listeners, their filters, clusters.

Envoy ends the client's connection in ``tcp_proxy`` and in
``http_connection_manager``; a listener with the ``original_src`` listener
filter (or ``transparent: true`` plus original_src) connects onward with the
client's address. PROXY protocol (``proxy_protocol`` transport) does not count.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from guard.proxies.base import Backend, ConfigError, Hop, port_number

PROXY = "Envoy"


def load(text: str) -> Mapping[str, Any]:
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"not YAML/JSON: {str(err).splitlines()[0]}") from None
    if not isinstance(data, Mapping):
        raise ConfigError("the bootstrap is not a mapping")
    return data


def _m(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _clusters(static: Mapping[str, Any]) -> dict[str, list[Backend]]:
    found: dict[str, list[Backend]] = {}
    for c in _l(static.get("clusters")):
        c = _m(c)
        backends = []
        for ep in _l(_m(c.get("load_assignment")).get("endpoints")):
            for lb in _l(_m(ep).get("lb_endpoints")):
                sa = _m(_m(_m(_m(lb).get("endpoint")).get("address")).get("socket_address"))
                if sa.get("address"):
                    port = sa.get("port_value")
                    backends.append(
                        Backend(
                            str(sa["address"]),
                            port_number(port, f"cluster {c.get('name')} port_value"),
                        )
                    )
        for h in _l(c.get("hosts")):  # v2-era clusters
            sa = _m(_m(h).get("socket_address"))
            if sa.get("address"):
                port = sa.get("port_value")
                backends.append(
                    Backend(
                        str(sa["address"]), port_number(port, f"cluster {c.get('name')} port_value")
                    )
                )
        if c.get("name"):
            found[str(c["name"])] = backends
    return found


def _routes_clusters(cfg: Mapping[str, Any]) -> Iterable[str]:
    if cfg.get("cluster"):
        yield str(cfg["cluster"])
    for wc in _l(_m(cfg.get("weighted_clusters")).get("clusters")):
        if _m(wc).get("name"):
            yield str(_m(wc)["name"])
    for vh in _l(_m(cfg.get("route_config")).get("virtual_hosts")):
        for r in _l(_m(vh).get("routes")):
            yield from _routes_clusters(_m(_m(r).get("route")))


def parse(text: str) -> list[Hop]:
    data = load(text)
    static = _m(data.get("static_resources"))
    clusters = _clusters(static)
    hops = []
    for lst in _l(static.get("listeners")):
        lst = _m(lst)
        name = str(lst.get("name") or "listener")
        sa = _m(_m(lst.get("address")).get("socket_address"))
        where = f"listener {name} ({sa.get('address', '')}:{sa.get('port_value', '')})"
        original_src = any(
            "original_src" in str(_m(f).get("name", ""))
            or "OriginalSrc" in str(_m(_m(f).get("typed_config")).get("@type", ""))
            for f in _l(lst.get("listener_filters"))
        )
        for chain in _l(lst.get("filter_chains")):
            for flt in _l(_m(chain).get("filters")):
                flt = _m(flt)
                cfg = _m(flt.get("typed_config") or flt.get("config"))
                names = list(dict.fromkeys(_routes_clusters(cfg)))
                for cname in names:
                    backends = tuple(clusters.get(cname, []))
                    if not backends:
                        continue
                    kind = str(flt.get("name", "")).rsplit(".", 1)[-1]
                    hops.append(
                        Hop(
                            PROXY,
                            f"{where} -> cluster {cname}",
                            "transparent" if original_src else "terminating",
                            backends,
                            "original_src listener filter (client address kept)"
                            if original_src
                            else f"{kind} without the original_src listener filter",
                        )
                    )
    return hops
