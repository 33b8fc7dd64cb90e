"""Schemas derived from the settings model: the stack file's JSON schema (for
editors) and the typed ``config:`` block of ``Pulumi.yaml``.

The ``config:`` block follows the Pulumi project schema: each key (bare keys
are the project's namespace) declares ``type`` (string, integer, boolean,
array, object; an array names its ``items``), optionally ``description``,
``default`` and ``secret`` (pulumi/pulumi sdk/go/common/workspace/project.json
lines 74-105 and 335-396, project.go:771-826 for how values are checked: there
is no float type, so numbers with a fraction live inside objects). The CLI
treats a declared key without a default as required and refuses a plain value
for a key declared secret (pulumi/pulumi pkg/workspace/config.go:316-323 and
126-133).
"""

from __future__ import annotations

from typing import Any

from keepsource.settings.errors import NAMESPACE
from keepsource.settings.loader import PRIVATE_KEY_KEY, PRIVATE_KEY_PASSWORD_KEY
from keepsource.settings.model import Settings

_SECURE = {
    "type": "object",
    "properties": {"secure": {"type": "string"}},
    "required": ["secure"],
    "additionalProperties": False,
}


def json_schema() -> dict[str, Any]:
    """JSON schema of a ``Pulumi.STACK.yaml`` for editors."""
    inner = Settings.model_json_schema(by_alias=True)
    defs = inner.pop("$defs", {})
    kubeconfig = defs["Kubernetes"]["properties"]["kubeconfig"]
    kubeconfig["anyOf"] = [{"type": "string"}, _SECURE, {"type": "null"}]
    props = {f"{NAMESPACE}:{k}": v for k, v in inner["properties"].items()}
    props[f"{NAMESPACE}:{PRIVATE_KEY_KEY}"] = {
        "description": "SSH private key of the LB host (and the jump host): only as a "
        "secret. Without it the SSH agent of pulumi's environment signs.",
        **_SECURE,
    }
    props[f"{NAMESPACE}:{PRIVATE_KEY_PASSWORD_KEY}"] = {
        "description": "The passphrase of an encrypted lbPrivateKey: only as a secret.",
        **_SECURE,
    }
    config_block: dict[str, Any] = {
        "type": "object",
        "properties": props,
        "required": [f"{NAMESPACE}:{k}" for k in inner.get("required", [])],
        "patternProperties": {r"^(kubernetes|command|pulumi):": {}},
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "keepsource stack file (Pulumi.STACK.yaml)",
        "type": "object",
        "properties": {
            "config": config_block,
            "secretsprovider": {"type": "string"},
            "encryptedkey": {"type": "string"},
            "encryptionsalt": {"type": "string"},
        },
        "$defs": defs,
    }


def _pulumi_type(prop: dict[str, Any]) -> dict[str, Any]:
    """The Pulumi config type of one top-level property of the JSON schema."""
    options = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
    (only,) = options
    if "$ref" in only or only.get("type") == "object":
        return {"type": "object"}
    if only.get("type") == "array":
        return {"type": "array", "items": _pulumi_type(only["items"])}
    if only.get("type") in ("integer", "boolean", "string"):
        return {"type": only["type"]}
    raise ValueError(f"no Pulumi config type for {only}")


def project_config() -> dict[str, Any]:
    """The ``config:`` block of ``Pulumi.yaml``: every key, typed; scalar
    defaults as the model has them; the private key secret."""
    inner = Settings.model_json_schema(by_alias=True)
    defs = inner.get("$defs", {})
    required = set(inner.get("required", []))
    block: dict[str, Any] = {}
    for name, prop in inner["properties"].items():
        entry = _pulumi_type(prop)
        refs = [p["$ref"] for p in prop.get("anyOf", [prop]) if "$ref" in p]
        description = prop.get("description") or defs[refs[0].rsplit("/", 1)[1]]["description"]
        entry["description"] = " ".join(description.split())
        if name not in required:
            # A declared key without a default is required by the CLI
            # (pkg/workspace/config.go:316-323); an object's default is {}: the
            # model's own defaults apply inside it ({} for verify: no section).
            # A list that may be left out ([]: not given) likewise.
            default = prop.get("default")
            if entry["type"] == "array" and default is None:
                default = []
            entry["default"] = {} if entry["type"] == "object" else default
        block[name] = entry
    # lbPrivateKey and lbPrivateKeyPassword are not declared: a key declared
    # secret must be set (pkg/workspace/config.go:316-323) and cannot have a
    # default (the CLI reads a default as a plain value of a secret key and
    # refuses it, config.go:126-133; tried with the CLI built here), yet an
    # SSH agent needs neither. The program refuses them in plain text instead
    # (loader._take_secrets), before any resource is declared.
    return block
