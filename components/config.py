"""Stack config from the Pulumi runtime into keepsource's settings model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from keepsource.connection import INSECURE_WARNING, read_host_key_file
from keepsource.settings import (
    NAMESPACE,
    PRIVATE_KEY_KEY,
    PRIVATE_KEY_PASSWORD_KEY,
    ConfigError,
    Fault,
    Settings,
    parse,
    shared_check_warning,
)

#: The provider's own default, named explicitly: left unset, the SDK would copy
#: the ambient KUBECONFIG (an absolute path of this machine) into the
#: provider's inputs, and so into the state
#: (pulumi_kubernetes/provider.py: ``kubeconfig = _utilities.get_env('KUBECONFIG')``).
#: The provider expands '~' itself when it loads the file
#: (pulumi-kubernetes provider/pkg/provider/util.go:141-155, parseKubeconfigString).
DEFAULT_KUBECONFIG = "~/.kube/config"


class StackConfigError(ConfigError, pulumi.RunError):
    """A ConfigError the Pulumi CLI prints as a plain message (no traceback)."""


@dataclass(frozen=True)
class Credentials:
    """The stack's credentials, each a secret Output (never plain text)."""

    private_key: pulumi.Output[str] | None
    """keepsource:lbPrivateKey (a secret); None: the SSH agent of the engine's
    environment signs (pulumi-command's default, SSH_AUTH_SOCK)."""
    kubeconfig: pulumi.Output[str] | None
    """kubernetes.kubeconfig (path or contents) or DEFAULT_KUBECONFIG; None in LB-only mode."""
    private_key_password: pulumi.Output[str] | None = None
    """keepsource:lbPrivateKeyPassword: an encrypted lbPrivateKey's passphrase."""
    context: pulumi.Output[str] | None = None
    """kubernetes.context: a secret Output when the engine marks the
    ``keepsource:kubernetes`` block secret (``--secret --path`` on either of
    its keys: the engine cannot say which), plain otherwise; None when unset."""


def raw_config() -> dict[str, Any]:
    """Every config key the engine (or a test's set_all_config) hands over."""
    merged: dict[str, Any] = dict(runtime_config.get_config_env())
    merged.update(runtime_config.CONFIG.get())
    return merged


def secret_keys() -> set[str]:
    keys = set(runtime_config.get_config_secret_keys_env())
    keys |= {k for k in raw_config() if runtime_config.is_config_secret(k)}
    return keys


def load_settings(root: Path | None = None) -> tuple[Settings, Credentials]:
    """Validate the whole stack config before any resource is declared.

    Raises StackConfigError (a ConfigError and a pulumi.RunError) listing every
    bad key. ``root`` is the project root, where ``lb.ssh.hostKeyFile`` is
    relative to: by default the working directory, which the Pulumi CLI sets
    to the project root (pulumi/pulumi pkg/engine/project.go:45-68 getPwdMain,
    sdk/python/cmd/pulumi-language-python/main.go:1641 ``cmd.Dir = req.Pwd``).
    """
    secrets = secret_keys()
    try:
        settings = parse(raw_config(), secrets)
        settings = read_host_key_file(settings, root or Path.cwd())
    except ConfigError as error:
        raise StackConfigError(error.faults) from None
    if any(n.ssh.insecure_accept_any_host_key for n in settings.lb_nodes):
        pulumi.log.warn(INSECURE_WARNING)
    if settings.shared_check_sources:
        pulumi.log.warn(shared_check_warning(settings))
    key = pulumi.Config(NAMESPACE).get_secret(PRIVATE_KEY_KEY)
    password = pulumi.Config(NAMESPACE).get_secret(PRIVATE_KEY_PASSWORD_KEY)
    if key is None:
        _agent_or_fail()
    kubeconfig = context = None
    if settings.manages_workload:
        value = settings.kubernetes.kubeconfig
        kubeconfig = pulumi.Output.secret(
            value.get_secret_value() if value is not None else DEFAULT_KUBECONFIG
        )
        if settings.kubernetes.context is not None:
            context = pulumi.Output.from_input(settings.kubernetes.context)
            if f"{NAMESPACE}:kubernetes" in secrets:
                context = pulumi.Output.secret(settings.kubernetes.context)
    return settings, Credentials(
        private_key=key, kubeconfig=kubeconfig, context=context, private_key_password=password
    )


#: What the LB's SSH login uses when the stack holds no private key.
NO_CREDENTIALS = (
    "not set, and the environment has no SSH agent (SSH_AUTH_SOCK): set the LB's key with "
    f"`pulumi config set --secret {NAMESPACE}:{PRIVATE_KEY_KEY} < KEYFILE` (encrypted: also "
    f"{PRIVATE_KEY_PASSWORD_KEY}), or run pulumi with an agent that holds it (ssh-add)"
)


def _agent_or_fail() -> None:
    """Without keepsource:lbPrivateKey, pulumi-command signs with the agent of
    SSH_AUTH_SOCK (pulumi-command provider/pkg/provider/remote/connection.go:
    131-144, tryGetDefaultAgentSocket); the program runs in the engine's
    environment, as the provider does. No agent: one clear error at ``up``
    before any resource is declared; a preview (which logs in nowhere) warns."""
    if os.environ.get("SSH_AUTH_SOCK"):
        return
    if pulumi.runtime.is_dry_run():
        pulumi.log.warn(f"{NAMESPACE}:{PRIVATE_KEY_KEY} is {NO_CREDENTIALS}; `pulumi up` will stop")
        return
    raise StackConfigError([Fault(f"{NAMESPACE}:{PRIVATE_KEY_KEY}", NO_CREDENTIALS)])
