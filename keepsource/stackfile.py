"""Read a stack's settings from ``Pulumi.STACK.yaml`` without the engine.

The YAML is read with PyYAML's pure-Python ``SafeLoader``, subclassed at the
three hooks that matter here (the loader is already a dependency and these are
its documented extension points): ``compose_node`` bounds the nesting depth (the
composer recurses; a deep document would end in a RecursionError). The composed
node tree is then checked before anything is constructed: a key given twice
(plain YAML loaders keep the last one silently) and absurdly long integers are
faults named by their key path. A
YAML error is reported with its line and column, never with the line's text
(which may hold key material).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from keepsource.settings import ConfigError, Fault, Settings, parse
from keepsource.settings.loader import MAX_DEPTH, MAX_DIGITS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_STACK = re.compile(r"[A-Za-z0-9_.-]+")
#: A hard stop for the recursive composer, far below Python's recursion limit;
#: anything deeper than MAX_DEPTH (under config: KEY) is named by its key path.
_COMPOSE_LIMIT = 100


class StackFileError(yaml.YAMLError):
    """A structural fault of the stack file, with the key path it is at."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > _COMPOSE_LIMIT:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise StackFileError(
                    f"line {mark.line + 1}", f"nests deeper than {MAX_DEPTH} levels"
                )
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


def _path(parts: list[str | int]) -> str:
    """``["config", "keepsource:lb", "ssh", "host"]`` -> ``keepsource:lb.ssh.host``."""
    if parts[:1] == ["config"] and len(parts) > 1:
        parts = parts[1:]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else ("." if text else "") + part
    return text or "(document)"


def _check_nodes(root: Node) -> None:
    """Duplicate keys and over-long integers, named by their key path (no recursion)."""
    stack: list[tuple[Node, list[str | int]]] = [(root, [])]
    while stack:
        node, parts = stack.pop()
        if len(parts) > MAX_DEPTH + 2:  # config: KEY: then the value's own levels
            raise StackFileError(_path(parts[:2]), f"nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                name = str(key_node.value)
                if name in seen:
                    line = key_node.start_mark.line + 1
                    raise StackFileError(
                        _path([*parts, name]), f"is given twice (again on line {line})"
                    )
                seen.add(name)
                stack.append((value_node, [*parts, name]))
        elif isinstance(node, SequenceNode):
            stack.extend((item, [*parts, i]) for i, item in enumerate(node.value))
        elif node.tag == "tag:yaml.org,2002:int":
            digits = len(str(node.value).replace("_", "").lstrip("+-"))
            if digits > MAX_DIGITS:
                raise StackFileError(
                    _path(parts), f"is a number of {digits} digits (at most {MAX_DIGITS})"
                )


def stack_path(stack: str, root: Path = PROJECT_ROOT) -> Path:
    if not _STACK.fullmatch(stack):
        raise ConfigError([Fault("stack", f"{stack!r} is not a stack name")])
    return root / f"Pulumi.{stack}.yaml"


def stacks(root: Path = PROJECT_ROOT) -> list[str]:
    """Every stack that has a stack file in the project root."""
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in root.glob("Pulumi.*.yaml"))


def _where(key: str, path: Path) -> str:
    """A key path found in the stack file as a full config key when it is one."""
    return key if ":" in key else f"{path.name}: {key}"


def load_yaml(text: bytes, name: str) -> Any:
    """One YAML document from bytes; ConfigError naming the file and the place."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            [Fault(name, f"is not UTF-8 (byte 0x{text[error.start]:02x} at offset {error.start})")]
        ) from None
    loader = _Loader(decoded)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node)
        return loader.construct_document(node)
    except StackFileError as error:
        raise ConfigError([Fault(f"{name}: {error.where}", error.reason)]) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise ConfigError(
            [Fault(name, f"is not valid YAML: {error.problem or error.context} at {where}")]
        ) from None
    except (yaml.YAMLError, ValueError, RecursionError) as error:
        raise ConfigError([Fault(name, f"is not valid YAML ({type(error).__name__})")]) from None
    finally:
        loader.dispose()


def load_config(stack: str, root: Path = PROJECT_ROOT) -> dict[str, Any]:
    path = stack_path(stack, root)
    if not path.is_file():
        raise ConfigError([Fault("stack", f"no stack file {path}")])
    doc = load_yaml(path.read_bytes(), path.name) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("config") or {}, dict):
        raise ConfigError([Fault(f"{path.name}: config", "must be a mapping")])
    config = doc.get("config") or {}
    bad = [k for k in config if not isinstance(k, str)]
    if bad:
        raise ConfigError([Fault(f"{path.name}: {k!r}", "config keys are strings") for k in bad])
    return dict(config)


def load(stack: str, root: Path = PROJECT_ROOT) -> Settings:
    """Settings of a stack; secrets (``{secure: ...}``) are accepted, never read."""
    return parse(load_config(stack, root))
