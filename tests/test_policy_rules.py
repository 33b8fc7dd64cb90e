"""Each rule with passing and failing fixtures, as the engine sends them."""

from __future__ import annotations

from typing import Any

import keepsource_rules as rules
import pytest

from tests.policy_fixtures import (
    HAPROXY_INSTALL,
    HAPROXY_TRANSPARENT,
    NGINX_PROXY,
    SEED_HAPROXY_HTTP,
    SEED_HAPROXY_TCP,
    command,
    deployment,
    good_stack,
    http_route,
    ingress,
    lb,
    netpol,
    service,
)


def violations(rule: Any, resources: Any) -> list[rules.Finding]:
    return [f for f in rules.safe(rule, resources) if f.kind == "violation"]


ALL = [rules.terminating_proxy, rules.client_address_lost, rules.health_checks_admitted]


def test_the_fixed_lab_passes_every_rule() -> None:
    for rule in ALL:
        assert rules.safe(rule, good_stack()) == []


# -- rule 1: terminating proxy ------------------------------------------------


@pytest.mark.parametrize(
    "config", [SEED_HAPROXY_HTTP, SEED_HAPROXY_TCP], ids=["mode-http", "mode-tcp"]
)
def test_seed_haproxy_fails(config: str) -> None:
    found = violations(rules.terminating_proxy, [*good_stack(), command(HAPROXY_INSTALL, config)])
    assert len(found) == 1
    assert "haproxy" in found[0].message and "usesrc clientip" in found[0].message
    assert found[0].urn is not None and found[0].urn.endswith("::seed-lb")


def test_haproxy_in_the_script_itself_fails() -> None:
    script = (
        "apt-get install -y haproxy\ncat > /etc/haproxy/haproxy.cfg <<'CFG'\n"
        f"{SEED_HAPROXY_TCP}CFG\nsystemctl restart haproxy\n"
    )
    assert violations(rules.terminating_proxy, [*good_stack(), command(script)])


def test_haproxy_config_copied_to_the_host_is_read() -> None:
    copy = rules.Resource(
        "command:remote:CopyToRemote",
        "haproxy-cfg",
        "urn:pulumi:dev::keepsource::command:remote:CopyToRemote::haproxy-cfg",
        {
            "connection": {"host": "192.168.0.1", "user": "root", "port": 22.0},
            "remotePath": "/etc/haproxy/haproxy.cfg",
            "source": {
                "4dabf18193072939515e22adb298388d": "c44067f5952c0a294b673a41bacd8c17",
                "text": SEED_HAPROXY_TCP,
            },
        },
    )
    start = command("systemctl enable --now haproxy")
    found = rules.safe(rules.terminating_proxy, [*good_stack(), copy, start])
    assert [f.kind for f in found] == ["violation"]
    # The same copy on another host does not make this command a proxy toward the pods.
    other = rules.Resource(
        copy.type, copy.name, copy.urn, {**copy.props, "connection": {"host": "10.9.9.9"}}
    )
    found = rules.safe(rules.terminating_proxy, [*good_stack(), other, start])
    assert [f.kind for f in found] == ["unknown"]


def test_transparent_haproxy_passes() -> None:
    stack = [*good_stack(), command(HAPROXY_INSTALL, HAPROXY_TRANSPARENT)]
    assert violations(rules.terminating_proxy, stack) == []


def test_nginx_proxy_pass_fails() -> None:
    found = violations(rules.terminating_proxy, [*good_stack(), command(NGINX_PROXY)])
    assert len(found) == 1 and "nginx" in found[0].message


def test_ingress_to_ipblock_pods_fails() -> None:
    found = violations(rules.terminating_proxy, [*good_stack(), ingress()])
    assert len(found) == 1 and "Ingress my-ns/web" in found[0].message


def test_gateway_route_to_ipblock_pods_fails() -> None:
    assert violations(rules.terminating_proxy, [*good_stack(), http_route()])


def test_lb_that_drops_the_client_address_fails() -> None:
    stack = [
        deployment(),
        service(),
        netpol(["192.168.0.10/32", "172.16.0.254/32"]),
        lb(preserves=False, method="proxy"),
    ]
    found = violations(rules.terminating_proxy, stack)
    assert len(found) == 1 and "LoadBalancerHost lb" in found[0].message


def test_proxy_in_front_of_unrestricted_pods_passes() -> None:
    other = {"app.kubernetes.io/name": "blog"}
    stack = [
        deployment(),
        service(),
        netpol(["192.168.0.10/32", "172.16.0.254/32"]),
        deployment(labels=other, name="blog"),
        service(selector=other, node_port=31000.0, name="blog", etp=None),
        command(HAPROXY_INSTALL, SEED_HAPROXY_TCP.replace(":30080", ":31000")),
        ingress("blog"),
    ]
    for rule in ALL:
        assert violations(rule, stack) == []


def test_stopping_haproxy_is_not_starting_it() -> None:
    script = (
        "systemctl stop haproxy; systemctl disable --quiet haproxy; systemctl is-active haproxy"
    )
    stack = [*good_stack(), command(script, SEED_HAPROXY_TCP)]
    assert rules.safe(rules.terminating_proxy, stack) == []


def test_unreadable_proxy_backends_are_reported_not_passed() -> None:
    stack = [*good_stack(), command("apt-get install -y haproxy")]
    found = rules.safe(rules.terminating_proxy, stack)
    assert [f.kind for f in found] == ["unknown"]


# -- rule 2: kube-proxy masquerade ------------------------------------------------


@pytest.mark.parametrize("etp", ["Cluster", None], ids=["cluster", "unset"])
def test_external_traffic_policy_not_local_fails(etp: str | None) -> None:
    stack = [deployment(), service(etp=etp), netpol(["192.168.0.10/32", "172.16.0.254/32"]), lb()]
    found = violations(rules.client_address_lost, stack)
    assert len(found) == 1 and "externalTrafficPolicy: Local" in found[0].message


def test_cluster_policy_on_unrestricted_service_passes() -> None:
    other = {"app.kubernetes.io/name": "blog"}
    stack = [
        *good_stack(),
        deployment(labels=other, name="blog"),
        service(etp="Cluster", selector=other, name="blog", node_port=31000.0),
    ]
    assert violations(rules.client_address_lost, stack) == []


def test_clusterip_service_is_not_this_rules_business() -> None:
    stack = [deployment(), service(etp=None, type_="ClusterIP"), netpol(["192.168.0.10/32"])]
    assert violations(rules.client_address_lost, stack) == []


def test_without_workloads_selectors_are_related_conservatively() -> None:
    stack = [service(etp="Cluster"), netpol(["192.168.0.10/32"])]
    assert violations(rules.client_address_lost, stack)


# -- rule 3: health checks admitted ------------------------------------------------


def test_policy_lacking_the_lbs_check_source_fails() -> None:
    stack = [deployment(), service(), netpol(["192.168.0.10/32"]), lb()]
    found = violations(rules.health_checks_admitted, stack)
    assert len(found) == 1 and "172.16.0.254/32" in found[0].message


def test_check_source_admitted_on_another_port_fails() -> None:
    pol = netpol(["192.168.0.10/32", "172.16.0.254/32"], ports=[8080.0])
    assert violations(rules.health_checks_admitted, [deployment(), service(), pol, lb()])


def test_check_source_inside_a_wider_block_passes() -> None:
    stack = [deployment(), service(), netpol(["192.168.0.10/32", "172.16.0.0/24"]), lb()]
    assert violations(rules.health_checks_admitted, stack) == []


def test_check_source_in_an_except_fails() -> None:
    pol = netpol(["192.168.0.10/32"])
    pol.props["spec"]["ingress"][0]["from"].append(
        {"ipBlock": {"cidr": "172.16.0.0/24", "except": ["172.16.0.254/32"]}}
    )
    assert violations(rules.health_checks_admitted, [deployment(), service(), pol, lb()])


# -- rule 4: world open ------------------------------------------------


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_world_open_ipblock_is_reported(cidr: str) -> None:
    found = rules.world_open_ipblock(netpol([cidr]))
    assert len(found) == 1 and cidr in found[0].message


def test_world_with_except_and_narrow_blocks_pass() -> None:
    pol = netpol(["192.168.0.10/32"])
    pol.props["spec"]["ingress"][0]["from"].append(
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}
    )
    assert rules.world_open_ipblock(pol) == []


# -- unknown at preview ------------------------------------------------


def test_unknown_values_are_reported_never_passed() -> None:
    svc = service()
    svc.props["spec"]["externalTrafficPolicy"] = rules.UNKNOWN
    found = rules.safe(rules.client_address_lost, [deployment(), svc, netpol(["192.168.0.10/32"])])
    assert [f.kind for f in found] == ["unknown"]
    unknown_lb = lb()
    unknown_lb.props["virtualServices"] = rules.UNKNOWN
    stack = [deployment(), service(), netpol(["192.168.0.10/32"]), unknown_lb]
    found = rules.safe(rules.health_checks_admitted, stack)
    assert [f.kind for f in found] == ["unknown"]
