"""Read a stack's settings from ``Pulumi.STACK.yaml`` without the engine.

The YAML is read with PyYAML's pure-Python ``SafeLoader``, subclassed at its
documented extension points: ``compose_node`` bounds the nesting depth (the
composer recurses; a deep document would end in a RecursionError) and refuses,
by line and column, what a Pulumi stack file never holds: explicit tags
(``!!bool``, ``!Custom``: their constructors fail with a traceback or echo the
value) and anchors or aliases (an alias bomb grows exponentially when walked;
refused at the first anchor, the composed document is a tree and every walk
below is linear in its size). The composed node tree is then checked before
anything is constructed: a key given twice (plain YAML loaders keep the last
one silently), a merge key ``<<:`` (resolved silently otherwise), and numbers
of more than ``MAX_DIGITS`` digits are faults named by their key path or
position. Construction errors are reported at the node's position. A YAML
error is reported with its line and column only: never the line's text, the
parser's problem text (which quotes tag and alias names and characters) or the
value, any of which may be key material.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, NodeEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from keepsource.settings import ConfigError, Fault, Settings, parse
from keepsource.settings.loader import MAX_DEPTH, MAX_DIGITS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_STACK = re.compile(r"[A-Za-z0-9_.-]+")
#: A hard stop for the recursive composer, far below Python's recursion limit;
#: anything deeper than MAX_DEPTH (under config: KEY) is named by its key path.
_COMPOSE_LIMIT = 100
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
#: Line breaks as PyYAML's reader counts them (yaml/reader.py, Reader.forward).
_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


class StackFileError(yaml.YAMLError):
    """A structural fault of the stack file, with the key path it is at."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _position(text: str, index: int) -> str:
    """Line and column of a character index, counted as PyYAML counts them."""
    line, start = 0, 0
    for brk in _BREAK.finditer(text, 0, index):
        line, start = line + 1, brk.end()
    return f"line {line + 1}, column {index - start + 1}"


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            if self._depth > _COMPOSE_LIMIT:
                mark = event.start_mark
                raise StackFileError(
                    f"line {mark.line + 1}", f"nests deeper than {MAX_DEPTH} levels"
                )
            _refuse(event)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """A constructor's own failure (``0b_``, the date ``2001-02-30``) at the
        node's position; its message would quote the value."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as error:
            raise StackFileError(
                _at(node.start_mark), f"cannot be read as a YAML value ({type(error).__name__})"
            ) from None


def _refuse(event: Any) -> None:
    """What a Pulumi stack file never holds, named by position only (a tag's or
    an anchor's name may be key material)."""
    if isinstance(event, AliasEvent) or (isinstance(event, NodeEvent) and event.anchor is not None):
        raise StackFileError(
            _at(event.start_mark),
            "uses a YAML anchor or alias: not allowed in a stack file (write the value out)",
        )
    if getattr(event, "tag", None) is not None:
        raise StackFileError(
            _at(event.start_mark), "uses an explicit YAML tag: not allowed in a stack file"
        )


def _path(parts: list[str | int]) -> str:
    """``["config", "keepsource:lb", "ssh", "host"]`` -> ``keepsource:lb.ssh.host``."""
    if parts[:1] == ["config"] and len(parts) > 1:
        parts = parts[1:]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else ("." if text else "") + part
    return text or "(document)"


def _digits(node: ScalarNode) -> int:
    text = str(node.value)
    if node.tag == _INT_TAG:
        return len(text.replace("_", "").lstrip("+-"))
    return sum(ch.isdigit() for ch in text)


def _check_nodes(root: Node) -> None:
    """Duplicate keys, merge keys and over-long numbers, named by their key
    path (no recursion; the tree has no aliases, so each node is seen once)."""
    stack: list[tuple[Node, list[str | int]]] = [(root, [])]
    while stack:
        node, parts = stack.pop()
        if len(parts) > MAX_DEPTH + 2:  # config: KEY: then the value's own levels
            raise StackFileError(_path(parts[:2]), f"nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    raise StackFileError(
                        _at(key_node.start_mark),
                        "is a YAML merge key ('<<'): not allowed in a stack file",
                    )
                if not isinstance(key_node, ScalarNode):
                    raise StackFileError(
                        _at(key_node.start_mark), "a key must be a plain name, not a collection"
                    )
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
        elif isinstance(node, ScalarNode) and node.tag in (_INT_TAG, _FLOAT_TAG):
            digits = _digits(node)
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
    loader: _Loader | None = None
    try:
        # The reader checks every character when it is made: inside the try.
        loader = _Loader(decoded)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node)
        return loader.construct_document(node)
    except StackFileError as error:
        raise ConfigError([Fault(f"{name}: {error.where}", error.reason)]) from None
    except yaml.reader.ReaderError as error:
        raise ConfigError(
            [
                Fault(
                    f"{name}: {_position(decoded, error.position)}",
                    "holds a character YAML does not allow (NUL or another control character)",
                )
            ]
        ) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = _at(mark) if mark else "an unknown position"
        raise ConfigError([Fault(name, f"is not valid YAML at {where}")]) from None
    except (yaml.YAMLError, ValueError, RecursionError) as error:
        raise ConfigError([Fault(name, f"is not valid YAML ({type(error).__name__})")]) from None
    finally:
        if loader is not None:
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
