"""YAML text to :class:`~covey.batchfile.nodes._Node` trees that keep their lines.

Plain ``safe_load`` forgets where a value was written and silently keeps the last of two equal
keys. Here the composed node graph is walked by hand, so that lines survive aliases and ``<<``
merge keys, a duplicate key is an error at its line, and a recursive or exponential alias stops
at a limit instead of eating memory.
"""

from __future__ import annotations

from typing import cast

import yaml
import yaml.constructor
import yaml.reader

from covey.batchfile.nodes import _Fail, _join, _Node

_MAX_DEPTH = 64
_MAX_VALUES = 1_000_000  # aliases can make a small file expand exponentially
_MERGE_TAG = "tag:yaml.org,2002:merge"


_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _syntax_error(exc: yaml.YAMLError, text: str) -> _Fail:
    """PyYAML's error, reworded a little, at its line."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        return _Fail(line, f"YAML syntax error: {exc.reason} (character #x{exc.character:04x})")
    if not isinstance(exc, yaml.MarkedYAMLError):
        return _Fail(1, f"YAML syntax error: {exc}")
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    if exc.context and "single document" in exc.context:
        problem = "a second document (---); a batch file holds one"
    elif exc.context and exc.context_mark and exc.problem:
        problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
    line = mark.line + 1 if mark else 1
    source = text.split("\n")[line - 1] if line <= text.count("\n") + 1 else ""
    if "\t" in source[: len(source) - len(source.lstrip())]:
        problem += "; YAML indents with spaces, not tabs"
    elif "<block end>" in problem or "indicator" in problem:
        problem += "; check the indentation"
    return _Fail(line, f"YAML syntax error: {problem}")


class _Reader:
    """Turns a composed YAML node graph into :class:`_Node` trees, keeping lines."""

    def __init__(self) -> None:
        self._constructor = yaml.constructor.SafeConstructor()
        self._count = 0

    def read(self, text: str) -> _Node | None:
        loader: yaml.SafeLoader | None = None
        try:
            loader = _Loader(text)
            root = loader.get_single_node()
            return None if root is None else self._build(root, "", 1, 0)
        except yaml.YAMLError as exc:
            raise _syntax_error(exc, text) from None
        finally:
            if loader is not None:
                loader.dispose()

    def _build(self, node: yaml.Node, path: str, key_line: int, depth: int) -> _Node:
        line = node.start_mark.line + 1
        self._count += 1
        if depth > _MAX_DEPTH or self._count > _MAX_VALUES:
            short = path if len(path) <= 60 else path[:60] + "..."
            raise _Fail(line, f"{short}: too deeply nested or too large (a recursive alias?)")
        if isinstance(node, yaml.ScalarNode):
            value = self._constructor.construct_object(node)
            if value is not None and not isinstance(value, str | int | float | bool):
                value = node.value  # timestamps and the like: keep the text
            return _Node(value, line, path, key_line, node.value)
        if node.tag not in ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"):
            raise _Fail(line, f"{path or 'document'}: unsupported YAML tag {node.tag}")
        if isinstance(node, yaml.SequenceNode):
            items = [
                self._build(child, f"{path}[{i}]", child.start_mark.line + 1, depth + 1)
                for i, child in enumerate(node.value)
            ]
            return _Node(items, line, path, key_line)
        assert isinstance(node, yaml.MappingNode)
        return _Node(self._mapping(node, path, depth), line, path, key_line)

    def _mapping(self, node: yaml.MappingNode, path: str, depth: int) -> dict[str, _Node]:
        """Keys in order; ``<<`` merge keys as YAML 1.1 says (own keys win, then earlier)."""
        merged: dict[str, _Node] = {}
        own: dict[str, _Node] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                for source in self._merge_sources(value_node, path):
                    built = cast(dict[str, _Node], self._build(source, path, 0, depth + 1).value)
                    for key, child in built.items():
                        merged.setdefault(key, child)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Fail(key_line, f"{path or 'document'}: keys must be plain strings")
            key = str(key_node.value)
            if key in own:
                first = own[key].key_line
                raise _Fail(key_line, f"{_join(path, key)}: duplicate key (first at line {first})")
            own[key] = self._build(value_node, _join(path, key), key_line, depth + 1)
        return {**merged, **own}

    @staticmethod
    def _merge_sources(node: yaml.Node, path: str) -> list[yaml.MappingNode]:
        if isinstance(node, yaml.MappingNode):
            return [node]
        if isinstance(node, yaml.SequenceNode) and all(
            isinstance(n, yaml.MappingNode) for n in node.value
        ):
            return list(node.value)
        line = node.start_mark.line + 1
        raise _Fail(line, f"{path or 'document'}: '<<' needs a mapping or a list of mappings")
