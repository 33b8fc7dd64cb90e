"""The settings model: seed values, cross-field rules, one error naming every bad key."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from keepsource.settings import ENCRYPTED, ConfigError, json_schema, parse
from keepsource.stackfile import PROJECT_ROOT, load, load_config
from tests.conftest import ALL_STACKS, dev_config

Mutation = Callable[[dict[str, Any]], None]


def test_every_stack_parses() -> None:
    assert {"dev", "lab3"} <= set(ALL_STACKS)
    for stack in ALL_STACKS:
        assert load(stack).workers


def test_dev_stack_holds_the_seed_lab() -> None:
    s = load("dev")
    assert str(s.network.vip) == "192.168.0.1"
    assert str(s.network.lb_internal_address) == "172.16.0.254"
    assert str(s.apiserver.address) == "172.16.0.1" and s.apiserver.port == 6443
    assert [(w.name, str(w.address)) for w in s.workers] == [
        ("worker01", "172.16.0.11"),
        ("worker02", "172.16.0.12"),
    ]
    assert [str(c) for c in s.allowed_clients or ()] == ["192.168.0.10/32"]
    assert s.node_port == 30080
    assert (s.single.namespace, s.single.name, s.single.replicas) == ("my-ns", "nginx", 1)
    # The seed values are written out, not left to defaults.
    raw = load_config("dev")
    assert raw["keepsource:nodePort"] == 30080 and raw["keepsource:apiserver"]["port"] == 6443


def test_second_stack_has_another_plan_and_three_workers() -> None:
    dev, other = load("dev"), load("lab3")
    assert len(other.workers) == 3
    assert not dev.network.external_subnet.overlaps(other.network.external_subnet)
    assert other.node_port != dev.node_port


def _set(path: str, value: Any) -> Mutation:
    def mutate(cfg: dict[str, Any]) -> None:
        keys = path.split(".")
        node: Any = cfg
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _del(path: str) -> Mutation:
    def mutate(cfg: dict[str, Any]) -> None:
        keys = path.split(".")
        node: Any = cfg
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        del node[keys[-1]]

    return mutate


def _dup_worker(cfg: dict[str, Any]) -> None:
    cfg["keepsource:workers"].append(dict(cfg["keepsource:workers"][0]))


def _all(*mutations: Mutation) -> Mutation:
    def mutate(cfg: dict[str, Any]) -> None:
        for m in mutations:
            m(cfg)

    return mutate


_JUMP_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPmSUeE+POKVS6kQM7evh1d1IkHOIZTcB1KwqloXLNjN"


def _via_jump(jump: str) -> Mutation:
    """The LB reached through a jump host (the LB itself by another address)."""
    return _all(
        _set("keepsource:lb.ssh.host", "lb.example.internal"),
        _set("keepsource:lb.ssh.jumpHost", jump),
        _set("keepsource:lb.ssh.jumpHostKey", _JUMP_KEY),
    )


# (case id, mutation, the key the error must name, a word of the reason)
BAD: list[tuple[str, Mutation, str, str]] = [
    ("malformed-vip", _set("keepsource:network.vip", "192.168.0.300"), "keepsource:network.vip", "IPv4"),
    ("vip-outside-subnet", _set("keepsource:network.vip", "10.0.0.1"), "keepsource:network.vip", "outside"),
    ("malformed-subnet", _set("keepsource:network.internalSubnet", "172.16.0.1/24"), "keepsource:network.internalSubnet", "IPv4 network"),
    ("overlapping-subnets", _set("keepsource:network.internalSubnet", "192.168.0.0/25"), "keepsource:network.internalSubnet", "overlaps"),
    ("lb-internal-outside", _set("keepsource:network.lbInternalAddress", "172.17.0.254"), "keepsource:network.lbInternalAddress", "outside"),
    ("master-outside", _set("keepsource:apiserver.address", "192.168.0.5"), "keepsource:apiserver.address", "outside"),
    ("worker-outside", _set("keepsource:workers.1.address", "10.9.9.9"), "keepsource:workers[1].address", "outside"),
    ("duplicate-worker", _dup_worker, "keepsource:workers[2].name", "duplicate"),
    ("duplicate-address", _set("keepsource:workers.1.address", "172.16.0.1"), "keepsource:workers[1].address", "duplicate"),
    ("no-workers", _set("keepsource:workers", []), "keepsource:workers", "at least 1"),
    ("nodeport-29999", _set("keepsource:nodePort", 29999), "keepsource:nodePort", "30000"),
    ("nodeport-32768", _set("keepsource:nodePort", 32768), "keepsource:nodePort", "32767"),
    ("apiserver-port-0", _set("keepsource:apiserver.port", 0), "keepsource:apiserver.port", "1"),
    ("world-open-v4", _set("keepsource:allowedClients", ["0.0.0.0/0"]), "keepsource:allowedClients[0]", "world"),
    ("world-open-v6", _set("keepsource:allowedClients", ["::/0"]), "keepsource:allowedClients[0]", "IPv4"),
    ("unknown-top-key", _set("keepsource:vipp", "192.168.0.1"), "keepsource:vipp", "unknown key"),
    ("unknown-nested-key", _set("keepsource:network.vipAddress", "192.168.0.1"), "keepsource:network.vipAddress", "unknown key"),
    ("missing-key", _del("keepsource:network.vip"), "keepsource:network.vip", "missing"),
    ("missing-section", _del("keepsource:workload"), "keepsource:workload", "required (or list services)"),
    ("image-latest", _set("keepsource:workload.image", "nginx:latest"), "keepsource:workload.image", "pin"),
    ("image-untagged", _set("keepsource:workload.image", "nginx"), "keepsource:workload.image", "pin"),
    ("bad-namespace", _set("keepsource:workload.namespace", "My_NS"), "keepsource:workload.namespace", "DNS label"),
    ("negative-replicas", _set("keepsource:workload.replicas", -1), "keepsource:workload.replicas", "1"),
    # issue 15: inputs that were accepted and misbehaved
    ("service-name-digit-first", _set("keepsource:workload.name", "1web"), "keepsource:workload.name", "DNS-1035"),
    ("zero-replicas", _set("keepsource:workload.replicas", 0), "keepsource:workload.replicas", "1"),
    ("replicas-true", _set("keepsource:workload.replicas", True), "keepsource:workload.replicas", "true/false"),
    ("delay-loop-exponent", _set("keepsource:healthCheck.delayLoop", 1e-05), "keepsource:healthCheck.delayLoop", "0.01"),
    ("connect-timeout-100us", _set("keepsource:healthCheck.connectTimeout", 0.0001), "keepsource:healthCheck.connectTimeout", "0.01"),
    ("delay-before-retry-tiny", _set("keepsource:healthCheck.delayBeforeRetry", 0.001), "keepsource:healthCheck.delayBeforeRetry", "0 or at least"),
    ("retry-true", _set("keepsource:healthCheck.retry", True), "keepsource:healthCheck.retry", "true/false"),
    ("port-true", _set("keepsource:apiserver.port", True), "keepsource:apiserver.port", "true/false"),
    ("jump-port-0", _via_jump("root@10.0.0.9:0"), "keepsource:lb.ssh.jumpHost", "1-65535"),
    ("jump-port-99999", _via_jump("root@10.0.0.9:99999"), "keepsource:lb.ssh.jumpHost", "1-65535"),
    ("ssh-user-metachar", _set("keepsource:lb.ssh.user", "ro;ot"), "keepsource:lb.ssh.user", "metacharacter"),
    ("ssh-host-subshell", _set("keepsource:lb.ssh.host", "a$(id)"), "keepsource:lb.ssh.host", "metacharacter"),
    ("hairpin-loopback", _set("keepsource:network.hairpinSource", "127.0.0.1"), "keepsource:network.hairpinSource", "loopback"),
    ("bad-jump-host", _set("keepsource:lb.ssh.jumpHost", "bastion"), "keepsource:lb.ssh.jumpHost", "user@host"),
    ("plain-private-key", _set("keepsource:lbPrivateKey", "-----BEGIN OPENSSH PRIVATE KEY-----"), "keepsource:lbPrivateKey", "--secret"),
    ("client-inside-internal", _set("keepsource:allowedClients", ["172.16.0.0/28"]), "keepsource:allowedClients[0]", "internalSubnet"),
    ("bad-timing", _set("keepsource:healthCheck.connectTimeout", 0), "keepsource:healthCheck.connectTimeout", "0.01"),
    ("denied-client-admitted", _set("keepsource:verify.deniedClient.address", "192.168.0.10"), "keepsource:verify.deniedClient.address", "admitted"),
    # issue 8: each input that used to pass silently or end in a traceback
    ("namespace-typo", _set("keepsorce:nodePort", 30081), "keepsorce:nodePort", "unknown config namespace"),
    ("worker-name-newline", _set("keepsource:workers.0.name", "worker01\n"), "keepsource:workers[0].name", "DNS label"),
    ("workload-name-newline", _set("keepsource:workload.name", "nginx\n"), "keepsource:workload.name", "DNS-1035 label"),
    ("ssh-user-newline", _set("keepsource:lb.ssh.user", "root\n"), "keepsource:lb.ssh.user", "one line"),
    ("ssh-host-newline", _set("keepsource:lb.ssh.host", "192.168.0.1\n"), "keepsource:lb.ssh.host", "one line"),
    ("context-trailing-space", _set("keepsource:kubernetes.context", "kubernetes-admin@kubernetes "), "keepsource:kubernetes.context", "space"),
    ("kube-system", _set("keepsource:workload.namespace", "kube-system"), "keepsource:workload.namespace", "cluster itself"),
    ("kube-public", _set("keepsource:workload.namespace", "kube-public"), "keepsource:workload.namespace", "cluster itself"),
    ("kube-node-lease", _set("keepsource:workload.namespace", "kube-node-lease"), "keepsource:workload.namespace", "cluster itself"),
    ("default-namespace", _set("keepsource:workload.namespace", "default"), "keepsource:workload.namespace", "cluster itself"),
    ("apiserver-on-ssh-port", _set("keepsource:apiserver.port", 22), "keepsource:apiserver.port", "SSH endpoint"),
    ("huge-number", _set("keepsource:nodePort", "9" * 5000), "keepsource:nodePort", "5000 digits"),
    ("deep-nesting", _set("keepsource:healthCheck", "[" * 3000 + "]" * 3000), "keepsource:healthCheck", "deeper"),
    ("duplicate-json-key", _set("keepsource:apiserver", '{"address": "172.16.0.1", "address": "172.16.0.2"}'), "keepsource:apiserver", "twice"),
    ("hairpin-is-check-source", _set("keepsource:network.hairpinSource", "172.16.0.254"), "keepsource:network.hairpinSource", "health-check source"),
    ("hairpin-admitted", _set("keepsource:network.hairpinSource", "192.168.0.10"), "keepsource:network.hairpinSource", "would admit every node and pod through it"),
    ("vip-hairpin-admitted", _set("keepsource:allowedClients", ["192.168.0.0/28"]), "keepsource:network.hairpinSource", "defaults to the VIP"),
    ("take-over-unknown", _set("keepsource:lb.takeOver", ["haproxy.cfg"]), "keepsource:lb.takeOver[0]", "keepalived.conf"),
    ("take-over-twice", _set("keepsource:lb.takeOver", ["keepalived.conf", "keepalived.conf"]), "keepsource:lb.takeOver", "twice"),
    ("cutover-too-short", _set("keepsource:lb.cutoverTimeout", 4), "keepsource:lb.cutoverTimeout", "5"),
    ("cutover-too-long", _set("keepsource:lb.cutoverTimeout", 601), "keepsource:lb.cutoverTimeout", "600"),
    ("cutover-nan", _set("keepsource:lb.cutoverTimeout", "nan"), "keepsource:lb.cutoverTimeout", "finite"),
    ("host-key-missing", _del("keepsource:lb.ssh.hostKey"), "keepsource:lb.ssh.hostKey", "insecureAcceptAnyHostKey"),
    ("host-key-garbage", _set("keepsource:lb.ssh.hostKey", "ssh-ed25519 AAAA"), "keepsource:lb.ssh.hostKey", "blob"),
    ("host-key-wrong-type", _set("keepsource:lb.ssh.hostKey", "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIPmSUeE+POKVS6kQM7evh1d1IkHOIZTcB1KwqloXLNjN"), "keepsource:lb.ssh.hostKey", "ssh-ed25519"),
    ("host-key-and-file", _set("keepsource:lb.ssh.hostKeyFile", "keys/lb.pub"), "keepsource:lb.ssh.hostKeyFile", "not both"),
    ("host-key-file-home", _set("keepsource:lb.ssh.hostKeyFile", "~/lb.pub"), "keepsource:lb.ssh.hostKeyFile", "relative"),
    ("host-key-file-absolute", _set("keepsource:lb.ssh.hostKeyFile", "/etc/ssh/lb.pub"), "keepsource:lb.ssh.hostKeyFile", "relative"),
    ("host-key-file-outside", _set("keepsource:lb.ssh.hostKeyFile", "../../etc/ssh/ssh_host_ed25519_key.pub"), "keepsource:lb.ssh.hostKeyFile", "no '..'"),
    ("jump-host-unpinned", _set("keepsource:lb.ssh.jumpHost", "ops@bastion:22"), "keepsource:lb.ssh.jumpHostKey", "jump host"),
    ("insecure-and-pinned", _set("keepsource:lb.ssh.insecureAcceptAnyHostKey", True), "keepsource:lb.ssh.insecureAcceptAnyHostKey", "pinned"),
    ("insecure-not-bool", _set("keepsource:lb.ssh.insecureAcceptAnyHostKey", "yes"), "keepsource:lb.ssh.insecureAcceptAnyHostKey", "true or false"),
    ("kubeconfig-contents-plain", _set("keepsource:kubernetes.kubeconfig", "apiVersion: v1\nclusters: []\n"), "keepsource:kubernetes.kubeconfig", "--secret --path"),
    ("encrypted-plain-key", _set("keepsource:lb.ssh.user", {"secure": "v1:abc"}), "keepsource:lb.ssh.user", "encrypted"),
    ("lb-only-with-provider", _set("keepsource:workload.managedBy", "external"), "keepsource:kubernetes", "external"),
    ("managed-by-typo", _set("keepsource:workload.managedBy", "gitops"), "keepsource:workload.managedBy", "keepsource"),
    # review of issue 8: an ssh user, host or target that ssh would read as an option
    ("ssh-user-option", _set("keepsource:lb.ssh.user", "-oProxyCommand=touch /tmp/pwn"), "keepsource:lb.ssh.user", "option"),
    ("ssh-host-option", _set("keepsource:lb.ssh.host", "-oProxyCommand=touch /tmp/pwn"), "keepsource:lb.ssh.host", "option"),
    ("ssh-user-with-space", _set("keepsource:lb.ssh.user", "root -oProxyCommand=x"), "keepsource:lb.ssh.user", "one word"),
    ("jump-user-option", _set("keepsource:lb.ssh.jumpHost", "-oProxyCommand=x@bastion"), "keepsource:lb.ssh.jumpHost", "option"),
    ("jump-host-option", _set("keepsource:lb.ssh.jumpHost", "ops@-oProxyCommand=x"), "keepsource:lb.ssh.jumpHost", "option"),
    ("verify-target-option", _set("keepsource:verify.allowedClient.target", "-oProxyCommand=touch /tmp/pwn"), "keepsource:verify.allowedClient.target", "option"),
    ("verify-target-host-option", _set("keepsource:verify.deniedClient.target", "root@-oProxyCommand=x"), "keepsource:verify.deniedClient.target", "option"),
    # review of issue 8: the lock-out through the jump host and other spellings of the VIP
    ("jump-host-is-vip", _all(_via_jump("root@192.168.0.1"), _set("keepsource:apiserver.port", 22)), "keepsource:apiserver.port", "keepsource:lb.ssh.jumpHost is the VIP, port 22"),
    ("jump-port-is-nodeport", _via_jump("root@192.168.0.1:30080"), "keepsource:nodePort", "keepsource:lb.ssh.jumpHost is the VIP, port 30080"),
    ("vip-as-mapped-ipv6", _all(_set("keepsource:lb.ssh.host", "::ffff:192.168.0.1"), _set("keepsource:apiserver.port", 22)), "keepsource:apiserver.port", "keepsource:lb.ssh.host is the VIP"),
    ("vip-as-mapped-ipv6-hex", _all(_set("keepsource:lb.ssh.host", "[::ffff:c0a8:1]"), _set("keepsource:apiserver.port", 22)), "keepsource:apiserver.port", "lock the operator out"),
    ("vip-as-one-number", _all(_set("keepsource:lb.ssh.host", "3232235521"), _set("keepsource:apiserver.port", 22)), "keepsource:apiserver.port", "lock the operator out"),
    # review of issue 8: long floats from the engine (JSON) or as strings
    ("long-float-json", _set("keepsource:healthCheck", '{"delayLoop": 0.' + "9" * 5000 + "}"), "keepsource:healthCheck", "5001 digits"),
    ("long-float-string", _set("keepsource:healthCheck.delayLoop", "0." + "9" * 5000), "keepsource:healthCheck.delayLoop", "5001 digits"),
    ("long-float-top", _set("keepsource:lb.cutoverTimeout", "1" * 30 + ".5"), "keepsource:lb.cutoverTimeout", "31 digits"),
    ("verify-target-not-ssh", _set("keepsource:verify.deniedClient.target", "host02"), "keepsource:verify.deniedClient.target", "user@host"),
    # issue 18: the metrics exporter's port and scrapers
    ("metrics-world-open", _set("keepsource:metrics", {"scrapers": ["0.0.0.0/0"]}), "keepsource:metrics.scrapers[0]", "whole world"),
    ("metrics-no-scrapers", _set("keepsource:metrics", {"scrapers": []}), "keepsource:metrics.scrapers", "at least 1"),
    ("metrics-on-ssh-port", _set("keepsource:metrics", {"scrapers": ["172.16.0.1/32"], "port": 22}), "keepsource:metrics.port", "SSH port of the LB"),
    ("metrics-port-bool", _set("keepsource:metrics", {"scrapers": ["172.16.0.1/32"], "port": True}), "keepsource:metrics.port", "true/false"),
]  # fmt: skip


@pytest.mark.parametrize("case,mutate,key,reason", BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_the_key(case: str, mutate: Mutation, key: str, reason: str) -> None:
    cfg = dev_config()
    mutate(cfg)
    with pytest.raises(ConfigError) as caught:
        parse(cfg)
    faults = caught.value.faults
    assert any(f.key == key and reason in f.reason for f in faults), faults
    assert key in str(caught.value)


def test_the_bad_cases_start_from_a_good_config() -> None:
    """Every BAD case fails because of its mutation, not because the base is bad."""
    assert parse(dev_config()) == load("dev")


def test_the_lockout_rule_leaves_other_ssh_endpoints_alone() -> None:
    """The jump host at the VIP on another port, a jump host elsewhere on the
    service's port, and the LB by name are all accepted."""
    for mutate in (
        _all(_via_jump("root@192.168.0.1:2222"), _set("keepsource:apiserver.port", 22)),
        _all(_via_jump("root@192.168.0.10"), _set("keepsource:apiserver.port", 22)),
        _all(
            _set("keepsource:lb.ssh.host", "::ffff:192.168.0.2"),
            _set("keepsource:apiserver.port", 22),
        ),
    ):
        cfg = dev_config()
        mutate(cfg)
        assert parse(cfg).apiserver.port == 22


def test_new_keys_have_their_defaults_and_resolve() -> None:
    s = load("dev")
    assert s.lb.take_over == () and s.lb.cutover_timeout == 60.0
    assert s.network.hairpin_source == s.network.vip
    cfg = dev_config()
    cfg["keepsource:lb"]["takeOver"] = ["keepalived.conf"]
    cfg["keepsource:lb"]["cutoverTimeout"] = 12.5
    cfg["keepsource:network"]["hairpinSource"] = "192.168.0.2"
    s = parse(cfg)
    assert s.lb.take_over == ("keepalived.conf",) and s.lb.cutover_timeout == 12.5
    assert str(s.network.hairpin_source) == "192.168.0.2"


def test_secret_keys_keepsource_reads_plainly_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(dev_config(), secret_keys=["keepsource:nodePort"])
    assert [f.key for f in caught.value.faults] == ["keepsource:nodePort"]
    assert "without --secret" in caught.value.faults[0].reason


def test_kubeconfig_is_a_secret_str_and_its_contents_need_a_secret() -> None:
    contents = "apiVersion: v1\nclusters: []\nusers:\n- name: a\n  user: {token: TOKENMARK}\n"
    cfg = dev_config()
    cfg["keepsource:kubernetes"] = {"kubeconfig": contents}
    s = parse(cfg, secret_keys=["keepsource:kubernetes"])
    assert s.kubernetes.kubeconfig is not None
    assert s.kubernetes.kubeconfig.get_secret_value() == contents
    assert "TOKENMARK" not in repr(s) and "TOKENMARK" not in str(s.model_dump())
    # A path is no credential: plain text is fine, kept as written ('~' unexpanded).
    lab3 = load("lab3").kubernetes.kubeconfig
    assert lab3 is not None and lab3.get_secret_value() == "~/.kube/lab3.yaml"
    # From a stack file, the encrypted form is accepted and never read.
    cfg["keepsource:kubernetes"] = {"kubeconfig": {"secure": "v1:abc"}}
    assert parse(cfg).kubernetes.kubeconfig is not None


def test_an_encrypted_context_is_accepted_offline_as_the_program_accepts_it() -> None:
    """Both paths agree: the program gets keepsource:kubernetes as a secret key
    (and keeps the context secret, tests/test_program.py); offline the
    encrypted value is a placeholder, never read."""
    cfg = dev_config()
    cfg["keepsource:kubernetes"] = {"context": {"secure": "v1:CIPHERTEXT"}}
    assert parse(cfg).kubernetes.context == ENCRYPTED
    cfg["keepsource:kubernetes"] = {"context": "c1"}
    assert parse(cfg, secret_keys=["keepsource:kubernetes"]).kubernetes.context == "c1"
    # A key keepsource reads in plain text is still refused when encrypted.
    cfg["keepsource:workload"]["name"] = {"secure": "v1:CIPHERTEXT"}
    with pytest.raises(ConfigError, match=r"keepsource:workload\.name: is encrypted"):
        parse(cfg)


def test_insecure_opt_out_is_accepted_by_name_only() -> None:
    cfg = dev_config()
    del cfg["keepsource:lb"]["ssh"]["hostKey"]
    cfg["keepsource:lb"]["ssh"]["insecureAcceptAnyHostKey"] = True
    assert parse(cfg).lb_nodes[0].ssh.insecure_accept_any_host_key is True


def test_parse_does_not_change_its_input() -> None:
    cfg = dev_config()
    cfg["keepsource:kubernetes"] = {"kubeconfig": {"secure": "v1:abc"}}
    before = json.dumps(cfg, sort_keys=True)
    parse(cfg)
    assert json.dumps(cfg, sort_keys=True) == before


def test_one_error_lists_every_fault() -> None:
    cfg = dev_config()
    cfg["keepsource:nodePort"] = 1
    cfg["keepsource:network"]["vip"] = "nope"
    cfg["keepsource:extra"] = True
    with pytest.raises(ConfigError) as caught:
        parse(cfg)
    keys = {f.key for f in caught.value.faults}
    assert {"keepsource:nodePort", "keepsource:network.vip", "keepsource:extra"} <= keys


def test_cross_field_faults_are_all_listed() -> None:
    cfg = dev_config()
    cfg["keepsource:network"]["vip"] = "10.0.0.1"
    cfg["keepsource:workers"][0]["address"] = "10.0.0.2"
    with pytest.raises(ConfigError) as caught:
        parse(cfg)
    keys = {f.key for f in caught.value.faults}
    assert keys == {"keepsource:network.vip", "keepsource:workers[0].address"}


def test_private_key_accepted_only_as_secret() -> None:
    cfg = dev_config()
    cfg["keepsource:lbPrivateKey"] = {"secure": "v1:abc"}
    assert parse(cfg).lb_nodes[0].ssh.host
    cfg["keepsource:lbPrivateKey"] = "plain"
    assert parse(cfg, secret_keys=["keepsource:lbPrivateKey"]).lb_nodes[0].ssh.host


def test_pulumi_strings_are_decoded() -> None:
    """The engine hands every value over as a string (objects as JSON)."""
    cfg = {k: v if isinstance(v, str) else json.dumps(v) for k, v in dev_config().items()}
    assert parse(cfg) == load("dev")


def test_other_namespaces_are_left_alone() -> None:
    cfg = dev_config()
    cfg["kubernetes:suppressHelmHookWarnings"] = "true"
    cfg["command:x"] = "y"
    cfg["pulumi:disable-default-providers"] = '["kubernetes"]'
    assert parse(cfg) == load("dev")


@pytest.mark.parametrize("name", ["context", "kubeconfig"])
def test_the_providers_own_context_keys_are_refused(name: str) -> None:
    """They would configure only a default provider; keepsource's is explicit."""
    cfg = dev_config()
    cfg[f"kubernetes:{name}"] = "x"
    with pytest.raises(ConfigError) as caught:
        parse(cfg)
    assert [f.key for f in caught.value.faults] == [f"kubernetes:{name}"]
    assert f"keepsource:kubernetes.{name}" in caught.value.faults[0].reason


def test_committed_json_schema_is_in_sync() -> None:
    committed = json.loads((PROJECT_ROOT / "schema" / "stack-config.schema.json").read_text())
    assert committed == json_schema(), (
        "run: python -m keepsource schema > schema/stack-config.schema.json"
    )


def test_json_schema_accepts_every_stack_and_rejects_an_unknown_key() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema comes with check-jsonschema")
    import yaml

    schema = json_schema()
    for stack in ALL_STACKS:
        doc = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())
        jsonschema.validate(doc, schema)
    bad = {"config": {**load_config("dev"), "keepsource:vipp": 1}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


# -- an LB pair (lb.hosts) ------------------------------------------------------


def _pair() -> dict[str, Any]:
    return copy.deepcopy(load_config("local-ha"))


def _faults(cfg: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(cfg)
    return str(caught.value)


def test_a_pair_has_two_nodes_each_checking_from_its_own_address() -> None:
    s = parse(_pair())
    assert s.is_pair and [n.name for n in s.lb_nodes] == ["lb1", "lb2"]
    # each checks from its checkAddress; VRRP and sync go between the own addresses
    assert [str(a) for a in s.check_sources] == ["172.16.0.250", "172.16.0.249"]
    lb1, lb2 = s.lb_nodes
    assert [str(n.internal_address) for n in s.lb_nodes] == ["172.16.0.252", "172.16.0.253"]
    assert (lb1.peer_internal, lb2.peer_internal) == (lb2.internal_address, lb1.internal_address)
    assert lb1.priority > lb2.priority
    # One LB: its node is lb.ssh, checking from its checkAddress.
    one = load("dev")
    assert not one.is_pair and one.check_sources == [one.network.check_address]
    assert one.lb_nodes[0].internal_address == one.network.lb_internal_address
    assert one.shared_check_sources == []


def test_the_check_address_must_be_an_own_address_of_the_lb() -> None:
    """The preflight requires it on the host, as it does the VIP."""
    (node,) = load("dev").lb_nodes
    assert (node.check_source, "network.checkAddress") in node.own_addresses
    lb2 = parse(_pair()).lb_nodes[1]
    assert (lb2.check_source, "lb.hosts[1].checkAddress") in lb2.own_addresses


def test_without_a_check_address_the_checks_share_the_internal_address() -> None:
    """A stack written before checkAddress keeps working; the program warns
    (shared_check_warning) that the policy then admits the LB's own address."""
    from keepsource.settings import shared_check_warning

    cfg = dev_config()
    del cfg["keepsource:network"]["checkAddress"]
    s = parse(cfg)
    assert s.check_sources == [s.network.lb_internal_address] == s.shared_check_sources
    warning = shared_check_warning(s)
    assert "keepsource:network.checkAddress is not set" in warning and "172.16.0.254" in warning
    pair = _pair()
    for host in pair["keepsource:lb"]["hosts"]:
        del host["checkAddress"]
    s = parse(pair)
    assert [str(a) for a in s.shared_check_sources] == ["172.16.0.252", "172.16.0.253"]
    assert "lb.hosts[i].checkAddress" in shared_check_warning(s)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("172.16.0.254", "duplicate address 172.16.0.254"),  # the gateway
        ("172.16.0.11", "duplicate address 172.16.0.11"),  # a worker
        ("192.168.0.5", "outside internalSubnet"),
        ("172.16.0.255", "broadcast"),
        ("nope", "IPv4"),
    ],
)
def test_a_bad_check_address_is_refused_naming_the_key(value: str, reason: str) -> None:
    cfg = dev_config()
    cfg["keepsource:network"]["checkAddress"] = value
    faults = _faults(cfg)
    assert "keepsource:network.checkAddress" in faults and reason in faults, faults


def test_a_pair_sets_its_check_addresses_per_host() -> None:
    cfg = _pair()
    cfg["keepsource:network"]["checkAddress"] = "172.16.0.240"
    assert "keepsource:network.checkAddress: is for one LB" in _faults(cfg)
    cfg = _pair()
    cfg["keepsource:lb"]["hosts"][1]["checkAddress"] = "172.16.0.250"  # lb1's
    assert "keepsource:lb.hosts[1].checkAddress" in _faults(cfg)
    cfg = _pair()
    cfg["keepsource:network"]["hairpinSource"] = "172.16.0.249"  # lb2's checkAddress
    assert "health-check source" in _faults(cfg)


@pytest.mark.parametrize(
    "mutate,key,reason",
    [
        (
            lambda c: c["keepsource:lb"].update(ssh=c["keepsource:lb"]["hosts"][0]["ssh"]),
            "keepsource:lb.hosts",
            "one LB (ssh) or a pair",
        ),
        (lambda c: c["keepsource:lb"].pop("hosts"), "keepsource:lb.ssh", "required"),
        (
            lambda c: c["keepsource:lb"]["hosts"].append(c["keepsource:lb"]["hosts"][0]),
            "keepsource:lb.hosts",
            "a pair is two",
        ),
        (
            lambda c: c["keepsource:lb"]["hosts"][1].update(name="lb1"),
            "keepsource:lb.hosts[1].name",
            "duplicate",
        ),
        (
            lambda c: c["keepsource:lb"]["hosts"][1].update(internalAddress="172.17.0.9"),
            "keepsource:lb.hosts[1].internalAddress",
            "outside internalSubnet",
        ),
        (
            lambda c: c["keepsource:lb"]["hosts"][1].update(externalAddress="192.168.0.1"),
            "keepsource:lb.hosts[1].externalAddress",
            "duplicate address",
        ),
        (
            lambda c: c["keepsource:lb"]["hosts"][0].update(externalInterface="eth 0"),
            "keepsource:lb.hosts[0].externalInterface",
            "interface name",
        ),
        (
            lambda c: c["keepsource:lb"]["hosts"][1]["ssh"].pop("hostKeyFile"),
            "keepsource:lb.hosts[1].ssh.hostKey",
            "lb.hosts[1].ssh.insecureAcceptAnyHostKey",
        ),
        (
            lambda c: c["keepsource:network"].update(hairpinSource="172.16.0.253"),
            "keepsource:network.hairpinSource",
            "health-check source",
        ),
        (
            lambda c: c["keepsource:lb"]["vrrp"].update(virtualRouterId=255),
            "keepsource:lb.vrrp.virtualRouterId",
            "254",
        ),
        (
            _all(
                lambda c: c["keepsource:lb"]["hosts"][1]["ssh"].update(
                    jumpHost="root@192.168.0.1", jumpHostKey=_JUMP_KEY
                ),
                _set("keepsource:apiserver.port", 22),
            ),
            "keepsource:apiserver.port",
            "keepsource:lb.hosts[1].ssh.jumpHost is the VIP, port 22",
        ),
        (
            _all(
                lambda c: c["keepsource:lb"]["hosts"][0]["ssh"].update(host="::ffff:192.168.0.1"),
                _set("keepsource:apiserver.port", 2222),
            ),
            "keepsource:apiserver.port",
            "keepsource:lb.hosts[0].ssh.host is the VIP, port 2222",
        ),
        (
            lambda c: c["keepsource:lb"]["hosts"][1]["ssh"].update(user="-oProxyCommand=x"),
            "keepsource:lb.hosts[1].ssh.user",
            "option",
        ),
        (
            lambda c: c["keepsource:lb"]["hosts"][0]["ssh"].update(host="-oProxyCommand=x"),
            "keepsource:lb.hosts[0].ssh.host",
            "option",
        ),
    ],
    ids=[
        "ssh-and-hosts",
        "neither",
        "three-hosts",
        "duplicate-name",
        "outside-subnet",
        "vip-as-own-address",
        "bad-interface",
        "host-key-missing",
        "hairpin-is-a-check-source",
        "router-id-range",
        "jump-host-is-vip",
        "host-is-mapped-vip",
        "user-option",
        "host-option",
    ],
)
def test_a_bad_pair_names_the_key(mutate: Mutation, key: str, reason: str) -> None:
    cfg = _pair()
    mutate(cfg)
    text = _faults(cfg)
    assert key in text and reason in text, text
