"""``keepsource:services``: many services on one VIP (issue 18), offline.

The seed's layout and the same services written as a list render the same
keepalived.conf, switch rules and manifests (the move is a config rewrite,
nothing changes on the hosts); bad service lists get one error naming the key;
UDP pools get a check that needs a reply, accepted by Debian's keepalived;
cost grows linearly with the number of services (bench/services_scale.py).
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest

from keepsource.artifacts import artifacts
from keepsource.host import lb_host
from keepsource.settings import ConfigError, parse
from keepsource.settings.services import dns_query_payload
from keepsource.stackfile import load_config
from keepsource.verify import client_checks
from tests.conftest import dev_config, require_tool


def as_services(cfg: dict[str, Any]) -> dict[str, Any]:
    """A stack written the seed's way, rewritten as a services list (the
    docs/services.md's recipe): the apiserver with its fixed real server, the workload
    with its nodePort, clients and workload."""
    out = {k: v for k, v in cfg.items() if k.split(":")[1] not in (
        "nodePort", "workload", "allowedClients")}  # fmt: skip
    api = cfg["keepsource:apiserver"]
    wl = dict(cfg["keepsource:workload"])
    name = wl.pop("name", "nginx")
    port = cfg.get("keepsource:nodePort", 30080)
    out["keepsource:services"] = [
        {
            "name": "apiserver",
            "ports": [{"name": "https", "port": api.get("port", 6443)}],
            "realServers": [{"name": "apiserver", "address": api["address"]}],
        },
        {
            "name": name,
            "ports": [
                {
                    "name": "http",
                    "port": port,
                    "nodePort": port,
                    "targetPort": wl.get("containerPort", 80),
                }
            ],
            "allowedClients": cfg["keepsource:allowedClients"],
            "workload": wl,
        },
    ]
    return out


@pytest.mark.parametrize("stack", ["dev", "dev-lb-only", "lab3", "local", "local-ha"])
def test_the_seed_layout_as_a_list_renders_the_same(stack: str) -> None:
    legacy = parse(copy.deepcopy(load_config(stack)))
    listed = parse(as_services(copy.deepcopy(load_config(stack))))
    before, after = artifacts(legacy), artifacts(listed)
    for name in before:
        if name.startswith("steps/"):
            continue  # scripts carry the config's digest, equal only byte for byte
        assert after[name] == before[name], name
    assert lb_host(listed).keepalived_conf == lb_host(legacy).keepalived_conf
    if legacy.verify is not None:  # verify's section moves as it is: the same client checks

        def names(s: Any) -> list[tuple[str, bool]]:
            served = lambda _: (0, "page\nHTTP 200")  # noqa: E731
            timeout = lambda _: (28, "")  # noqa: E731
            return [(c.name, c.ok) for c in client_checks(s, served, timeout)]

        assert names(listed) == names(legacy)
        assert all(ok for _, ok in names(listed))


def test_the_three_services_stack() -> None:
    """web (TCP 30080, host01), dns (UDP 30053, host02), the apiserver."""
    s = parse(copy.deepcopy(load_config("local-services")))
    vs = lb_host(s).pools
    assert [(v.name, v.port, v.protocol, v.fwmark & 0xFF) for v in vs] == [
        ("apiserver", 6443, "TCP", 1),
        ("web", 30080, "TCP", 2),
        ("dns", 30053, "UDP", 3),
    ]
    assert [rs.address for rs in vs[0].real_servers] == ["172.16.0.1"]
    assert [rs.address for rs in vs[2].real_servers] == ["172.16.0.11", "172.16.0.12"]
    conf = lb_host(s).keepalived_conf
    assert conf.count("UDP_CHECK") == 2 and conf.count("require_reply") == 2
    assert conf.count("TCP_CHECK") == 3


def test_udp_checks_pass_keepalived(tmp_path: Path) -> None:
    """Debian's keepalived accepts the UDP pools as rendered (``-t``) and
    refuses a misspelt UDP_CHECK keyword (the check can fail)."""
    keepalived = require_tool("keepalived")
    conf = lb_host(parse(copy.deepcopy(load_config("local-services")))).keepalived_conf
    for text, ok in ((conf, True), (conf.replace("require_reply", "require_replyy"), False)):
        path = tmp_path / "keepalived.conf"
        path.write_text(text)
        done = subprocess.run(
            [keepalived, "-t", "-f", str(path)], capture_output=True, text=True, timeout=30
        )
        assert (done.returncode == 0) == ok, done.stdout + done.stderr


def test_dns_query_payload_is_a_dns_query() -> None:
    """RFC 1035: header (id, RD, one question), QNAME labels, type A, class IN."""
    raw = bytes.fromhex(dns_query_payload("web.my-ns.svc.cluster.local"))
    assert raw[:12] == bytes.fromhex("6b73 0100 0001 0000 0000 0000")
    assert raw[12:] == b"\x03web\x05my-ns\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01"


def _services() -> dict[str, Any]:
    return copy.deepcopy(load_config("local-services"))


def _with(mutate: Any) -> dict[str, Any]:
    cfg = _services()
    mutate(cfg["keepsource:services"])
    return cfg


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "udp-without-a-check-request",
        _with(lambda sv: sv[2].pop("check")),
        "keepsource:services[2]",
        "set check.dnsQuery or check.udpPayload",
    ),
    (
        "workload-and-real-servers",
        _with(lambda sv: sv[1].update(realServers=[{"name": "x", "address": "172.16.0.11"}])),
        "keepsource:services[1]",
        "exactly one of workload and realServers",
    ),
    (
        "workload-without-clients",
        _with(lambda sv: sv[1].pop("allowedClients")),
        "keepsource:services[1]",
        "needs allowedClients",
    ),
    (
        "duplicate-name",
        _with(lambda sv: sv[2].update(name="web")),
        "keepsource:services[2].name",
        "duplicate service name",
    ),
    (
        "same-vip-port",
        _with(lambda sv: sv[2]["ports"][0].update(protocol="TCP", port=30080, nodePort=30081)),
        "keepsource:services[2].ports[0].port",
        "30080/tcp is also keepsource:services[1].ports[0].port",
    ),
    (
        "same-node-port",
        _with(lambda sv: sv[2]["ports"][0].update(protocol="TCP", port=30081, nodePort=30080)),
        "keepsource:services[2].ports[0].nodePort",
        "nodePort 30080/tcp is also",
    ),
    (
        "bad-payload",
        _with(lambda sv: sv[2]["check"].update(udpPayload="xyz")),
        "keepsource:services[2].check.udpPayload",
        "pattern",
    ),
    (
        "world-open",
        _with(lambda sv: sv[1].update(allowedClients=["0.0.0.0/0"])),
        "keepsource:services[1].allowedClients[0]",
        "world",
    ),
    (
        "client-inside",
        _with(lambda sv: sv[1].update(allowedClients=["172.16.0.0/25"])),
        "keepsource:services[1].allowedClients[0]",
        "overlaps internalSubnet",
    ),
    (
        "empty-real-servers",
        _with(lambda sv: sv[0].update(realServers=[])),
        "keepsource:services[0]",
        "realServers is empty",
    ),
    (
        "clients-without-workload",
        _with(lambda sv: sv[0].update(allowedClients=["192.168.0.10/32"])),
        "keepsource:services[0]",
        "allowedClients needs a workload",
    ),
    (
        "node-port-on-real-servers",
        _with(lambda sv: sv[0]["ports"][0].update(nodePort=30443)),
        "keepsource:services[0]",
        "a nodePort is for a workload service",
    ),
    (
        "workload-name-differs",
        _with(lambda sv: sv[1]["workload"].update(name="nginx")),
        "keepsource:services[1]",
        "workload.name is the service's name",
    ),
]


def _legacy_key_with_services() -> dict[str, Any]:
    cfg = _services()
    cfg["keepsource:allowedClients"] = ["192.168.0.10/32"]
    return cfg


def _neither() -> dict[str, Any]:
    cfg = _services()
    del cfg["keepsource:services"]
    return cfg


BAD += [
    (
        "legacy-key-too",
        _legacy_key_with_services(),
        "keepsource:allowedClients",
        "is set with services",
    ),
    ("neither", _neither(), "keepsource:workload", "required (or list services)"),
]


@pytest.mark.parametrize(("case", "cfg", "key", "reason"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_service_list_names_the_key(
    case: str, cfg: dict[str, Any], key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(cfg)
    faults = caught.value.faults
    assert any(f.key == key and reason in f.reason for f in faults), faults


def test_pulumi_yaml_defaults_are_not_taken_as_set() -> None:
    """The engine hands Pulumi.yaml's defaults ({} and [] and 30080) to the
    program: a services stack with them is still valid."""
    cfg = _services()
    cfg.update(
        {"keepsource:workload": {}, "keepsource:allowedClients": [], "keepsource:nodePort": 30080}
    )
    assert parse(cfg).services is not None
    assert dev_config()  # the seed's stack is untouched by this module
