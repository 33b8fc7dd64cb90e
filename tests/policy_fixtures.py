"""Resources written as the engine sends them to a policy pack: wire (camelCase)
names, numbers as floats."""

from __future__ import annotations

from typing import Any

import keepsource_rules as rules

from lab.image import SEED_HAPROXY

NS = "my-ns"
APP = {"app.kubernetes.io/name": "nginx"}


def res(type_: str, name: str, props: dict[str, Any]) -> rules.Resource:
    return rules.Resource(type_, name, f"urn:pulumi:dev::keepsource::{type_}::{name}", props)


def deployment(labels: dict[str, str] = APP, name: str = "nginx") -> rules.Resource:
    return res(
        "kubernetes:apps/v1:Deployment",
        name,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "replicas": 1.0,
                "selector": {"matchLabels": dict(labels)},
                "template": {
                    "metadata": {"labels": dict(labels)},
                    "spec": {
                        "containers": [
                            {
                                "name": "nginx",
                                "image": "nginx:1.27.3",
                                "ports": [{"containerPort": 80.0}],
                            }
                        ]
                    },
                },
            },
        },
    )


def service(
    etp: str | None = "Local",
    selector: dict[str, str] = APP,
    node_port: float = 30080.0,
    type_: str = "NodePort",
    name: str = "nginx",
) -> rules.Resource:
    spec: dict[str, Any] = {
        "type": type_,
        "selector": dict(selector),
        "ports": [{"port": 80.0, "targetPort": 80.0, "nodePort": node_port, "protocol": "TCP"}],
    }
    if etp is not None:
        spec["externalTrafficPolicy"] = etp
    return res(
        "kubernetes:core/v1:Service",
        name,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        },
    )


def netpol(
    cidrs: list[str],
    ports: list[float] | None = None,
    selector: dict[str, str] = APP,
    name: str = "nginx",
) -> rules.Resource:
    rule: dict[str, Any] = {"from": [{"ipBlock": {"cidr": c}} for c in cidrs]}
    rule["ports"] = [{"protocol": "TCP", "port": p} for p in (ports or [80.0])]
    return res(
        "kubernetes:networking.k8s.io/v1:NetworkPolicy",
        name,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "podSelector": {"matchLabels": dict(selector)},
                "policyTypes": ["Ingress"],
                "ingress": [rule],
            },
        },
    )


def lb(
    preserves: bool = True, method: str = "NAT", source: str = "172.16.0.254", port: float = 30080.0
) -> rules.Resource:
    return res(
        "keepsource:lb:LoadBalancerHost",
        "lb",
        {
            "forwardingMethod": method,
            "preservesClientAddress": preserves,
            "healthCheckSource": source,
            "healthCheckType": "TCP",
            "vip": "192.168.0.1",
            "virtualServices": [
                {
                    "name": "apiserver",
                    "vip": "192.168.0.1",
                    "port": 6443.0,
                    "realServers": [{"address": "172.16.0.1", "port": 6443.0}],
                },
                {
                    "name": "nginx",
                    "vip": "192.168.0.1",
                    "port": port,
                    "realServers": [
                        {"address": "172.16.0.11", "port": port},
                        {"address": "172.16.0.12", "port": port},
                    ],
                },
            ],
        },
    )


def command(create: str, stdin: str | None = None, name: str = "seed-lb") -> rules.Resource:
    props: dict[str, Any] = {
        "connection": {"host": "192.168.0.1", "user": "root", "port": 22.0},
        "create": create,
    }
    if stdin is not None:
        props["stdin"] = stdin
    return res("command:remote:Command", name, props)


# The seed's own HAProxy config, as the local lab's guest runs it (defaults mode http).
SEED_HAPROXY_HTTP = SEED_HAPROXY
SEED_HAPROXY_TCP = SEED_HAPROXY_HTTP.replace("mode http", "mode tcp")
HAPROXY_TRANSPARENT = SEED_HAPROXY_TCP.replace(
    "    balance roundrobin\n", "    balance roundrobin\n    source 0.0.0.0 usesrc clientip\n"
)
HAPROXY_INSTALL = (
    "apt-get install -y haproxy && cat > /etc/haproxy/haproxy.cfg && systemctl enable --now haproxy"
)
NGINX_PROXY = (
    "apt-get install -y nginx\n"
    "cat > /etc/nginx/conf.d/lb.conf <<'CONF'\n"
    "upstream workers { server 172.16.0.11:30080; server 172.16.0.12:30080; }\n"
    "server { listen 192.168.0.1:80; location / { proxy_pass http://workers; } }\n"
    "CONF\n"
    "systemctl restart nginx\n"
)


def ingress(service_name: str = "nginx") -> rules.Resource:
    return res(
        "kubernetes:networking.k8s.io/v1:Ingress",
        "web",
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {
                "rules": [
                    {
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {"name": service_name, "port": {"number": 80.0}}
                                    },
                                }
                            ]
                        }
                    }
                ]
            },
        },
    )


def http_route(service_name: str = "nginx") -> rules.Resource:
    return res(
        "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute",
        "web",
        {
            "metadata": {"name": "web", "namespace": NS},
            "spec": {
                "parentRefs": [{"name": "gw"}],
                "rules": [{"backendRefs": [{"name": service_name, "port": 80.0}]}],
            },
        },
    )


def good_stack() -> list[rules.Resource]:
    """The fixed lab: LVS NAT, Local, policy admits host01 and the LB's check source."""
    return [deployment(), service(), netpol(["192.168.0.10/32", "172.16.0.254/32"]), lb()]
