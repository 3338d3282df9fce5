"""Located YAML values, and typed access that fails at the value's line.

A batch file's errors must say where: every value is a :class:`_Node` that keeps its line and its
path in the document, and every accessor here (``_as_map``, ``_as_text``, ``_check_keys``, ...)
raises :class:`_Fail` at the node it was given; :func:`~covey.batchfile.load_batch` adds the file
name. The rest of the package reads nodes only through these, so no error loses its place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from covey import flags
from covey.errors import SpecError

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Node:
    """A YAML value and where it was written: ``path`` is where it sits in the document."""

    value: object  # str | int | float | bool | None | dict[str, _Node] | list[_Node]
    line: int
    path: str
    key_line: int
    text: str = ""  # a scalar as written, so `user: 1000` or `- 010` stay what the user typed


class _Fail(Exception):
    """An error at a line; :func:`load_batch` adds the file name."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _fail(node: _Node, problem: str, *, at_key: bool = False) -> _Fail:
    where = f"{node.path}: " if node.path else ""
    return _Fail(node.key_line if at_key else node.line, where + problem)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a mapping" if isinstance(value, dict) else "a list"


def _as_map(node: _Node) -> dict[str, _Node]:
    if not isinstance(node.value, dict):
        raise _fail(node, f"expected a mapping, got {_kind(node.value)}")
    return cast(dict[str, _Node], node.value)


def _as_list(node: _Node, what: str = "a list") -> list[_Node]:
    if not isinstance(node.value, list):
        raise _fail(node, f"expected {what}, got {_kind(node.value)}")
    return cast(list[_Node], node.value)


def _as_text(node: _Node, what: str = "a string") -> str:
    """A string; numbers are taken as written (``user: 1000``)."""
    if isinstance(node.value, str):
        return node.value
    if isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.text
    hint = " (quote it)" if isinstance(node.value, bool) else ""
    raise _fail(node, f"expected {what}, got {_kind(node.value)}{hint}")


def _as_bool(node: _Node) -> bool:
    if not isinstance(node.value, bool):
        raise _fail(node, f"expected true or false, got {_kind(node.value)}")
    return node.value


def _call(node: _Node, parser: Callable[..., _T], expected: str, **kwargs: Any) -> _T:
    """Run a :mod:`covey.flags` parser on a scalar, its errors located at the node."""
    if node.value is None or isinstance(node.value, dict | list | bool):
        raise _fail(node, f"expected {expected}, got {_kind(node.value)}")
    try:
        return parser(node.value, what=node.path, **kwargs)
    except SpecError as exc:
        raise _Fail(node.line, str(exc)) from None


def _check(
    func: Callable[..., _T], node: _Node, *args: Any, what: str | None = None, **kwargs: Any
) -> _T:
    """Run a validator that raises :class:`SpecError`, its errors located at the node."""
    try:
        return func(*args, what=what or node.path, **kwargs)
    except SpecError as exc:
        raise _Fail(node.line, str(exc)) from None


def _check_keys(
    node: _Node,
    known: Mapping[str, object] | tuple[str, ...],
    hints: Mapping[str, str] | None = None,
    *,
    extensions: bool = False,
) -> dict[str, _Node]:
    """The mapping, once every key in it is known; unknown keys get a suggestion."""
    mapping = _as_map(node)
    for key, child in mapping.items():
        if key in known or (extensions and key.startswith("x-")):
            continue
        if hints and key in hints:
            raise _fail(child, f"not supported by covey ({hints[key]})", at_key=True)
        raise _fail(child, f"unknown key{flags.did_you_mean(key, known)}", at_key=True)
    return mapping


def _present(mapping: Mapping[str, _Node], key: str) -> _Node | None:
    """The value at ``key`` unless absent or null (null unsets, e.g. a default)."""
    node = mapping.get(key)
    return None if node is None or node.value is None else node
