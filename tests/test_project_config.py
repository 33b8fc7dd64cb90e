"""Pulumi.yaml's typed config block agrees with the settings model.

The block follows the Pulumi project schema (pulumi/pulumi
sdk/go/common/workspace/project.json, "config" and "configTypeDeclaration");
the CLI checks stack values against it as workspace.ValidateConfigValue does
(project.go:771-826). ``conforms`` below restates those rules to check every
committed stack against the block.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from keepsource.settings import PRIVATE_KEY_KEY, Settings, parse, project_config
from keepsource.stackfile import PROJECT_ROOT, load, load_config
from tests.conftest import ALL_STACKS

SIMPLE = {"string", "integer", "boolean", "array", "object"}


def _block() -> dict[str, Any]:
    doc = yaml.safe_load((PROJECT_ROOT / "Pulumi.yaml").read_text())
    block: dict[str, Any] = doc["config"]
    return block


def conforms(decl: dict[str, Any], value: Any) -> bool:
    kind = decl["type"]
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if kind == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if kind == "object":
        return isinstance(value, dict)
    return isinstance(value, list) and all(conforms(decl["items"], v) for v in value)


def test_committed_block_is_the_generated_one() -> None:
    assert _block() == project_config(), "regenerate Pulumi.yaml's config: block"


def test_every_settings_key_is_declared_with_its_type() -> None:
    block = _block()
    aliases = {f.alias or n for n, f in Settings.model_fields.items()}
    assert set(block) == aliases  # the SSH credentials are not declared (an agent needs none)
    assert PRIVATE_KEY_KEY not in block
    for name, decl in block.items():
        assert decl["type"] in SIMPLE, name
        assert ":" not in name  # the project's own namespace
        if decl["type"] == "array":
            assert decl["items"]["type"] in SIMPLE
        assert decl["description"]
    props = Settings.model_json_schema(by_alias=True)["properties"]
    assert block["nodePort"]["type"] == props["nodePort"]["type"] == "integer"
    assert block["workers"]["items"] == {"type": "object"}
    assert block["allowedClients"]["items"] == {"type": "string"}


def test_required_and_secret_keys() -> None:
    """A declared key without a default is required by the CLI; so the model's
    required keys are exactly the ones without a default, and no key is declared
    secret (the CLI would require it: an SSH agent needs no private key)."""
    block = _block()
    required = set(Settings.model_json_schema(by_alias=True)["required"])
    assert {k for k, d in block.items() if "default" not in d} == required
    assert {k for k, d in block.items() if d.get("secret")} == set()


def test_defaults_mean_what_the_model_means() -> None:
    """A stack that sets only the required keys gets, through the block's
    defaults, exactly the model's own defaults. (``workload`` and
    ``allowedClients`` have defaults, {} and [], that mean "not given": a stack
    sets them or lists ``services``.)"""
    block = _block()
    minimal = {k: v for k, v in load_config("dev").items() if k.split(":")[1] in block}
    for name, decl in block.items():
        if "default" in decl and name not in ("workload", "allowedClients"):
            minimal.pop(f"keepsource:{name}", None)
    without = parse(minimal)
    with_defaults = parse(
        {
            **{
                f"keepsource:{k}": json.dumps(d["default"])
                for k, d in block.items()
                if "default" in d
            },
            **minimal,
        }
    )
    assert with_defaults == without
    assert without.verify is None and without.node_port == 30080


def test_every_stack_conforms_to_the_declared_types() -> None:
    block = _block()
    for stack in ALL_STACKS:
        for key, value in load_config(stack).items():
            ns, _, name = key.partition(":")
            if ns != "keepsource":
                continue
            assert name in block, (stack, key)
            if isinstance(value, dict) and set(value) == {"secure"}:
                assert block[name].get("secret") or block[name]["type"] == "object"
                continue
            assert conforms(block[name], value), (stack, key)
        assert load(stack)


def test_conforms_is_not_vacuous() -> None:
    block = _block()
    assert not conforms(block["nodePort"], "thirty")
    assert not conforms(block["workers"], {"name": "w"})
    assert not conforms(block["allowedClients"], [1])
