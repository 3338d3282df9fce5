"""Pipelines: stages of jobs that wait for each other, as plain values and pure rules.

A batch is a list of *stages*. A stage is one entry of a batch file (or one ``add`` of a
:class:`Pipeline`): one job, the instances of a ``for_each``, or a fan-out whose items are
known only when another stage's job has printed them (``for_each: {output_of: NAME}``). A
stage may *need* others, each with a condition (Slurm's afterok / afterany / afternotok /
aftercorr), and may take their captured stdout as *inputs*.

Everything here is pure: the graph checks (unknown names, cycles, sizes that cannot pair) and
the verdict on one need given the states of the stage it names. The store applies the
verdicts inside the transaction that records a job's result (``covey.store.gate``), so a
dependent is released, skipped or fanned out exactly once, also across kill -9.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from covey.errors import SpecError
from covey.spec import JobSpec, validate_name
from covey.states import JobState

INPUTS_DIR = "/covey/inputs"
"""Where a job finds the stdout of the jobs named in its ``inputs`` (``COVEY_INPUTS``)."""

RESERVED_ENV = ("COVEY_INDEX", "COVEY_ITEM", "COVEY_INPUTS")


class Condition(StrEnum):
    """When a need is met (the names of Slurm's ``--dependency`` types in the comments)."""

    SUCCEEDED = "succeeded"  # afterok: every instance succeeded
    COMPLETED = "completed"  # afterany: every instance ended, in any state
    FAILED = "failed"  # afternotok: every instance ended, and some failed, timed out or was lost
    EACH = "each"  # aftercorr: instance i waits for instance i (which must succeed)


FAILURES = frozenset({JobState.FAILED, JobState.TIMED_OUT, JobState.LOST, JobState.REJECTED})
"""What ``failed`` counts as a failure. Not ``cancelled`` (asked for) nor ``skipped``."""


@dataclass(frozen=True, slots=True)
class Need:
    """One stage waiting for another."""

    stage: str
    condition: Condition = Condition.SUCCEEDED
    inputs: bool = False  # the dependent reads this stage's stdout under /covey/inputs/<stage>/


@dataclass(frozen=True, slots=True)
class Stage:
    """One entry of a pipeline.

    ``specs`` are its instances when they are known up front; a stage whose items come from
    another stage's output (``items_from``) holds its one *template* there instead, and its
    instances are made from it when that stage's job has ended.
    """

    name: str
    specs: tuple[JobSpec, ...]
    needs: tuple[Need, ...] = ()
    items_from: str | None = None

    @property
    def dynamic(self) -> bool:
        return self.items_from is not None

    @property
    def size(self) -> int | None:
        """How many instances (``None``: decided at run time)."""
        return None if self.dynamic else len(self.specs)

    def need(self, stage: str) -> Need | None:
        return next((n for n in self.needs if n.stage == stage), None)


@dataclass
class Pipeline:
    """A batch of stages, built in order; the Python API's batch builder.

    >>> p = Pipeline()
    >>> _ = p.add("split", JobSpec("busybox", ("sh", "-c", "seq 3")))
    >>> _ = p.add("count", JobSpec("busybox", ("sh", "-c", "echo $COVEY_ITEM")),
    ...           for_each="split", needs=["split"])
    >>> _ = p.add("total", JobSpec("busybox", ("sh", "-c", "cat /covey/inputs/count/*")),
    ...           needs=["count"], inputs=["count"])
    """

    stages: list[Stage] = field(default_factory=list)

    @classmethod
    def flat(cls, specs: Sequence[JobSpec]) -> Pipeline:
        """Independent jobs: one stage per job, no needs (what ``covey run`` queues)."""
        return cls([Stage(spec.name or f"job-{i}", (spec,)) for i, spec in enumerate(specs)])

    def map_specs(self, change: Callable[[JobSpec], JobSpec]) -> Pipeline:
        """The same pipeline with every spec (and fan-out template) changed: flags such as
        ``--with-registry-auth`` that apply to every job of a batch file."""
        return Pipeline([replace(s, specs=tuple(change(x) for x in s.specs)) for s in self.stages])

    def add(
        self,
        name: str,
        spec: JobSpec | Sequence[JobSpec],
        *,
        needs: Iterable[str] | Mapping[str, str | Condition] = (),
        inputs: Iterable[str] = (),
        for_each: str | None = None,
    ) -> Stage:
        """Add a stage: one job, several (a list of specs), or with ``for_each=NAME`` one
        instance per non-blank line NAME prints. ``needs``: names (all succeeded) or a
        mapping name → condition. Checked as a whole by :func:`check`."""
        validate_name(name, what=f"stages[{len(self.stages)}].name")
        if isinstance(needs, Mapping):
            pairs = [(str(k), _condition(v, f"{name}.needs.{k}")) for k, v in needs.items()]
        else:
            pairs = [(str(k), Condition.SUCCEEDED) for k in needs]
        wanted = set(inputs)
        unknown = sorted(wanted - {k for k, _ in pairs})
        if unknown:
            raise SpecError(
                f"stages[{len(self.stages)}].inputs: {unknown[0]!r} is not in needs"
                " (a job reads the output of what it waits for)"
            )
        specs = (spec,) if isinstance(spec, JobSpec) else tuple(spec)
        if for_each is not None and len(specs) != 1:
            raise SpecError(f"stages[{len(self.stages)}]: for_each takes one template spec")
        if not specs:
            raise SpecError(f"stages[{len(self.stages)}]: no jobs")
        if wanted:  # where a job finds its inputs, as a batch file's jobs are told
            specs = tuple(s.with_changes(env=(*s.env, ("COVEY_INPUTS", INPUTS_DIR))) for s in specs)
        stage = Stage(
            name,
            tuple(
                s.with_changes(name=s.name or (name if len(specs) == 1 else f"{name}-{i}"))
                for i, s in enumerate(specs)
            ),
            tuple(Need(k, c, k in wanted) for k, c in pairs),
            for_each,
        )
        self.stages.append(stage)
        return stage

    @property
    def has_needs(self) -> bool:
        return any(s.needs for s in self.stages)

    def static_specs(self) -> list[JobSpec]:
        """Every job known before anything runs, stage by stage (what is created at once)."""
        return [spec for s in self.stages if not s.dynamic for spec in s.specs]


def _condition(value: str | Condition, where: str) -> Condition:
    try:
        return Condition(value)
    except ValueError:
        names = ", ".join(c.value for c in Condition)
        raise SpecError(f"{where}: {value!r} is not a condition (one of {names})") from None


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with a pipeline, and where: ``key`` is ``needs``, ``inputs`` or
    ``for_each`` of stage number ``stage`` (the batch file turns it into FILE:LINE)."""

    stage: int
    key: str
    message: str
    need: str | None = None


def check(stages: Sequence[Stage]) -> list[Problem]:
    """Everything wrong with the graph, in stage order: unknown names, a stage needing
    itself, a cycle, ``each`` between stages whose sizes cannot pair, a ``for_each`` source
    that is not a succeeded need of one instance."""
    problems: list[Problem] = []
    by_name: dict[str, int] = {}
    for i, stage in enumerate(stages):
        by_name.setdefault(stage.name, i)
    for i, stage in enumerate(stages):
        for need in stage.needs:
            if need.stage == stage.name:
                problems.append(Problem(i, "needs", "a job cannot need itself", need.stage))
            elif need.stage not in by_name:
                problems.append(
                    Problem(i, "needs", f"no job named {need.stage!r} in this batch", need.stage)
                )
            elif need.condition is Condition.EACH:
                other = stages[by_name[need.stage]]
                problem = _pairing(stage, other)
                if problem:
                    problems.append(Problem(i, "needs", problem, need.stage))
        if stage.items_from is not None:
            problems += _source_problems(i, stage, stages, by_name)
    if not problems:
        problems += _cycles(stages, by_name)
    return problems


def _pairing(stage: Stage, other: Stage) -> str | None:
    """Why ``each`` cannot pair instance i of ``stage`` with instance i of ``other``."""
    if stage.dynamic or other.dynamic:
        if stage.items_from is not None and stage.items_from == other.items_from:
            return None
        if stage.items_from == other.name or other.items_from == stage.name:
            return (
                None
                if stage.items_from == other.name and other.size == 1
                else (
                    f"'each' pairs instances one to one: {other.name!r} has"
                    f" {other.size if other.size is not None else 'a run-time number of'} instances"
                )
            )
        return (
            f"'each' pairs instances one to one, and the number of instances of"
            f" {(stage if stage.dynamic else other).name!r} is known only at run time"
        )
    if stage.size != other.size:
        return (
            f"'each' pairs instances one to one, but {stage.name!r} has {stage.size} and"
            f" {other.name!r} has {other.size}"
        )
    return None


def _source_problems(
    i: int, stage: Stage, stages: Sequence[Stage], by_name: Mapping[str, int]
) -> list[Problem]:
    source = stage.items_from
    assert source is not None
    if source not in by_name:
        return [Problem(i, "for_each", f"output_of: no job named {source!r} in this batch")]
    need = stage.need(source)
    if need is None or need.condition is not Condition.SUCCEEDED:
        return [
            Problem(
                i,
                "for_each",
                f"output_of: {source!r} must be in needs (as succeeded): its output is read"
                " when it has succeeded",
            )
        ]
    other = stages[by_name[source]]
    if other.size != 1:
        return [
            Problem(
                i,
                "for_each",
                f"output_of: {source!r} must be one job, not "
                + (f"{other.size} instances" if other.size else "a fan-out"),
            )
        ]
    return []


def _cycles(stages: Sequence[Stage], by_name: Mapping[str, int]) -> list[Problem]:
    """The first cycle found (depth first, in stage order), named in full. Iterative: a
    chain of thousands of stages is no recursion error."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for root in stages:
        if root.name in state:
            continue
        path: list[str] = [root.name]
        state[root.name] = 1
        todo = [iter(root.needs)]
        while todo:
            need = next(todo[-1], None)
            if need is None:
                state[path.pop()] = 2
                todo.pop()
                continue
            mark = state.get(need.stage)
            if mark == 1:
                cycle = [*path[path.index(need.stage) :], need.stage]
                first = by_name[cycle[0]]
                return [Problem(first, "needs", "a cycle: " + " -> ".join(cycle), cycle[1])]
            if mark is None:
                state[need.stage] = 1
                path.append(need.stage)
                todo.append(iter(stages[by_name[need.stage]].needs))
    return []


def validate(pipeline: Pipeline) -> None:
    """Raise one :class:`SpecError` for the first problem (the Python API's check)."""
    seen: dict[str, int] = {}
    for i, stage in enumerate(pipeline.stages):
        if stage.name in seen:
            first = seen[stage.name]
            raise SpecError(
                f"stages[{i}].name: duplicate stage name {stage.name!r} (also stages[{first}])"
            )
        seen[stage.name] = i
    problems = check(pipeline.stages)
    if problems:
        p = problems[0]
        raise SpecError(f"stages[{p.stage}].{p.key}: {p.message}")


def instance(template: JobSpec, stage: str | None, index: int, item: str) -> JobSpec:
    """Instance ``index`` of a fan-out: its name, ``COVEY_INDEX`` and ``COVEY_ITEM``."""
    env = (*template.env, ("COVEY_INDEX", str(index)), ("COVEY_ITEM", item))
    name = None if stage is None else f"{stage}-{index}"
    return template.with_changes(name=name, env=env, index=index, item=item)


def items_of(stdout: bytes) -> list[str]:
    """The items a ``for_each: {output_of}`` fans out over: each non-blank line, as text
    (undecodable bytes replaced; a trailing CR dropped, as ``for_each: {lines}`` does)."""
    text = stdout.decode("utf-8", errors="replace")
    return [line.removesuffix("\r") for line in text.split("\n") if line.strip()]


# -- verdicts ------------------------------------------------------------------------------------


class Verdict(StrEnum):
    WAIT = "wait"
    MET = "met"
    NEVER = "never"  # can no longer be met: the dependent is skipped


@dataclass(frozen=True, slots=True)
class StageView:
    """The stage a need names (or, for ``each``, its paired instance) as the store sees it:
    whether some instance is not done (ended with its result recorded) or not even made yet,
    which done instance did not succeed (``"count-7 failed"``), and whether one failed."""

    open: bool
    not_ok: str | None = None
    any_failed: bool = False
    skipped_stage: bool = False  # a fan-out that will never have instances (its source failed)
    reason: str | None = None  # why it was skipped
    missing: bool = False  # ``each``: the paired instance does not exist


def verdict(condition: Condition, view: StageView, name: str) -> tuple[Verdict, str | None]:
    """Whether a need on the stage ``name`` is met now, and if never, why (the skip reason).

    ``succeeded`` and ``each`` fail fast: one instance that did not succeed skips the
    dependent at once, without waiting for the others. ``completed`` and ``failed`` wait until
    every instance is done. A fan-out skipped whole counts as ended for ``completed``."""
    if view.skipped_stage:
        if condition is Condition.COMPLETED:
            return Verdict.MET, None
        return Verdict.NEVER, f"{name} was skipped ({view.reason})" if view.reason else None
    if view.missing:
        return Verdict.NEVER, f"{name} has no instance to pair with"
    if condition in (Condition.SUCCEEDED, Condition.EACH):
        if view.not_ok:
            return Verdict.NEVER, view.not_ok
        return (Verdict.WAIT, None) if view.open else (Verdict.MET, None)
    if view.open:
        return Verdict.WAIT, None
    if condition is Condition.COMPLETED or view.any_failed:
        return Verdict.MET, None
    return Verdict.NEVER, f"no instance of {name} failed"


def combine(verdicts: Iterable[tuple[Verdict, str | None]]) -> tuple[Verdict, str | None]:
    """All needs of a job: never if one is never (its reason), met if all are met."""
    waiting = False
    for v, why in verdicts:
        if v is Verdict.NEVER:
            return v, why
        waiting |= v is Verdict.WAIT
    return (Verdict.WAIT, None) if waiting else (Verdict.MET, None)


def index_json(entries: Sequence[Mapping[str, object]]) -> bytes:
    """``/covey/inputs/<name>/index.json``: one object per instance, in index order."""
    return (json.dumps(list(entries), indent=1) + "\n").encode()
