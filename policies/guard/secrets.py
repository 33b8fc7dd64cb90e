"""Secrets stay out of the guard's messages (CI posts them to pull requests).

The engine sends a resource's secrets to the analyzer wrapped
(``MarshalOptions{KeepSecrets: true}``, pulumi/pulumi
sdk/go/common/resource/plugin/analyzer_plugin.go:350), but pulumi-policy 1.21
unwraps them into plain values before a stack policy sees them
(deserialize.py:65-71, called for AnalyzeStack at policy.py:1049 without
``proxy_secrets``): through its public API a secret looks like any string.
So the pack notes every secret value as pulumi-policy unwraps it (one wrapper
around its module-level ``_deserialize_property``, pinned version; the tests
send secrets in the engine's wire shape and fail if the hook stops seeing
them) and every message leaves through :func:`scrub`.

What a secret hides: its whole value, each of its lines of 12 characters or
more, and each of its words of 8 characters or more that holds a digit or a
sign (passwords, keys, tokens, addresses). Short plain words ("backend",
"check") stay readable, so a message about a secret config still names the
proxy, the verdict and the fix.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

REDACTED = "[secret]"
_LOCK = threading.Lock()
#: Noted while pulumi-policy deserializes (each policy of a request gets its own
#: copy, policy.py:1031-1078), taken by the request that reads them.
_PENDING: set[str] = set()
#: The current request's secrets: a message of one stack never loses words to
#: another stack's secrets (the pack process may judge several in a row).
_CURRENT: set[str] = set()
_INSTALLED = False
_WORD = re.compile(r"\S{8,}")


def fragments(value: str) -> set[str]:
    """The parts of one secret value that a message must not show."""
    out = {value} if value.strip() else set()
    for line in value.splitlines():
        line = line.strip()
        if len(line) >= 12:
            out.add(line)
        for word in _WORD.findall(line):
            word = word.strip("'\",;")
            if len(word) >= 8 and any(not c.isalpha() for c in word):
                out.add(word)
    return {f for f in out if len(f) >= 4}


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def note(value: Any) -> None:
    """Remember a secret (any strings inside it) for :func:`scrub`."""
    found = set()
    for s in _strings(value):
        found |= fragments(s)
    if found:
        with _LOCK:
            _PENDING.update(found)


def begin() -> None:
    """A new request: its secrets are the ones noted since the last one."""
    with _LOCK:
        _CURRENT.clear()
        _CURRENT.update(_PENDING)
        _PENDING.clear()


def absorb() -> None:
    """The same request, a later policy: add what its copy noted."""
    with _LOCK:
        _CURRENT.update(_PENDING)
        _PENDING.clear()


def scrub(message: str) -> str:
    """The message with every known secret fragment replaced, longest first."""
    with _LOCK:
        known = sorted(_CURRENT, key=len, reverse=True)
    for frag in known:
        if frag in message:
            # whole tokens only: a secret 192.168.0.1 is not hidden inside 192.168.0.10
            message = re.sub(rf"(?<![\w.]){re.escape(frag)}(?![\w])", REDACTED, message)
    return message


def install() -> bool:
    """Wrap pulumi-policy's deserializer so it notes secrets as it unwraps them."""
    global _INSTALLED
    if _INSTALLED:
        return True
    from pulumi_policy import deserialize

    original = getattr(deserialize, "_deserialize_property", None)
    sig_key = getattr(deserialize, "SPECIAL_SIG_KEY", None)
    secret_sig = getattr(deserialize, "SPECIAL_SECRET_SIG", None)
    if original is None or sig_key is None or secret_sig is None:
        return False

    def noting(prop: Any, proxy_secrets: bool = False) -> Any:
        if isinstance(prop, dict) and prop.get(sig_key) == secret_sig and "value" in prop:
            note(prop["value"])
        return original(prop, proxy_secrets)

    deserialize._deserialize_property = noting
    _INSTALLED = True
    return True
