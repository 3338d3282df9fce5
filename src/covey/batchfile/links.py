"""How entries hang together: ``needs``, ``inputs`` and ``for_each: {output_of}``.

Each entry's links are read and checked on their own here, keeping the node that names each
other job; :func:`covey.pipeline.check` then checks the graph as a whole, and the loader uses
those nodes to put the graph's problems at a line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from covey.batchfile.expand import _FOR_EACH_KEYS
from covey.batchfile.nodes import (
    _as_list,
    _as_map,
    _as_text,
    _check,
    _check_keys,
    _fail,
    _kind,
    _Node,
    _present,
)
from covey.pipeline import Condition, Need
from covey.spec import validate_name

_CONDITIONS = ", ".join(c.value for c in Condition)


@dataclass(frozen=True, slots=True)
class _Links:
    """How one entry hangs in the pipeline, and where each part of it was written, so that
    :func:`covey.pipeline.check`'s problems get a line: ``at["needs", NAME]`` (or ``"inputs"``)
    is the node naming NAME, ``source`` the ``for_each.output_of`` node."""

    needs: tuple[Need, ...]
    at: Mapping[tuple[str, str], _Node]
    items_from: str | None = None
    source: _Node | None = None

    @property
    def inputs(self) -> bool:
        return any(need.inputs for need in self.needs)


def _reference(node: _Node, key: str | None = None) -> str:
    """The name of another entry: the node's value, or ``key`` for a mapping's key. Names are
    checked like ``name:``, so ``jobs[N]`` (an unnamed entry) cannot be referenced."""
    name = _as_text(node, "a job name") if key is None else key
    return _check(validate_name, node, name)


def _condition(node: _Node) -> Condition:
    if not isinstance(node.value, str):
        raise _fail(node, f"expected a condition (one of {_CONDITIONS}), got {_kind(node.value)}")
    try:
        return Condition(node.value)
    except ValueError:
        raise _fail(node, f"'{node.value}' is not a condition (one of {_CONDITIONS})") from None


def _links(job: Mapping[str, _Node]) -> _Links:
    """An entry's ``needs``, ``inputs`` and ``for_each: {output_of}``, each checked on its own;
    the graph as a whole is checked once every entry is read."""
    conditions: dict[str, Condition] = {}
    at: dict[tuple[str, str], _Node] = {}
    needs = _present(job, "needs")
    if needs is not None and isinstance(needs.value, dict):
        for key, child in _as_map(needs).items():
            conditions[_reference(child, key)] = _condition(child)
            at["needs", key] = child
    elif needs is not None:
        for item in _as_list(needs, "a list of job names or a mapping of job name to condition"):
            name = _reference(item)
            if name in conditions:
                first = at["needs", name].line
                raise _fail(item, f"'{name}' is listed twice (first at line {first})")
            conditions[name] = Condition.SUCCEEDED
            at["needs", name] = item
    inputs = _present(job, "inputs")
    for item in [] if inputs is None else _as_list(inputs, "a list of job names"):
        name = _reference(item)
        if name not in conditions:
            why = "a job reads the output of what it waits for"
            raise _fail(item, f"'{name}' is not in needs ({why})")
        if ("inputs", name) in at:
            raise _fail(item, f"'{name}' is listed twice (first at line {at['inputs', name].line})")
        at["inputs", name] = item
    links = tuple(Need(k, c, ("inputs", k) in at) for k, c in conditions.items())
    source = _output_of(job)
    return _Links(links, at, None if source is None else _reference(source), source)


def _output_of(job: Mapping[str, _Node]) -> _Node | None:
    """The NAME node of ``for_each: {output_of: NAME}`` (None for the other forms)."""
    for_each = _present(job, "for_each")
    if for_each is None or not isinstance(for_each.value, dict):
        return None
    if "output_of" not in for_each.value:
        return None
    if len(_check_keys(for_each, _FOR_EACH_KEYS)) != 1:
        raise _fail(for_each, "give exactly one of range, lines or output_of")
    return _as_map(for_each)["output_of"]


def _instance_of(name: str) -> str | None:
    """The stage whose fan-out would name a job ``name`` (``count`` for ``count-3``)."""
    stage, sep, index = name.rpartition("-")
    if sep and index.isascii() and index.isdigit() and str(int(index)) == index:
        return stage
    return None
