"""The whole file: top-level keys, ``defaults:`` merged into each entry, one stage per entry.

The parts meet here (reader, fields, expand, links), and what spans entries is checked here:
job names are unique, counting the ``NAME-i`` a fan-out will make at run time; the batch stays
under :data:`covey.batchfile.MAX_JOBS`; the graph of ``needs`` is sound, its problems put back at
the line that caused them. It is also the one place a located failure becomes a
:class:`SpecError` reading ``FILE:LINE: ...``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import cast

from covey import batchfile
from covey.batchfile.expand import _matrix
from covey.batchfile.fields import _Job
from covey.batchfile.links import _instance_of, _Links, _links
from covey.batchfile.nodes import (
    _as_list,
    _as_map,
    _as_text,
    _check,
    _check_keys,
    _Fail,
    _fail,
    _kind,
    _Node,
    _present,
)
from covey.batchfile.reader import _Reader
from covey.errors import SpecError
from covey.pipeline import INPUTS_DIR, Pipeline, Problem, Stage, check, instance
from covey.spec import JobSpec, validate_name

_JOB_HINTS = {
    "restart": "use 'retry'",
    "container_name": "use 'name'",
    "ports": "jobs publish no ports",
    "expose": "jobs publish no ports",
    "depends_on": "use 'needs'",
    "build": "build and push the image first",
    "healthcheck": "jobs run to completion",
    "mem_limit": "use deploy.resources.limits.memory",
    "mem_reservation": "use deploy.resources.reservations.memory",
    "cpus": "use deploy.resources.limits.cpus",
}
_JOB_KEYS = tuple(
    [
        "image",
        "command",
        "entrypoint",
        "environment",
        "env_file",
        "labels",
        "user",
        "working_dir",
        "networks",
        "secrets",
        "volumes",
        "deploy",
        "stop_grace_period",
        "name",
        "timeout",
        "pending_timeout",
        "retry",
        "registry_auth",
        "resolve_image",
        "priority",
        "for_each",
        "needs",
        "inputs",
    ]
)
_PER_JOB = ("name", "for_each", "needs", "inputs")


def _merge(base: _Node, over: _Node) -> _Node:
    """``over`` on top of ``base``: mappings merge deeply, anything else replaces."""
    if not (isinstance(base.value, dict) and isinstance(over.value, dict)):
        return over
    out = dict(cast(dict[str, _Node], base.value))
    for key, child in cast(dict[str, _Node], over.value).items():
        out[key] = _merge(out[key], child) if key in out else child
    return replace(over, value=out)


def _kv_to_map(node: _Node, empty: str | None) -> _Node:
    """List-form ``environment``/``labels`` (``K=V``) as a mapping, so defaults merge by key."""
    if not isinstance(node.value, list):
        return node
    out: dict[str, _Node] = {}
    for item in cast(list[_Node], node.value):
        key, sep, value = _as_text(item, "a KEY=VALUE string").partition("=")
        out[key] = replace(item, value=value if sep else empty, text=value if sep else "")
    return replace(node, value=out)


def _normalize(entry: _Node) -> _Node:
    mapping = dict(_as_map(entry))
    for key, empty in (("environment", None), ("labels", "")):
        if key in mapping:
            mapping[key] = _kv_to_map(mapping[key], empty)
    return replace(entry, value=mapping)


class _Batch:
    def __init__(self, path: Path, environ: Mapping[str, str]) -> None:
        self.base_dir = path.parent
        self.job = _Job(path.parent, environ)
        self.names: dict[str, _Node] = {}  # job and stage names, each at its entry's name node
        self.fan_outs: dict[str, _Node] = {}  # stages over output_of, whose jobs are NAME-i
        self.stages: list[Stage] = []
        self.links: list[_Links] = []
        self.entries: list[_Node] = []
        self.jobs = 0  # known up front (a fan-out over output_of counts when it happens)

    def load(self, text: str) -> Pipeline:
        root = _Reader().read(text)
        if root is None:
            raise _Fail(1, "the file is empty (expected 'jobs:' with a list of jobs)")
        if not isinstance(root.value, dict):
            got = _kind(root.value)
            raise _Fail(root.line, f"expected a mapping with 'jobs:' at the top level, got {got}")
        top = _check_keys(root, ("jobs", "defaults"), extensions=True)
        defaults = _present(top, "defaults")
        if defaults is not None:
            _check_keys(defaults, _JOB_KEYS, _JOB_HINTS, extensions=True)
            for key in _PER_JOB:
                if key in _as_map(defaults):
                    raise _fail(_as_map(defaults)[key], "not allowed in defaults", at_key=True)
            defaults = _normalize(defaults)
        jobs = top.get("jobs")
        if jobs is None:
            raise _Fail(root.line, "missing required key 'jobs'")
        if isinstance(jobs.value, dict):
            raise _fail(jobs, "expected a list of jobs ('- image: ...' entries), got a mapping")
        entries = _as_list(jobs, "a list of jobs")
        if not entries:
            raise _fail(jobs, "must not be empty")
        for entry in entries:
            _check_keys(entry, _JOB_KEYS, _JOB_HINTS, extensions=True)
            merged = _normalize(entry)
            if defaults is not None:
                merged = _merge(defaults, merged)
            self._add(entry, _as_map(merged))
        problems = check(self.stages)
        if problems:
            raise self._locate(problems[0])
        return Pipeline(self.stages)

    def _add(self, entry: _Node, job: dict[str, _Node]) -> None:
        """One entry as one stage: a job, its ``for_each`` instances, or a fan-out template."""
        if _present(job, "image") is None:
            raise _fail(entry, "missing required key 'image' (set it here or in defaults)")
        links = _links(job)
        spec = JobSpec(**self.job.fields(job))
        if links.inputs:
            spec = spec.with_changes(env=(*spec.env, ("COVEY_INPUTS", INPUTS_DIR)))
        name_node = _present(job, "name")
        name = None
        if name_node is not None:
            name = _check(validate_name, name_node, _as_text(name_node))
            self._claim(name, name_node)
        for_each = _present(job, "for_each")
        if for_each is not None and links.source is not None:
            specs: tuple[JobSpec, ...] = (self._template(spec, name, name_node, for_each),)
        elif for_each is not None:
            specs = self._instances(spec, name, name_node, for_each, entry)
        else:
            specs = (self._job(spec.with_changes(name=name), name_node, entry),)
        stage = name or f"jobs[{len(self.stages)}]"
        self.stages.append(Stage(stage, specs, links.needs, links.items_from))
        self.links.append(links)
        self.entries.append(entry)

    def _instances(
        self,
        spec: JobSpec,
        name: str | None,
        name_node: _Node | None,
        for_each: _Node,
        entry: _Node,
    ) -> tuple[JobSpec, ...]:
        items = _matrix(for_each, self.base_dir)
        if self.jobs + len(items) > batchfile.MAX_JOBS:
            raise _fail(for_each, f"the batch would have more than {batchfile.MAX_JOBS} jobs")
        if name_node is not None and name is not None:
            longest = f"{name}-{len(items) - 1}"
            _check(validate_name, name_node, longest, what=f"{name_node.path} (with index)")
        return tuple(
            self._job(instance(spec, name, index, item), name_node, entry)
            for index, item in enumerate(items)
        )

    def _template(
        self, spec: JobSpec, name: str | None, name_node: _Node | None, for_each: _Node
    ) -> JobSpec:
        """The one spec of a fan-out over another job's output; its jobs are made at run time."""
        if name is None or name_node is None:
            why = "its jobs are named NAME-0, NAME-1, ..."
            raise _fail(for_each, f"output_of needs the job to have a name ({why})")
        longest = f"{name}-{batchfile.MAX_JOBS - 1}"
        _check(validate_name, name_node, longest, what=f"{name_node.path} (with index)")
        for other, node in self.names.items():
            if _instance_of(other) == name:
                where = f"at line {node.line}, {node.path}"
                raise _fail(
                    name_node,
                    f"its jobs are named {name}-0, {name}-1, ..., but '{other}' is taken ({where})",
                )
        self.fan_outs[name] = name_node
        return spec.with_changes(name=name)

    def _job(self, spec: JobSpec, name_node: _Node | None, entry: _Node) -> JobSpec:
        if spec.name is not None and name_node is not None:
            self._claim(spec.name, name_node)
        if self.jobs >= batchfile.MAX_JOBS:
            raise _fail(entry, f"the batch would have more than {batchfile.MAX_JOBS} jobs")
        self.jobs += 1
        return spec

    def _claim(self, name: str, node: _Node) -> None:
        """Take a job or stage name, unless another entry has it or will make it at run time."""
        first = self.names.setdefault(name, node)
        if first is not node:
            where = f"also at line {first.line}, {first.path}"
            raise _fail(node, f"duplicate job name '{name}' ({where})")
        stage = _instance_of(name)
        fan_out = None if stage is None else self.fan_outs.get(stage)
        if fan_out is not None:
            where = f"the fan-out at line {fan_out.line}, {fan_out.path}, names its jobs"
            raise _fail(node, f"duplicate job name '{name}' ({where} {stage}-0, {stage}-1, ...)")

    def _locate(self, problem: Problem) -> _Fail:
        """A problem :func:`covey.pipeline.check` found, at the need or output_of it is about."""
        links = self.links[problem.stage]
        if problem.key == "for_each" and links.source is not None:
            return _fail(links.source, problem.message.removeprefix("output_of: "))
        need = problem.need or ""
        node = links.at.get((problem.key, need)) or links.at.get(("needs", need))
        if node is None:  # check() names the need for these keys; this is a fallback only
            entry = self.entries[problem.stage]
            return _fail(entry, f"{problem.key}: {problem.message}")
        return _fail(node, problem.message, at_key=True)


def load_batch(path: Path | str, *, environ: Mapping[str, str] | None = None) -> Pipeline:
    """The pipeline the batch file at ``path`` describes: one stage per entry of ``jobs:``
    (named by its ``name``, or ``jobs[N]``), static ``for_each`` expanded, in file order.

    ``pipeline.static_specs()`` are the jobs known up front; a stage over another job's output
    holds its one template instead. ``environ`` (default: the process environment) supplies
    values for bare ``KEY`` entries. Any problem, in one entry or in the graph of ``needs``,
    raises one :class:`SpecError` reading ``FILE:LINE: field.path: problem``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such batch file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not valid UTF-8") from None
    try:
        return _Batch(path, os.environ if environ is None else environ).load(text)
    except _Fail as exc:
        raise SpecError(f"{path}:{exc.line}: {exc.message}") from None
