"""Stack config from the Pulumi runtime into keepsource's settings model."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from keepsource.settings import NAMESPACE, PRIVATE_KEY_KEY, ConfigError, Settings, parse


class StackConfigError(ConfigError, pulumi.RunError):
    """A ConfigError the Pulumi CLI prints as a plain message (no traceback)."""


def raw_config() -> dict[str, Any]:
    """Every config key the engine (or a test's set_all_config) hands over."""
    merged: dict[str, Any] = dict(runtime_config.get_config_env())
    merged.update(runtime_config.CONFIG.get())
    return merged


def secret_keys() -> set[str]:
    keys = set(runtime_config.get_config_secret_keys_env())
    full = f"{NAMESPACE}:{PRIVATE_KEY_KEY}"
    if runtime_config.is_config_secret(full):
        keys.add(full)
    return keys


def load_settings() -> tuple[Settings, pulumi.Output[str] | None]:
    """Validate the whole stack config before any resource is declared.

    Raises keepsource.settings.ConfigError listing every bad key. The private key
    is read only as a secret Output (never as plain text).
    """
    try:
        settings = parse(raw_config(), secret_keys())
    except ConfigError as error:
        raise StackConfigError(error.faults) from None
    key = pulumi.Config(NAMESPACE).get_secret(PRIVATE_KEY_KEY)
    return settings, key
