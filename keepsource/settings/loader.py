"""From a flat config map (as the engine or a stack file hands it over) to
:class:`Settings`, or one :class:`ConfigError` naming every bad key.

Bounded on purpose: numbers of more than ``MAX_DIGITS`` digits and values
nested deeper than ``MAX_DEPTH`` are faults (named), never a traceback.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from keepsource.settings.errors import NAMESPACE, ConfigError, Fault, faults_from
from keepsource.settings.model import Settings
from keepsource.settings.rules import cross_faults
from keepsource.settings.workload import looks_like_contents

#: The SSH private key: a secret only, never part of :class:`Settings`.
PRIVATE_KEY_KEY = "lbPrivateKey"
#: The passphrase of an encrypted lbPrivateKey: a secret only, never part of
#: :class:`Settings`. Without lbPrivateKey the SSH agent signs (no passphrase).
PRIVATE_KEY_PASSWORD_KEY = "lbPrivateKeyPassword"
#: Nested keys that may carry credentials: read as secrets (pydantic SecretStr);
#: as contents they must be set with --secret.
CREDENTIAL_PATHS: frozenset[tuple[str, ...]] = frozenset({("kubernetes", "kubeconfig")})
#: Nested keys that may be set with ``--secret --path`` (and stay secret: the
#: program passes the whole ``kubernetes`` block on as secrets when the engine
#: marks it secret). The engine reports secretness per top-level key only: an
#: object is secure when any value inside is (pulumi/pulumi
#: sdk/go/common/resource/config/object.go:51-72 ``Secure``, map.go:104-113
#: ``SecureKeys``, at 1b5949891b), so the program cannot tell which of these
#: was encrypted, and an offline render must accept the same.
SECRET_PATHS: frozenset[tuple[str, ...]] = CREDENTIAL_PATHS | {("kubernetes", "context")}
#: Config namespaces a keepsource stack may hold besides its own: the providers
#: it uses and the engine's. Any other (``keepsorce:``) is a typo, not ignored.
OTHER_NAMESPACES = frozenset({"kubernetes", "command", "pulumi"})
#: Provider keys with no effect here: stack config of a provider's namespace
#: reaches only its *default* provider (pulumi/pulumi
#: pkg/resource/deploy/default_providers.go:139-147, GetPackageConfig), and
#: keepsource declares an explicit one configured by keepsource:kubernetes.*.
WITHOUT_EFFECT = frozenset({"kubernetes:context", "kubernetes:kubeconfig"})
MAX_DIGITS = 20
MAX_DEPTH = 16
#: What a ``{secure: ...}`` value of a stack file becomes when it is not decrypted.
ENCRYPTED = "(encrypted)"

_NUMBER = re.compile(r"-?\d+(\.\d+)?")
#: A string pydantic would read as a number (int or float, YAML-style "_" too).
_NUMERIC = re.compile(r"[-+]?[0-9_]*\.?[0-9_]+([eE][-+]?[0-9]+)?")


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_DIGITS:
        raise ValueError(f"is a number of {digits} digits (at most {MAX_DIGITS})")
    return int(text)


def _bounded_float(text: str) -> float:
    digits = sum(ch.isdigit() for ch in text)
    if digits > MAX_DIGITS:
        raise ValueError(f"is a number of {digits} digits (at most {MAX_DIGITS})")
    return float(text)


def _long_number(value: Any) -> tuple[str, int] | None:
    """(where, digits) of the first string inside ``value`` that reads as a
    number of more than MAX_DIGITS digits (pydantic would read '0.999...' as a
    float), without recursion; ``where`` is the path below the top-level key."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str) and _NUMERIC.fullmatch(item.strip()):
            digits = sum(ch.isdigit() for ch in item)
            if digits > MAX_DIGITS:
                return where, digits
        elif isinstance(item, Mapping):
            stack.extend((v, f"{where}.{k}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"holds the key {k!r} twice")
        out[k] = v
    return out


def depth(value: Any) -> int:
    """Nesting depth of a decoded value (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, Mapping):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _looks_like_json(text: str) -> bool:
    return (
        text[:1] in ("[", "{") or text in ("true", "false", "null") or bool(_NUMBER.fullmatch(text))
    )


def _json(full_key: str, text: str) -> tuple[Any, list[Fault]]:
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_int=_bounded_int,
            parse_float=_bounded_float,
        )
        return value, []
    except json.JSONDecodeError:
        # "[x" is broken JSON; a plain string that merely looks numeric stays a string.
        return text, [Fault(full_key, "is not valid JSON")] if text[:1] in ("[", "{") else []
    except RecursionError:
        return None, [Fault(full_key, f"nests deeper than {MAX_DEPTH} levels")]
    except ValueError as error:
        return None, [Fault(full_key, str(error))]


def _bounds(full_key: str, value: Any) -> list[Fault]:
    if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) > MAX_DIGITS:
        return [Fault(full_key, f"is a number of more than {MAX_DIGITS} digits")]
    if depth(value) > MAX_DEPTH:
        return [Fault(full_key, f"nests deeper than {MAX_DEPTH} levels")]
    long = _long_number(value)
    if long is not None:
        where, digits = long
        return [Fault(full_key + where, f"is a number of {digits} digits (at most {MAX_DIGITS})")]
    return []


def decode(full_key: str, value: Any) -> tuple[Any, list[Fault]]:
    """Pulumi hands config values over as strings (objects and lists as JSON)."""
    if isinstance(value, str) and _looks_like_json(value.strip()):
        value, faults = _json(full_key, value.strip())
        if faults:
            return None, faults
    faults = _bounds(full_key, value)
    return (None, faults) if faults else (value, [])


def split_namespace(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[Fault]]:
    """Strip ``keepsource:`` from a flat config map. The providers' namespaces
    are left to them; bare keys and any other namespace are faults."""
    values: dict[str, Any] = {}
    faults: list[Fault] = []
    for full, value in config.items():
        ns, sep, name = full.partition(":")
        if not sep:
            faults.append(Fault(full, "config keys must be namespaced as keepsource:KEY"))
        elif ns == NAMESPACE:
            decoded, bad = decode(full, value)
            faults += bad
            if not bad:
                values[name] = copy.deepcopy(decoded)
        elif full in WITHOUT_EFFECT:
            faults.append(
                Fault(
                    full,
                    "has no effect: keepsource declares its own Kubernetes provider, "
                    f"configured by {NAMESPACE}:kubernetes.{name} (set that instead)",
                )
            )
        elif ns not in OTHER_NAMESPACES:
            faults.append(
                Fault(
                    full,
                    f"unknown config namespace {ns!r}: keepsource reads keepsource:KEY "
                    f"(others allowed: {', '.join(sorted(OTHER_NAMESPACES))})",
                )
            )
    return values, faults


def _is_secure(value: Any) -> bool:
    """A stack file's encrypted value (``{secure: v1:...}``), not decrypted."""
    return isinstance(value, Mapping) and set(value) == {"secure"}


def _replace_encrypted(values: dict[str, Any]) -> list[Fault]:
    """Replace encrypted credentials with a placeholder; refuse encrypted values
    that keepsource reads as plain text."""
    faults: list[Fault] = []
    stack: list[tuple[tuple[str, ...], dict[str, Any]]] = [((), values)]
    while stack:
        path, node = stack.pop()
        for k, v in node.items():
            here = (*path, str(k))
            if _is_secure(v) and here in SECRET_PATHS:
                node[k] = ENCRYPTED
            elif _is_secure(v):
                faults.append(
                    Fault(
                        f"{NAMESPACE}:{'.'.join(here)}",
                        "is encrypted, but keepsource uses it in plain text (rendered "
                        f"configs, exports); only {PRIVATE_KEY_KEY}, "
                        f"{PRIVATE_KEY_PASSWORD_KEY} and "
                        + ", ".join(".".join(p) for p in sorted(SECRET_PATHS))
                        + " are secrets",
                    )
                )
            elif isinstance(v, dict):
                stack.append((here, v))
    return faults


def _lookup(values: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    found: Any = values
    for part in path:
        found = found.get(part) if isinstance(found, Mapping) else None
    return found


def _plain_credentials(values: dict[str, Any], secret_keys: set[str]) -> list[Fault]:
    """Credentials (kubeconfig contents) given in plain text."""
    faults: list[Fault] = []
    for path in sorted(CREDENTIAL_PATHS):
        found = _lookup(values, path)
        secret = found == ENCRYPTED or f"{NAMESPACE}:{path[0]}" in secret_keys
        if isinstance(found, str) and not secret and looks_like_contents(found):
            dotted = ".".join(path)
            faults.append(
                Fault(
                    f"{NAMESPACE}:{dotted}",
                    "holds credentials in plain text; set it with `pulumi config set "
                    f"--secret --path {NAMESPACE}:{dotted}`",
                )
            )
    return faults


def _take_secrets(values: dict[str, Any], secret_keys: set[str]) -> list[Fault]:
    faults: list[Fault] = []
    credentials = (PRIVATE_KEY_KEY, PRIVATE_KEY_PASSWORD_KEY)
    has_key = PRIVATE_KEY_KEY in values
    for name in credentials:
        if name not in values:
            continue
        raw = values.pop(name)
        if f"{NAMESPACE}:{name}" not in secret_keys and not _is_secure(raw):
            faults.append(
                Fault(
                    f"{NAMESPACE}:{name}",
                    "is stored in plain text; set it with `pulumi config set --secret`",
                )
            )
        elif name == PRIVATE_KEY_PASSWORD_KEY and not has_key:
            faults.append(
                Fault(
                    f"{NAMESPACE}:{name}",
                    f"is set but there is no {PRIVATE_KEY_KEY} (an SSH agent's keys need none)",
                )
            )
    allowed = {f"{NAMESPACE}:{n}" for n in credentials}
    allowed |= {f"{NAMESPACE}:{p[0]}" for p in SECRET_PATHS}
    for name in sorted(secret_keys):
        if name.startswith(f"{NAMESPACE}:") and name not in allowed:
            faults.append(
                Fault(
                    name,
                    "is set as a secret, but keepsource uses it in plain text (rendered "
                    "configs, exports): set it without --secret",
                )
            )
    return faults + _replace_encrypted(values) + _plain_credentials(values, secret_keys)


def parse(config: Mapping[str, Any], secret_keys: Iterable[str] = ()) -> Settings:
    """Validate a flat ``{"keepsource:key": value}`` map.

    ``keepsource:lbPrivateKey`` is accepted only as a secret (``secret_keys``
    lists it, or it is a ``{secure: ...}`` value from a stack file) and is never
    part of the returned settings. ``kubernetes.kubeconfig`` is kept as a
    pydantic ``SecretStr``; as contents it must be a secret too.
    """
    secrets = set(secret_keys)
    values, faults = split_namespace(config)
    faults += _take_secrets(values, secrets)
    try:
        settings = Settings.model_validate(values)
    except ValidationError as error:
        raise ConfigError(faults + faults_from(error)) from None
    faults += cross_faults(settings)
    if not faults:
        # What the settings make on the LB must fit, too (rendered: imported
        # here, as the renderers import the settings).
        from keepsource.host import oversize_faults

        faults += oversize_faults(settings)
    if faults:
        raise ConfigError(faults)
    return settings
