"""Static ``for_each``: the items one entry fans out over, known when the file is read.

A list, ``{range: [START, END]}`` or ``{lines: FILE}``; each item becomes one job's
``COVEY_ITEM``. A range is checked against :data:`covey.batchfile.MAX_JOBS` before any job is
built, because a mistyped range is the easy way to ask for millions. (``{output_of: JOB}`` is
expanded at run time; :mod:`~covey.batchfile.links` reads it.)
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from covey import batchfile, flags
from covey.batchfile.nodes import _as_list, _as_text, _call, _check_keys, _fail, _kind, _Node

_FOR_EACH_KEYS = ("range", "lines", "output_of")


def _matrix(node: _Node, base_dir: Path) -> list[str]:
    """The items a static ``for_each`` fans out over, as the strings ``COVEY_ITEM`` will hold."""
    if isinstance(node.value, list):
        items = [_scalar_item(item) for item in cast(list[_Node], node.value)]
    elif isinstance(node.value, dict):
        mapping = _check_keys(node, _FOR_EACH_KEYS)
        if len(mapping) != 1:
            raise _fail(node, "give exactly one of range, lines or output_of")
        if "range" in mapping:
            items = _range(mapping["range"])
        else:
            items = _lines(mapping["lines"], base_dir)
    else:
        got = _kind(node.value)
        forms = "a list, {range: [START, END]}, {lines: FILE} or {output_of: JOB}"
        raise _fail(node, f"expected {forms}, got {got}")
    if not items:
        raise _fail(node, "the matrix is empty: nothing to run")
    return items


def _scalar_item(node: _Node) -> str:
    if node.value is None or isinstance(node.value, dict | list):
        raise _fail(node, f"expected a scalar item, got {_kind(node.value)}")
    return node.value if isinstance(node.value, str) else node.text


def _range(node: _Node) -> list[str]:
    bounds = _as_list(node, "[START, END] or [START, END, STEP]")
    if len(bounds) not in (2, 3):
        raise _fail(node, "expected [START, END] or [START, END, STEP] (END excluded)")
    numbers = [_call(b, flags.parse_int, "an integer") for b in bounds]
    if len(numbers) == 3 and numbers[2] == 0:
        raise _fail(bounds[2], "step must not be 0")
    span = range(*numbers)
    if len(span) > batchfile.MAX_JOBS:
        raise _fail(node, f"{len(span)} jobs is more than the limit of {batchfile.MAX_JOBS}")
    return [str(i) for i in span]


def _lines(node: _Node, base_dir: Path) -> list[str]:
    path = base_dir / _as_text(node, "a file name")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not valid UTF-8"
        raise _fail(node, f"cannot read {path}: {reason or exc}") from None
    return [line.removesuffix("\r") for line in text.split("\n") if line.strip()]
