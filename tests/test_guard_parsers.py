"""Each proxy parser on real-looking configs, both directions."""

from __future__ import annotations

import pytest
from guard.proxies import caddy as proxy_caddy
from guard.proxies import envoy as proxy_envoy
from guard.proxies import haproxy as proxy_haproxy
from guard.proxies import keepalived as proxy_keepalived
from guard.proxies import nginx as proxy_nginx
from guard.proxies import socat as proxy_socat
from guard.proxies import traefik as proxy_traefik
from guard.proxies.base import Backend, ConfigError, split_hostport

from keepsource.host import lb_host
from lab.image import SEED_HAPROXY


def modes(hops: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(h.where, h.mode) for h in hops]


# -- HAProxy -------------------------------------------------------------------------


def test_haproxy_seed_config_terminates_both_frontends() -> None:
    hops = proxy_haproxy.parse(SEED_HAPROXY)
    assert modes(hops) == [
        ("frontend apiserver -> backend masters", "terminating"),
        ("frontend nginx -> backend workers", "terminating"),
    ]
    assert hops[1].backends == (Backend("172.16.0.11", 30080), Backend("172.16.0.12", 30080))
    assert "mode http" in hops[1].detail and "mode tcp" in hops[0].detail


def test_haproxy_usesrc_in_defaults_is_inherited_until_the_next_defaults() -> None:
    cfg = """
defaults transparent
    mode tcp
    source 0.0.0.0 usesrc clientip
frontend a
    bind :80
    default_backend one
backend one
    server s 10.0.0.1:80
defaults plain
    mode tcp
frontend b
    bind :81
    use_backend two if { src 10.0.0.0/8 }
backend two
    server s 10.0.0.2:80
"""
    assert modes(proxy_haproxy.parse(cfg)) == [
        ("frontend a -> backend one", "transparent"),
        ("frontend b -> backend two", "terminating"),
    ]


def test_haproxy_named_defaults_are_picked_with_from() -> None:
    cfg = """
defaults tproxy
    mode tcp
    source 0.0.0.0 usesrc clientip
defaults chained from tproxy
    timeout client 5s
defaults plain
    mode http
frontend a from tproxy
    bind :80
    default_backend one
backend one from chained
    server s 10.0.0.1:80
frontend b
    bind :81
    default_backend two
backend two
    server s 10.0.0.2:80
listen c :82 from plain
    server s 10.0.0.3:80
listen d from tproxy
    bind :83
    server s 10.0.0.4:80
"""
    assert modes(proxy_haproxy.parse(cfg)) == [
        ("frontend a -> backend one", "transparent"),  # through `chained`'s own `from`
        ("frontend b -> backend two", "terminating"),  # the last defaults: plain
        ("listen c", "terminating"),
        ("listen d", "transparent"),
    ]
    with pytest.raises(ConfigError, match="line 2: `from nowhere` names no `defaults nowhere`"):
        proxy_haproxy.parse("frontend a\nbackend b from nowhere\n")


@pytest.mark.parametrize("port", [".nan", ".inf", "99999", "80.5", "'http'"])
def test_envoy_bad_port_value_is_a_config_error(port: str) -> None:
    cfg = f"""static_resources:
  listeners: []
  clusters:
  - name: c
    load_assignment:
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 10.0.0.1, port_value: {port}}}}}}}
"""
    with pytest.raises(ConfigError, match="cluster c port_value"):
        proxy_envoy.parse(cfg)


def test_haproxy_comments_quotes_and_escapes() -> None:
    assert proxy_haproxy.tokens('  server s "10.0.0.1:80" # source 0.0.0.0 usesrc clientip') == [
        "server",
        "s",
        "10.0.0.1:80",
    ]
    assert proxy_haproxy.tokens(r"acl x hdr(host) -i a\ b") == [
        "acl",
        "x",
        "hdr(host)",
        "-i",
        "a b",
    ]
    with pytest.raises(ConfigError):
        proxy_haproxy.parse('frontend a\n  bind "oops\n')


def test_haproxy_listen_section_and_server_options() -> None:
    cfg = """
listen web 0.0.0.0:30080
    mode tcp
    server a 172.16.0.11:30080 check source 0.0.0.0 usesrc client
    server b 172.16.0.12:30080 check send-proxy
    server c unix@/run/x.sock
"""
    hops = proxy_haproxy.parse(cfg)
    assert modes(hops) == [("listen web", "transparent"), ("listen web", "terminating")]
    assert hops[1].backends == (Backend("172.16.0.12", 30080),)
    assert "PROXY protocol" in hops[1].detail


# -- nginx (crossplane) ------------------------------------------------------------------


def test_nginx_http_upstream_and_location_inheritance() -> None:
    cfg = """
user www-data;
events { worker_connections 768; }
http {
    proxy_bind $remote_addr transparent;
    upstream app { server 10.0.0.1:8080 weight=2; server app2.internal:8080; }
    server {
        listen 80 default_server;
        location / { proxy_pass http://app; }
        location /admin { proxy_bind off; proxy_pass http://10.0.0.9:9000/admin; }
        location /static { root /srv; }
    }
}
"""
    hops = proxy_nginx.parse(cfg)
    assert [(h.where.split(" location ")[-1], h.mode) for h in hops] == [
        ("/", "transparent"),
        ("/admin", "terminating"),
    ]
    assert hops[0].backends == (Backend("10.0.0.1", 8080), Backend("app2.internal", 8080))
    assert hops[1].backends == (Backend("10.0.0.9", 9000),)


def test_nginx_stream_grpc_and_variables() -> None:
    cfg = """
stream { server { listen 6443; proxy_pass 172.16.0.1:6443; } }
http { server { listen 81; location / { grpc_pass grpc://10.1.1.1:50051; }
                location /v { proxy_pass http://$backend; } } }
"""
    hops = proxy_nginx.parse(cfg)
    assert [h.mode for h in hops] == ["terminating"] * 3
    assert hops[0].backends == (Backend("172.16.0.1", 6443),)
    assert hops[1].backends == (Backend("10.1.1.1", 50051),)
    assert hops[2].backends[0].port is None


def test_nginx_syntax_error_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="line"):
        proxy_nginx.parse("http { server { listen 80; }")


# -- Envoy -------------------------------------------------------------------------------

ENVOY_HTTP = """
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 0.0.0.0, port_value: 8080}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/api"}
                route: {cluster: api}
              - match: {prefix: "/"}
                route:
                  weighted_clusters:
                    clusters: [{name: web, weight: 90}, {name: api, weight: 10}]
  clusters:
  - name: api
    load_assignment:
      cluster_name: api
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.5, port_value: 31001}}}}]}]
  - name: web
    load_assignment:
      cluster_name: web
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.6, port_value: 31002}}}}]}]
"""


def test_envoy_http_connection_manager_routes_and_weighted_clusters() -> None:
    hops = proxy_envoy.parse(ENVOY_HTTP)
    assert [(h.where.split(" -> ")[-1], h.mode) for h in hops] == [
        ("cluster api", "terminating"),
        ("cluster web", "terminating"),
    ]


def test_envoy_json_and_original_src() -> None:
    import json

    import yaml

    data = yaml.safe_load(ENVOY_HTTP)
    data["static_resources"]["listeners"][0]["listener_filters"] = [
        {"name": "envoy.filters.listener.original_src", "typed_config": {}}
    ]
    hops = proxy_envoy.parse(json.dumps(data))
    assert {h.mode for h in hops} == {"transparent"}
    with pytest.raises(ConfigError):
        proxy_envoy.parse("static_resources: [unbalanced")


# -- Traefik -----------------------------------------------------------------------------


def test_traefik_yaml_tcp_and_http_services() -> None:
    cfg = """
tcp:
  routers:
    pg: {entryPoints: [pg], rule: "HostSNI(`*`)", service: pg}
  services:
    pg:
      loadBalancer:
        proxyProtocol: {version: 2}
        servers: [{address: "10.0.0.7:5432"}]
http:
  services:
    unused: {loadBalancer: {servers: [{url: "http://10.0.0.8"}]}}
"""
    hops = proxy_traefik.parse(cfg)
    # http has no routers at all (they may come from another provider): no remark.
    assert [(h.where, h.backends) for h in hops] == [
        ("http service unused", (Backend("10.0.0.8", 80),)),
        ("tcp service pg", (Backend("10.0.0.7", 5432),)),
    ]
    assert {h.mode for h in hops} == {"terminating"}


def test_traefik_toml_static_names_the_dynamic_file() -> None:
    static = (
        '[entryPoints.web]\n  address = ":80"\n[providers.file]\n  directory = "/etc/traefik/dyn"\n'
    )
    assert proxy_traefik.file_provider_paths(proxy_traefik.load(static)) == ["/etc/traefik/dyn"]
    assert proxy_traefik.parse(static) == []
    with pytest.raises(ConfigError):
        proxy_traefik.parse("[entryPoints\n")


# -- Caddy -------------------------------------------------------------------------------


def test_caddyfile_sites_nested_handles_and_matchers() -> None:
    cfg = """
{
    email ops@example.org
}
# a comment with reverse_proxy 1.2.3.4:1
example.org, www.example.org {
    @api path /api/*
    route {
        reverse_proxy @api 10.0.0.1:3000 10.0.0.2:3000
    }
    handle_path /old/* {
        reverse_proxy {
            to http://10.0.0.3:8080
        }
    }
    file_server
}
:8080 {
    respond "ok"
}
"""
    hops = proxy_caddy.parse(cfg)
    assert [h.where for h in hops] == ["site example.org, www.example.org"] * 2
    assert hops[0].backends == (Backend("10.0.0.1", 3000), Backend("10.0.0.2", 3000))
    assert hops[1].backends == (Backend("10.0.0.3", 8080),)
    with pytest.raises(ConfigError):
        proxy_caddy.parse("example.org {\n reverse_proxy x:1\n")


def test_caddy_json_and_reverse_proxy_command() -> None:
    cfg = '{"apps": {"http": {"servers": {"s": {"routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "10.0.0.4:9000"}]}]}]}}}}}'
    assert [h.backends for h in proxy_caddy.parse(cfg)] == [(Backend("10.0.0.4", 9000),)]
    hops = proxy_caddy.reverse_proxy_command(
        ["reverse-proxy", "--from", ":80", "--to", "10.0.0.5:81"]
    )
    assert hops[0].backends == (Backend("10.0.0.5", 81),)


# -- socat -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "backend"),
    [
        (["TCP-LISTEN:80,fork,reuseaddr", "TCP:10.0.0.1:30080"], Backend("10.0.0.1", 30080)),
        (["-d", "-d", "tcp4-l:8080,fork", "tcp4-connect:[fd00::1]:443"], Backend("fd00::1", 443)),
        (["TCP:10.0.0.2:22", "TCP-LISTEN:2222"], Backend("10.0.0.2", 22)),
    ],
)
def test_socat_relays(argv: list[str], backend: Backend) -> None:
    hops = proxy_socat.parse_argv(argv)
    assert [(h.mode, h.backends) for h in hops] == [("terminating", (backend,))]


def test_socat_without_a_tcp_target_is_no_relay() -> None:
    assert proxy_socat.parse_argv(["TCP-LISTEN:80", "EXEC:/bin/cat"]) == []
    assert proxy_socat.parse_argv(["-V"]) == []


# -- keepalived --------------------------------------------------------------------------

KEEPALIVED = """
global_defs {
    router_id lb1
}
vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_ipaddress {
        192.168.0.1/24
    }
}
virtual_server 192.168.0.1 6443 {
    lvs_method DR
    real_server 172.16.0.1 6443 {
        TCP_CHECK {
            connect_timeout 3
        }
    }
}
virtual_server 192.168.0.1 30080 {   # NAT by default
    real_server 172.16.0.11 30080 {
        HTTP_GET {
            url { path /healthz }
            bindto 172.16.0.254
        }
    }
    real_server 172.16.0.12 30080 {
        MISC_CHECK {
            misc_path "/usr/local/bin/check 172.16.0.12"
        }
    }
}
"""


def test_keepalived_methods_checks_and_sources() -> None:
    hops = proxy_keepalived.parse(KEEPALIVED)
    assert [(h.where, h.mode) for h in hops] == [
        ("virtual_server 192.168.0.1 6443", "preserving"),
        ("virtual_server 192.168.0.1 30080", "preserving"),
    ]
    assert "DR" in hops[0].detail and "NAT" in hops[1].detail
    assert hops[0].check_source_unknown and hops[0].checks_backend_port
    assert hops[1].check_sources == ("172.16.0.254",) and not hops[1].check_source_unknown
    assert hops[1].backends == (Backend("172.16.0.11", 30080), Backend("172.16.0.12", 30080))


def test_keepalived_bad_config() -> None:
    with pytest.raises(ConfigError):
        proxy_keepalived.parse("virtual_server 1.2.3.4 80 {\n lvs_method NAT\n")
    with pytest.raises(ConfigError, match="lvs_method"):
        proxy_keepalived.parse("virtual_server 1.2.3.4 80 {\n lvs_method PROXY\n}\n")


def test_keepalived_parses_keepsources_own_config() -> None:
    from keepsource.settings import Settings
    from keepsource.stackfile import load_config

    raw = {k.split(":", 1)[1]: v for k, v in load_config("dev").items()}
    settings = Settings.model_validate(raw)
    hops = proxy_keepalived.parse(lb_host(settings).keepalived_conf)
    assert {h.mode for h in hops} == {"preserving"}
    assert any(Backend("172.16.0.11", 30080) in h.backends for h in hops)


@pytest.mark.parametrize(
    ("text", "backend"),
    [
        ("10.0.0.1:80", Backend("10.0.0.1", 80)),
        ("http://web.ns.svc:8080/x", Backend("web.ns.svc", 8080)),
        ("https://example.org", Backend("example.org", 443)),
        ("[fd00::2]:53", Backend("fd00::2", 53)),
        ("ipv4@10.0.0.2:81", Backend("10.0.0.2", 81)),
    ],
)
def test_split_hostport(text: str, backend: Backend) -> None:
    assert split_hostport(text) == backend


def test_haproxy_server_without_port_uses_the_clients_port() -> None:
    """``server w1 10.0.0.11`` connects to the port the client connected to:
    one backend per port the frontend binds (a list on one bind line too)."""
    hops = proxy_haproxy.parse(
        "frontend fe\n    bind :30080,:30443\n    bind 10.0.0.5:8080\n    default_backend be\n"
        "backend be\n    server w1 10.0.0.11\n    server w2 10.0.0.12:31000\n"
    )
    assert len(hops) == 1
    assert set(hops[0].backends) == {
        Backend("10.0.0.11", 30080),
        Backend("10.0.0.11", 30443),
        Backend("10.0.0.11", 8080),
        Backend("10.0.0.12", 31000),
    }
    (listen,) = proxy_haproxy.parse("listen l 0.0.0.0:443\n    server a 10.0.0.9\n")
    assert listen.backends == (Backend("10.0.0.9", 443),)


def test_calico_selectors() -> None:
    """Calico's selector language as the guard reads it (docs: "Selectors")."""
    from guard import cni as guard_cni
    from guard.base import Malformed

    def sel(text: str) -> object:
        return guard_cni.calico_selector(text, "spec.selector")

    web = {"app": "web", "tier": "front", "env": "prod"}
    cases = {
        "app == 'web'": True,
        "app == \"web\" && tier == 'front'": True,
        "app != 'web'": False,
        "app in {'api', 'web'}": True,
        "app not in {'api', 'web'}": False,
        "has(tier) && !has(canary)": True,
        "(app == 'api' || env == 'prod') && all()": True,
        "app starts with 'we'": True,
        "app ends with 'eb' && env contains 'ro'": True,
        "!(env == 'prod')": False,
        "": True,
    }
    for text, want in cases.items():
        s = sel(text)
        assert s.matches(web) is want, text  # type: ignore[attr-defined]
    for bad in ("app = 'web'", "app == web", "app in {'a'", "has(app"):
        with pytest.raises(Malformed, match="Calico selector"):
            sel(bad)


def test_nat_rules_hops_and_source_nats() -> None:
    """guard_nat: DNAT and ipvsadm services are hops; a MASQUERADE hides a hop's
    clients only when it matches that hop's traffic and names no sources."""
    from guard import nat
    from guard.base import Resource

    by = Resource("command:remote:Command", "urn:x", "x", {})

    def ipt(line: str) -> tuple[str, tuple[str, ...], Resource]:
        words = line.split()
        return words[0], tuple(words[1:]), by

    calls = [
        ipt(
            "iptables -t nat -A PREROUTING -i wan0 -p tcp --dport 8443 -j DNAT --to-destination 10.0.0.21:31843"
        ),
        ipt("ipvsadm -A -t 10.0.0.100:443 -s wlc"),
        ipt("ipvsadm -a -t 10.0.0.100:443 -r 10.0.0.21:30643 -m"),
        ipt("ipvsadm -a -t 10.0.0.100:443 -r 10.0.0.22 -m"),
        ipt("iptables -t nat -A POSTROUTING -s 10.0.0.0/24 -o wan0 -j MASQUERADE"),
        ipt(
            "iptables -t nat -A POSTROUTING -m ipvs --vaddr 10.0.0.100/32 --vport 443 -j MASQUERADE"
        ),
        ipt(
            "iptables -t nat -A POSTROUTING -d 10.0.0.21 -p tcp --dport 31843 -j SNAT --to-source 10.0.0.1"
        ),
        ipt("iptables -A FORWARD -d 10.0.0.21 -j ACCEPT"),
    ]
    hops, snats = nat.read(calls, {})
    dnat, lvs = hops
    assert dnat.backends == (Backend("10.0.0.21", 31843),)
    assert lvs.backends == (Backend("10.0.0.21", 30643), Backend("10.0.0.22", 443))
    assert (lvs.vip, lvs.vport) == ("10.0.0.100", 443)
    egress, ipvs_masq, dnat_snat = snats
    assert not egress.hides(dnat.backends, None, None)  # names its sources: the nodes' egress
    assert ipvs_masq.hides(lvs.backends, lvs.vip, lvs.vport)
    assert not ipvs_masq.hides(dnat.backends, None, None)  # only IPVS traffic
    assert not ipvs_masq.hides(lvs.backends, "10.0.0.101", 443)
    assert dnat_snat.hides(dnat.backends, None, None)
    assert not dnat_snat.hides((Backend("10.0.0.22", 31843),), None, None)


def test_nft_rules() -> None:
    from guard import nat
    from guard.base import Resource

    by = Resource("command:remote:Command", "urn:x", "x", {})
    text = """
    table ip nat {
      chain prerouting { type nat hook prerouting priority -100; policy accept;
        iifname "wan0" tcp dport 5432 dnat to 10.0.13.21:31432
      }
      chain postrouting { type nat hook postrouting priority 100; policy accept;
        ip saddr 10.0.13.0/24 oifname "wan0" masquerade  # the nodes' egress
        ip daddr 10.0.13.0/24 tcp dport 31432 masquerade
      }
    }
    """
    _nft_accepts(text)
    hops, snats = nat.read([("nft", ("-f", "/etc/nft.conf"), by)], {"/etc/nft.conf": text})
    assert [h.backends for h in hops] == [(Backend("10.0.13.21", 31432),)]
    assert [s.sources for s in snats] == [True, False]
    assert snats[1].hides(hops[0].backends, None, None)


def _nft_accepts(text: str) -> None:
    """The ruleset is one nftables itself accepts (``nft -c``, in a network
    namespace of its own: nothing reaches this machine's rules)."""
    import subprocess
    import tempfile

    from tests.conftest import require_tool

    nft = require_tool("nft")
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
        f.write(text)
        f.flush()
        done = subprocess.run(
            ["unshare", "-n", nft, "-c", "-f", f.name], capture_output=True, text=True, timeout=30
        )
    assert done.returncode == 0, done.stderr


def test_the_blind_nft_ruleset_is_valid_nftables() -> None:
    """The blind reviewer's nftables file (stack 024) as nft reads it."""
    import yaml

    from tests.guard_field import BLIND

    stack = yaml.safe_load((BLIND / "024-nftables-masquerade-to-nodeport.yaml").read_text())
    copy = next(r for r in stack["resources"] if r["type"] == "command:remote:CopyToRemote")
    _nft_accepts(copy["props"]["source"]["text"])


def test_more_proxies() -> None:
    """stunnel, Apache mod_proxy, systemd-socket-proxyd, kubectl port-forward."""
    from guard.proxies import more as proxy_more

    (plain, transparent) = proxy_more.stunnel(
        "pid = /run/s.pid\n; comment\n[mqtts]\naccept = 8883\nconnect = 10.0.0.11:31883\n"
        "[imaps]\naccept = 993\nconnect = 10.0.0.12:30143\ntransparent = source\n"
    )
    assert (plain.mode, plain.backends) == ("terminating", (Backend("10.0.0.11", 31883),))
    assert (transparent.mode, transparent.backends) == (
        "transparent",
        (Backend("10.0.0.12", 30143),),
    )
    with pytest.raises(ConfigError):
        proxy_more.stunnel("[x]\nnot an assignment\n")
    hops = proxy_more.apache(
        "<VirtualHost *:443>\n  ProxyPreserveHost On\n  ProxyPass / http://10.0.0.21:30880/ retry=0\n"
        "  ProxyPassReverse / http://10.0.0.21:30880/\n</VirtualHost>\n"
        "<Proxy balancer://b>\n  BalancerMember http://10.0.0.22:30880\n</Proxy>\n"
        "ProxyPass /app balancer://b/\n"
    )
    assert [h.backends for h in hops] == [
        (Backend("10.0.0.21", 30880),),
        (Backend("10.0.0.22", 30880),),
    ]
    assert all(h.mode == "terminating" for h in hops)
    (relay,) = proxy_more.socket_proxyd(["--connections-max=512", "10.0.0.12:30022"])
    assert relay.backends == (Backend("10.0.0.12", 30022),)
    (pf,) = proxy_more.port_forward(
        [
            "--kubeconfig",
            "/k",
            "-n",
            "monitoring",
            "port-forward",
            "--address",
            "0.0.0.0",
            "svc/alertmanager",
            "9093:9093",
        ]
    )
    assert pf.backends == (Backend("alertmanager.monitoring", 9093),)
    assert proxy_more.port_forward(["get", "pods"]) == []
    assert proxy_more.port_forward(["port-forward", "pod/x", "80:80"]) == []


def test_caddy_layer4_dial_lists() -> None:
    """caddy-l4's proxy handler: each upstream's ``dial`` is a list of addresses."""
    text = (
        '{"apps": {"layer4": {"servers": {"db": {"listen": [":1433"], "routes": [{"handle": '
        '[{"handler": "proxy", "upstreams": [{"dial": ["10.0.0.11:31433", "10.0.0.12:31433"]},'
        ' {"dial": "10.0.0.13:31433"}]}]}]}}}}}'
    )
    (hop,) = proxy_caddy.parse(text)
    assert hop.mode == "terminating"
    assert hop.backends == (
        Backend("10.0.0.11", 31433),
        Backend("10.0.0.12", 31433),
        Backend("10.0.0.13", 31433),
    )


def test_ssh_local_forwards() -> None:
    """``ssh -L`` in its three spellings is a terminating hop to HOST:PORT;
    remote and dynamic forwards and a socket forward are not read."""
    from guard.proxies import more as proxy_more

    hops = proxy_more.ssh_forward(
        [
            *("-N", "-L", "0.0.0.0:9443:10.0.1.11:30943", "-L8080:[10.0.1.12]:30080"),
            *("-o", "LocalForward=7000 10.0.1.13:30700", "-R", "9000:localhost:22", "-D", "1080"),
            *("-L", "/run/s.sock:/run/r.sock", "tunnel@10.0.3.4"),
        ]
    )
    assert [(h.mode, h.backends) for h in hops] == [
        ("terminating", (Backend("10.0.1.11", 30943),)),
        ("terminating", (Backend("10.0.1.12", 30080),)),
        ("terminating", (Backend("10.0.1.13", 30700),)),
    ]
    assert proxy_more.ssh_forward(["-N", "root@10.0.3.4", "systemctl", "status"]) == []


def test_rulesets_loaded_from_files() -> None:
    """nftables ``define`` variables are expanded; an ``iptables-save`` file
    given to ``iptables-restore`` is read (its ``*nat`` table only); checks
    (``nft -c``, ``iptables-restore --test``) load nothing (third blind set)."""
    from guard import nat
    from guard.base import Resource

    by = Resource("command:remote:Command", "gw", "urn:x::gw", {})
    nft = (
        "define NODE = 10.0.0.21\ndefine PORT = 31883\n"
        "table ip nat {\n chain pre { type nat hook prerouting priority dstnat;\n"
        '  iifname "wan0" tcp dport 8883 dnat to $NODE:$PORT\n }\n'
        ' chain post { type nat hook postrouting priority srcnat;\n  oifname "lan0" masquerade\n }\n}\n'
    )
    _nft_accepts(nft)
    saved = (
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n"
        "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
        "-A PREROUTING -i ens192 -p tcp --dport 6514 -j DNAT --to-destination 10.0.0.31:31514\n"
        '-A POSTROUTING -o ens224 -m comment --comment "to the nodes" -j SNAT --to-source 10.0.0.1\n'
        "COMMIT\n"
    )
    files: dict[str, str | None] = {"/etc/nftables.conf": nft, "/etc/iptables/rules.v4": saved}
    calls = [
        ("nft", ("-c", "-f", "/etc/nftables.conf"), by),
        ("iptables-restore", ("--test", "/etc/iptables/rules.v4"), by),
    ]
    assert nat.read(calls, files) == ([], [])
    hops, snats = nat.read(
        [
            ("nft", ("-f", "/etc/nftables.conf"), by),
            ("iptables-restore", ("/etc/iptables/rules.v4",), by),
        ],
        files,
    )
    assert [h.backends for h in hops] == [
        (Backend("10.0.0.21", 31883),),
        (Backend("10.0.0.31", 31514),),
    ]
    assert [s.sources for s in snats] == [False, False]


def test_apache_arguments_may_be_quoted() -> None:
    from guard.proxies import more as proxy_more

    hops = proxy_more.apache(
        '<Proxy "balancer://ui">\n  BalancerMember "http://10.0.0.11:31880" retry=30\n</Proxy>\n'
        'ProxyPass "/" "balancer://ui/"\n'
    )
    assert [h.backends for h in hops] == [(Backend("10.0.0.11", 31880),)]
