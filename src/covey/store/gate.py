"""The pipeline gate: what a job's recorded result means for the jobs that wait for it.

Called inside the transaction that makes a pipeline job *done* (ended, and its logs
recorded): the same commit releases its dependents (``waiting`` → ``queued``), skips the ones
whose needs can no longer be met (and, in turn, theirs), and fans out a stage over the
lines its source printed. So a crash either keeps all of it or none of it, and a dependent
is released exactly once: nothing here is redone by a process that restarts.

The queries lean on ``jobs_stage (batch_id, stage, done, state)``: each question about a
stage ("is any instance not done?", "did any done one not succeed?") is one index seek,
not a count over the stage, so a 10,000-instance map costs the same per job as a small one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from covey.lifecycle import sql_in
from covey.pipeline import (
    FAILURES,
    Condition,
    StageView,
    Verdict,
    combine,
    instance,
    items_of,
    verdict,
)
from covey.spec import JobSpec
from covey.states import TERMINAL, JobState
from covey.store.rows import new_id
from covey.store.writer import Tx

_TERMINAL = sql_in(TERMINAL)
_NOT_OK = sql_in(TERMINAL - {JobState.SUCCEEDED})
_FAILURES = sql_in(FAILURES)


@dataclass
class GateResult:
    """What one gate pass changed: jobs now queued, skipped, or new (a fan-out's)."""

    queued: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    stages_resolved: list[str] = field(default_factory=list)
    # ``(attempt id, batch id)``: done jobs whose stdout other jobs will read (to share ahead)
    outputs: list[tuple[str, str]] = field(default_factory=list)
    # batches now over that have shared outputs to remove
    finished: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.queued
            or self.skipped
            or self.added
            or self.stages_resolved
            or self.outputs
            or self.finished
        )

    def merge(self, other: GateResult) -> None:
        self.queued += other.queued
        self.skipped += other.skipped
        self.added += other.added
        self.stages_resolved += other.stages_resolved
        self.outputs += other.outputs
        self.finished += other.finished


async def mark_done(tx: Tx, job_id: str, attempt_n: int | None, now: float) -> GateResult:
    """Note that ``job_id`` (a pipeline job in a terminal state, its attempt ``attempt_n``'s
    logs recorded, or no attempt at all) is done, and run the gate; nothing for a job of a
    flat batch, a job not ended, or one already done."""
    guard = "" if attempt_n is None else " AND attempts=?"
    args: list[Any] = [job_id] + ([] if attempt_n is None else [attempt_n])
    row = await tx.one(
        f"UPDATE jobs SET done=1 WHERE id=? AND stage IS NOT NULL AND done=0"
        f" AND state IN {_TERMINAL}{guard} RETURNING batch_id, stage, idx",
        args,
    )
    if row is None:
        return GateResult()
    batch_id, stage = row[0], row[1]
    result = await after_done(tx, batch_id, [(stage, row[2])], now)
    if attempt_n is not None and await tx.one(
        "SELECT 1 FROM needs WHERE batch_id=? AND need=? AND inputs=1 LIMIT 1", (batch_id, stage)
    ):
        result.outputs.append((f"{job_id}-{attempt_n}", batch_id))
    # the last job done: what was shared of the batch's outputs can go (the notes of shares
    # made a moment ago may not be committed yet, so not asked of the ``outputs`` table)
    if await tx.one(
        "SELECT 1 FROM needs WHERE batch_id=? AND inputs=1 LIMIT 1", (batch_id,)
    ) and await finished(tx, batch_id):
        result.finished.append(batch_id)
    return result


async def output_read(tx: Tx, batch_id: str, stage: str) -> bool:
    """Whether a job of the batch reads what ``stage`` printed (as inputs, or the items of
    a fan-out): then a job of ``stage`` is done only once its logs are saved."""
    row = await tx.one(
        "SELECT 1 FROM needs WHERE batch_id=? AND need=? AND inputs=1"
        " UNION ALL SELECT 1 FROM stages WHERE batch_id=? AND items_from=? LIMIT 1",
        (batch_id, stage, batch_id, stage),
    )
    return row is not None


async def finished(tx: Tx, batch_id: str) -> bool:
    """Every job of the pipeline batch is done, and no fan-out is still to be made."""
    left = await tx.one(
        "SELECT 1 FROM jobs WHERE batch_id=? AND stage IS NOT NULL AND done=0 LIMIT 1",
        (batch_id,),
    )
    unmade = await tx.one(
        "SELECT 1 FROM stages WHERE batch_id=? AND size IS NULL LIMIT 1", (batch_id,)
    )
    return left is None and unmade is None


async def after_done(
    tx: Tx, batch_id: str, done: Sequence[tuple[str, int | None]], now: float
) -> GateResult:
    """Apply the gate for stages whose instances became done (``(stage, idx)``; ``idx``
    ``None``: the whole stage, e.g. a fan-out resolved to nothing), until nothing changes."""
    judge = _Judge(tx, batch_id, now)
    work = list(done)
    while work:
        stage, idx = work.pop()
        for dep, condition in await tx.all(
            "SELECT stage, condition FROM needs WHERE batch_id=? AND need=?", (batch_id, stage)
        ):
            cond = Condition(condition)
            if await _fan_out(tx, batch_id, dep, stage, now, judge.result):
                work.append((dep, None))  # resolved to no instances, or skipped whole
            pick = idx if cond is Condition.EACH else None
            work += await judge.decide(dep, await _waiting(tx, batch_id, dep, pick))
    return judge.result


async def judge_reopened(tx: Tx, batch_id: str, job_ids: Sequence[str], now: float) -> GateResult:
    """Judge jobs put back to ``waiting`` (``covey retry``): release, skip, or leave waiting."""
    judge = _Judge(tx, batch_id, now)
    skipped: list[tuple[str, int | None]] = []
    by_stage: dict[str, list[tuple[str, int | None]]] = {}
    for job_id in job_ids:
        row = await tx.one("SELECT stage, idx FROM jobs WHERE id=? AND state='waiting'", (job_id,))
        if row is not None:
            by_stage.setdefault(row[0], []).append((job_id, row[1]))
    for stage, jobs in by_stage.items():
        skipped += await judge.decide(stage, jobs)
    if skipped:
        judge.result.merge(await after_done(tx, batch_id, skipped, now))
    return judge.result


class _Judge:
    """One gate pass: decides waiting jobs of a stage, reading each need's view once (the
    same for every candidate of a stage, except ``each`` needs, read per instance)."""

    def __init__(self, tx: Tx, batch_id: str, now: float) -> None:
        self.tx = tx
        self.batch_id = batch_id
        self.now = now
        self.result = GateResult()
        self._needs: dict[str, list[tuple[str, Condition]]] = {}
        self._views: dict[tuple[str, int | None], StageView] = {}

    async def decide(
        self, stage: str, candidates: Sequence[tuple[str, int | None]]
    ) -> list[tuple[str, int | None]]:
        """Release or skip each candidate (a waiting job of ``stage``) whose needs say so;
        returns the ``(stage, idx)`` of those skipped (they are done: the gate goes on)."""
        queued: list[str] = []
        skipped: list[tuple[str, int | None]] = []
        for job_id, idx in candidates:
            judged, why = await self._judge(stage, idx)
            if judged is Verdict.MET:
                queued.append(job_id)
            elif judged is Verdict.NEVER:
                await _move(self.tx, job_id, JobState.SKIPPED, self.now, why)
                self.result.skipped.append(job_id)
                skipped.append((stage, idx))
        if skipped:  # this stage's views changed (for a stage that needs it)
            self._views = {k: v for k, v in self._views.items() if k[0] != stage}
        if queued:
            await self.tx.many(
                "UPDATE jobs SET state='queued', updated=? WHERE id=?",
                [(self.now, j) for j in queued],
            )
            await self.tx.many(
                "INSERT INTO transitions(job_id, state, at, source, detail)"
                " VALUES (?, 'queued', ?, 'covey', 'needs met')",
                [(j, self.now) for j in queued],
            )
            self.result.queued += queued
        return skipped

    async def _judge(self, stage: str, idx: int | None) -> tuple[Verdict, str | None]:
        """All needs of instance ``idx`` of ``stage``."""
        needs = self._needs.get(stage)
        if needs is None:
            rows = await self.tx.all(
                "SELECT need, condition FROM needs WHERE batch_id=? AND stage=?",
                (self.batch_id, stage),
            )
            needs = self._needs[stage] = [(r[0], Condition(r[1])) for r in rows]
        verdicts = []
        for need, cond in needs:
            key = (need, idx if cond is Condition.EACH else None)
            view = self._views.get(key)
            if view is None:
                view = self._views[key] = await _view(self.tx, self.batch_id, *key)
            verdicts.append(verdict(cond, view, need))
            if verdicts[-1][0] is Verdict.NEVER:
                break
        return combine(verdicts)


async def _waiting(
    tx: Tx, batch_id: str, stage: str, idx: int | None
) -> list[tuple[str, int | None]]:
    if idx is None:
        rows = await tx.all(
            "SELECT id, idx FROM jobs WHERE batch_id=? AND stage=? AND done=0 AND state='waiting'",
            (batch_id, stage),
        )
    else:
        rows = await tx.all(
            "SELECT id, idx FROM jobs WHERE batch_id=? AND stage=? AND idx=? AND state='waiting'",
            (batch_id, stage, idx),
        )
    return [(r[0], r[1]) for r in rows]


async def _move(tx: Tx, job_id: str, state: JobState, now: float, why: str | None) -> None:
    if state is JobState.SKIPPED:
        await tx.run(
            "UPDATE jobs SET state='skipped', done=1, error=?, finished=?, updated=? WHERE id=?",
            (why, now, now, job_id),
        )
    else:
        await tx.run("UPDATE jobs SET state=?, updated=? WHERE id=?", (state.value, now, job_id))
    await tx.run(
        "INSERT INTO transitions(job_id, state, at, source, detail) VALUES (?,?,?,'covey',?)",
        (job_id, state.value, now, why),
    )


async def _view(tx: Tx, batch_id: str, stage: str, idx: int | None) -> StageView:
    """The stage ``stage`` (or its instance ``idx``) as :func:`covey.pipeline.verdict` reads it."""
    info = await tx.one(
        "SELECT size, skipped, items_from FROM stages WHERE batch_id=? AND name=?",
        (batch_id, stage),
    )
    if info is not None and info[1] is not None:
        return StageView(open=False, skipped_stage=True, reason=info[1])
    resolved = info is None or info[0] is not None
    where = "batch_id=? AND stage=?"
    args: list[Any] = [batch_id, stage]
    if idx is not None:
        where += " AND idx=?"
        args.append(idx)
        if resolved and not await tx.one(f"SELECT 1 FROM jobs WHERE {where}", args):
            # the paired instance does not exist (its fan-out had fewer items): never
            return StageView(open=False, missing=True)
    is_open = await tx.one(f"SELECT 1 FROM jobs WHERE {where} AND done=0 LIMIT 1", args)
    bad = await tx.one(
        f"SELECT name, state FROM jobs WHERE {where} AND done=1 AND state IN {_NOT_OK} LIMIT 1",
        args,
    )
    failed = await tx.one(
        f"SELECT 1 FROM jobs WHERE {where} AND done=1 AND state IN {_FAILURES} LIMIT 1", args
    )
    return StageView(
        open=bool(is_open) or not resolved,
        not_ok=f"{bad[0]} {bad[1]}" if bad else None,
        any_failed=bool(failed),
    )


async def _fan_out(
    tx: Tx, batch_id: str, stage: str, source: str, now: float, result: GateResult
) -> bool:
    """Make the instances of ``stage`` if it fans out over ``source``'s output and they are
    not made yet; ``True`` when that left the stage with none (empty, or skipped whole)."""
    row = await tx.one(
        "SELECT template, size, seq FROM stages WHERE batch_id=? AND name=? AND items_from=?"
        " AND size IS NULL AND skipped IS NULL",
        (batch_id, stage, source),
    )
    if row is None:
        return False
    src = await tx.one(
        "SELECT j.name, j.state, l.data, l.truncated, l.complete FROM jobs j"
        " LEFT JOIN logs l ON l.attempt_id = j.id || '-' || j.attempts AND l.stream='stdout'"
        " WHERE j.batch_id=? AND j.stage=? AND j.done=1",
        (batch_id, source),
    )
    if src is None:
        return False  # not done yet (checked by the caller's need; kept safe here too)
    why: str | None = None
    cancelled = await tx.one("SELECT cancelled FROM batches WHERE id=?", (batch_id,))
    if cancelled and cancelled[0]:
        why = "the batch was cancelled"
    elif JobState(src[1]) is not JobState.SUCCEEDED:
        why = f"{src[0]} {src[1]}"
    elif src[2] is None or not src[4]:
        why = f"the output of {src[0]} is not all recorded: its items are unknown"
    elif src[3]:
        why = f"the output of {src[0]} was cut at the log cap (--log-cap): its items are unknown"
    if why is not None:
        await tx.run(
            "UPDATE stages SET size=0, skipped=? WHERE batch_id=? AND name=?",
            (why, batch_id, stage),
        )
        result.stages_resolved.append(stage)
        return True
    template = JobSpec.from_json(row[0])
    items = items_of(bytes(src[2]))
    await _add_instances(tx, batch_id, stage, template, items, now, result)
    await tx.run(
        "UPDATE stages SET size=? WHERE batch_id=? AND name=?", (len(items), batch_id, stage)
    )
    await tx.run("UPDATE batches SET total=total+? WHERE id=?", (len(items), batch_id))
    result.stages_resolved.append(stage)
    return not items


async def _add_instances(
    tx: Tx,
    batch_id: str,
    stage: str,
    template: JobSpec,
    items: Sequence[str],
    now: float,
    result: GateResult,
) -> None:
    top = await tx.one("SELECT coalesce(max(seq), -1) FROM jobs WHERE batch_id=?", (batch_id,))
    first = int(top[0]) + 1
    rows: list[tuple[Any, ...]] = []
    for i, item in enumerate(items):
        spec = instance(template, stage, i, item)
        job_id = new_id()
        rows.append(
            (
                job_id,
                batch_id,
                first + i,
                spec.name,
                f"covey-{job_id}",
                spec.to_json(),
                now,
                now,
                stage,
                i,
            )
        )
        result.added.append(job_id)
    await tx.many(
        "INSERT INTO jobs(id, batch_id, seq, name, service_base, spec, state, created, updated,"
        " stage, idx) VALUES (?,?,?,?,?,?,'waiting',?,?,?,?)",
        rows,
    )
    await tx.many(
        "INSERT INTO transitions(job_id, state, at, source, detail)"
        " VALUES (?, 'waiting', ?, 'covey', ?)",
        [(r[0], now, f"item {i} of {stage}") for i, r in enumerate(rows)],
    )
    await set_priorities(tx, batch_id)


async def set_priorities(tx: Tx, batch_id: str) -> None:
    """Copy each new job's ``priority`` from its spec into the column the due index orders
    by (specs leave out a default 0)."""
    await tx.run(
        "UPDATE jobs SET priority=json_extract(spec, '$.priority') WHERE batch_id=?"
        " AND priority=0 AND json_extract(spec, '$.priority') IS NOT NULL",
        (batch_id,),
    )
