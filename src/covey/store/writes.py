"""Every write transaction of the store, as an ``async`` function of a :class:`Tx`.

The guards (``WHERE state IN ...``) are written from :mod:`covey.lifecycle`'s sets, and the
meaning of an attempt's end is decided there, from the job row read *in the same
transaction* that records the end.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from covey.lifecycle import (
    CANCELLABLE,
    DUE,
    IDLE,
    RETRYABLE,
    EndDecision,
    JobBudget,
    end_of_attempt,
    sql_in,
)
from covey.spec import JobSpec
from covey.states import TERMINAL, JobState, Outcome
from covey.store import gate
from covey.store.gate import GateResult
from covey.store.rows import HOLDER_COLS, AttemptRow, HolderRow, attempt_id, holder_row
from covey.store.writer import Tx

_DUE = sql_in(DUE)
_IDLE = sql_in(IDLE)
_CANCELLABLE = sql_in(CANCELLABLE)
_RETRYABLE = sql_in(RETRYABLE)
_TERMINAL = sql_in(TERMINAL)


class StreamLog(Protocol):
    """One stream as read from the engine: all of it or its tail, and how much there was."""

    @property
    def data(self) -> bytes: ...
    @property
    def size(self) -> int: ...
    @property
    def truncated(self) -> bool: ...
    @property
    def complete(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How an attempt ended, as seen: outcome, code, where, when, seen how."""

    outcome: Outcome
    exit_code: int | None
    error: str | None
    node: str | None
    at: float
    source: str
    engine_id: str | None = None  # noted with the end if the create's note is not in yet


async def transition(
    tx: Tx,
    job_id: str,
    attempt: str | None,
    state: str,
    at: float,
    source: str,
    detail: str | None = None,
) -> None:
    await tx.run(
        "INSERT INTO transitions(job_id, attempt_id, state, at, source, detail)"
        " VALUES (?,?,?,?,?,?)",
        (job_id, attempt, state, at, source, detail),
    )


# -- producers --------------------------------------------------------------------------


async def create_batch(
    tx: Tx,
    *,
    batch_id: str,
    name: str | None,
    idempotency_key: str | None,
    owner: str,
    holder: str | None,
    jobs: Sequence[tuple[Any, ...]],
    now: float,
    stages: Sequence[tuple[Any, ...]] = (),
    needs: Sequence[tuple[Any, ...]] = (),
    pins: Sequence[tuple[str, str | None, str | None]] = (),
) -> tuple[str, list[str], bool]:
    """A batch and its jobs; for a pipeline also its stages and needs (``jobs`` rows then
    carry their stage, instance number and first state: ``waiting`` when the stage needs
    others)."""
    if idempotency_key is not None:
        found = await tx.one("SELECT id FROM batches WHERE idempotency_key=?", (idempotency_key,))
        if found:
            rows = await tx.all("SELECT id FROM jobs WHERE batch_id=? ORDER BY seq", (found[0],))
            return found[0], [r[0] for r in rows], True
    await tx.run(
        "INSERT INTO batches(id, name, created, idempotency_key, total, owner, holder)"
        " VALUES (?,?,?,?,?,?,?)",
        (batch_id, name, now, idempotency_key, len(jobs), owner, holder),
    )
    if stages:
        await tx.many(
            "INSERT INTO stages(batch_id, name, seq, template, items_from, size)"
            " VALUES (?,?,?,?,?,?)",
            stages,
        )
        await tx.many(
            "INSERT INTO needs(batch_id, stage, need, condition, inputs) VALUES (?,?,?,?,?)",
            needs,
        )
        await tx.many(
            "INSERT INTO jobs(id, batch_id, seq, name, service_base, spec, state, created,"
            " updated, stage, idx) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            jobs,
        )
    else:
        await tx.many(
            "INSERT INTO jobs(id, batch_id, seq, name, service_base, spec, state, created,"
            " updated) VALUES (?,?,?,?,?,?,?,?,?)",
            jobs,
        )
    await tx.many(
        "INSERT INTO transitions(job_id, state, at, source) VALUES (?, ?, ?, 'covey')",
        [(j[0], j[6], now) for j in jobs],
    )
    await gate.set_priorities(tx, batch_id)
    await tx.many(
        "INSERT INTO images(batch_id, image, digest, note, resolved) VALUES (?,?,?,?,?)",
        [(batch_id, image, digest, note, now) for image, digest, note in pins],
    )
    return batch_id, [j[0] for j in jobs], False


async def steer(
    tx: Tx, batch_id: str, *, max_concurrent: int | bool | None = False, paused: bool | None
) -> None:
    """A batch's own cap (``None``: none; ``False``: unchanged) and pause."""
    if max_concurrent is not False:
        await tx.run("UPDATE batches SET max_concurrent=? WHERE id=?", (max_concurrent, batch_id))
    if paused is not None:
        await tx.run("UPDATE batches SET paused=? WHERE id=?", (int(paused), batch_id))


# -- the submitter and the tracker ------------------------------------------------------


async def begin_attempt(tx: Tx, attempt: AttemptRow, prior: int) -> bool:
    """The attempt and its fixed name, recorded before anything exists on the engine;
    ``False`` if the job is no longer due as it was read (cancelled or taken meanwhile)."""
    taken = await tx.changed(
        "UPDATE jobs SET state='pending', attempts=?, updated=?, not_before=NULL"
        f" WHERE id=? AND attempts=? AND state IN {_DUE} AND cancel_requested=0 RETURNING 1",
        (attempt.n, attempt.created, attempt.job_id, prior),
    )
    if not taken:
        return False
    await tx.run(
        "INSERT INTO attempts(id, job_id, n, service, mode, phase, created)"
        " VALUES (?,?,?,?,?, 'creating', ?)",
        (attempt.id, attempt.job_id, attempt.n, attempt.service, attempt.mode, attempt.created),
    )
    await transition(
        tx, attempt.job_id, attempt.id, "pending", attempt.created, "covey", attempt.service
    )
    return True


async def attempt_created(tx: Tx, attempt: str, engine_id: str, image: str | None) -> None:
    await tx.run(
        "UPDATE attempts SET engine_id=?, phase=CASE phase WHEN 'creating' THEN 'pending'"
        " ELSE phase END, image=coalesce(?, image) WHERE id=?",
        (engine_id, image, attempt),
    )


async def attempt_pulling(tx: Tx, attempt: str, since: float | None) -> None:
    await tx.run(
        "UPDATE attempts SET pulling=? WHERE id=? AND phase IN ('creating', 'pending')",
        (since, attempt),
    )


async def save_pin(
    tx: Tx, batch_id: str, image: str, digest: str | None, note: str | None, now: float
) -> tuple[str | None, str | None]:
    """The batch's pin of an image: the first one saved wins (two processes that resolved
    it at once both run the digest saved first)."""
    await tx.run(
        "INSERT INTO images(batch_id, image, digest, note, resolved) VALUES (?,?,?,?,?)"
        " ON CONFLICT(batch_id, image) DO NOTHING",
        (batch_id, image, digest, note, now),
    )
    row = await tx.one(
        "SELECT digest, note FROM images WHERE batch_id=? AND image=?", (batch_id, image)
    )
    assert row is not None
    return row[0], row[1]


async def attempt_running(
    tx: Tx, attempt: str, job_id: str, node: str | None, at: float, source: str
) -> None:
    moved = await tx.changed(
        "UPDATE attempts SET phase='running', started=?, node=coalesce(?, node), pulling=NULL"
        " WHERE id=? AND phase IN ('creating', 'pending') RETURNING 1",
        (at, node, attempt),
    )
    if not moved:
        return
    await tx.run(
        "UPDATE jobs SET state='running', node=coalesce(?, node),"
        " started=coalesce(started, ?), updated=? WHERE id=? AND state='pending'",
        (node, at, at, job_id),
    )
    await transition(tx, job_id, attempt, "running", at, source, node)


async def set_stop_reason(tx: Tx, attempt: str, reason: str) -> None:
    await tx.run(
        "UPDATE attempts SET stop_reason=coalesce(stop_reason, ?) WHERE id=?", (reason, attempt)
    )


async def finish(
    tx: Tx, attempt: AttemptRow, end: AttemptEnd
) -> tuple[EndDecision, GateResult] | None:
    """Record an attempt's end once (the guarded UPDATE) and decide, from the job as it is
    now, what it means; ``None`` if the end was recorded before. A pipeline job whose logs
    were saved before its end (``covey cancel`` saves them first) is done here: the gate."""
    # ``end.at`` may be the engine's clock (an end found late) and the start covey's (when it
    # noticed): an attempt never ends before it started
    ended = await tx.one(
        "UPDATE attempts SET phase='ended', outcome=?, exit_code=?, error=?,"
        " node=coalesce(?, node), ended=max(?, coalesce(started, 0)),"
        " engine_id=coalesce(engine_id, ?) WHERE id=? AND phase != 'ended'"
        " RETURNING ended, logs_saved",
        (
            end.outcome.value,
            end.exit_code,
            end.error,
            end.node,
            end.at,
            end.engine_id,
            attempt.id,
        ),
    )
    if ended is None:
        return None
    end_at = float(ended[0])
    row = await tx.one(
        "SELECT spec, runs, losses, cancel_requested, attempts, state, stage, batch_id"
        " FROM jobs WHERE id=?",
        (attempt.job_id,),
    )
    if row is None or row[4] != attempt.n or JobState(row[5]) in TERMINAL:
        # not the job's current attempt (or the job ended meanwhile): the attempt's end is
        # history, the job's state is not its to change
        state = JobState(row[5]) if row else JobState.LOST
        return EndDecision(state, counts_as_run=False), GateResult()
    budget = JobBudget(JobSpec.from_json(row[0]).retry, row[1], row[2], bool(row[3]))
    recorded_at = max(end_at, time.time())  # ``end.at`` may be the engine's time, earlier
    # a retry's backoff counts from when covey knew of the end, as an operator sees it
    decision = end_of_attempt(budget, end.outcome, end.exit_code, recorded_at)
    terminal = decision.state in TERMINAL
    await tx.run(
        "UPDATE jobs SET state=?, updated=?, not_before=?, exit_code=?, error=?,"
        " node=coalesce(?, node), finished=?, runs=runs+?, losses=losses+?"
        " WHERE id=?",
        (
            decision.state.value,
            recorded_at,
            decision.not_before,
            end.exit_code,
            end.error if decision.state is not JobState.CANCELLED else "cancelled",
            end.node,
            end_at if terminal else None,
            int(decision.counts_as_run),
            int(decision.counts_as_loss),
            attempt.job_id,
        ),
    )
    detail = "; ".join(part for part in (end.error, decision.detail) if part) or None
    if end.exit_code is not None:
        detail = f"exit {end.exit_code}" + (f": {detail}" if detail else "")
    # the history says when covey recorded it; the attempt and the job say when it ended
    await transition(
        tx, attempt.job_id, attempt.id, decision.state.value, recorded_at, end.source, detail
    )
    gated = GateResult()
    # a pipeline job is done (its dependents may go) when its logs are saved; or now, when
    # no job reads what it printed: a dependent need not wait for the engine's log read
    if (
        terminal
        and row[6] is not None
        and (ended[1] or not await gate.output_read(tx, row[7], row[6]))
    ):
        gated = await gate.mark_done(tx, attempt.job_id, attempt.n, recorded_at)
    return decision, gated


def cap_bytes(data: bytes, cap: int) -> tuple[bytes, bool]:
    """The tail of at most ``cap`` bytes (0: all), and whether anything was cut."""
    kept = data[-cap:] if cap and len(data) > cap else data
    return kept, len(kept) < len(data)


async def keep_logs(tx: Tx, attempt: str, streams: Sequence[tuple[str, StreamLog]]) -> GateResult:
    """Store the logs; a pipeline job that has ended is then done (the gate runs)."""
    for stream, log in streams:
        await tx.run(
            "INSERT INTO logs(attempt_id, stream, data, size, truncated, complete)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT(attempt_id, stream) DO UPDATE SET"
            " data=excluded.data, size=excluded.size, truncated=excluded.truncated,"
            " complete=excluded.complete",
            (attempt, stream, log.data, log.size, int(log.truncated), int(log.complete)),
        )
    await tx.run("UPDATE attempts SET logs_saved=1 WHERE id=?", (attempt,))
    job_id, _, n = attempt.rpartition("-")
    return await gate.mark_done(tx, job_id, int(n), time.time())


async def mark_removed(tx: Tx, attempt: str) -> None:
    await tx.run("UPDATE attempts SET removed=1 WHERE id=?", (attempt,))


async def fail_job(
    tx: Tx, job_id: str, state: JobState, error: str, source: str
) -> tuple[bool, GateResult]:
    """End a job that never got an attempt (e.g. it can never fit on any node)."""
    now = time.time()
    ended = await tx.changed(
        f"UPDATE jobs SET state=?, error=?, finished=?, updated=? WHERE id=? AND state IN {_DUE}"
        " AND cancel_requested=0 RETURNING 1",
        (state.value, error, now, now, job_id),
    )
    if not ended:
        return False, GateResult()
    await transition(tx, job_id, None, state.value, now, source, error)
    return True, await gate.mark_done(tx, job_id, None, now)


# -- operators --------------------------------------------------------------------------


async def request_cancel(
    tx: Tx, ids: Sequence[str], now: float, batches: Sequence[str] = ()
) -> tuple[list[str], GateResult]:
    """Mark jobs cancelled-on-request; a job with no attempt in flight (queued, retrying,
    waiting for its needs) ends at once. The gate runs once all are marked: a dependent
    cancelled with its need is ``cancelled``, not skipped because of it.

    ``batches`` are cancelled whole: every job they have *now* (read in this transaction,
    so a fan-out made a moment ago is included) and every fan-out they would make later.
    Returns the ids of all jobs asked to stop."""
    ids = list(ids)
    if batches:
        marks = ",".join("?" * len(batches))
        await tx.run(f"UPDATE batches SET cancelled=1 WHERE id IN ({marks})", batches)
        known = set(ids)
        rows = await tx.all(
            f"SELECT id FROM jobs WHERE batch_id IN ({marks}) AND state IN {_CANCELLABLE}"
            " ORDER BY seq",
            batches,
        )
        ids += [r[0] for r in rows if r[0] not in known]
    ended_now: list[str] = []
    for job_id in ids:
        marked = await tx.changed(
            f"UPDATE jobs SET cancel_requested=1, updated=? WHERE id=? AND state IN {_CANCELLABLE}"
            " RETURNING 1",
            (now, job_id),
        )
        if not marked:
            continue
        ended = await tx.changed(
            "UPDATE jobs SET state='cancelled', finished=?, error='cancelled', not_before=NULL"
            f" WHERE id=? AND state IN {_IDLE} RETURNING 1",
            (now, job_id),
        )
        if ended:
            await transition(tx, job_id, None, "cancelled", now, "covey", "cancelled")
            ended_now.append(job_id)
    result = GateResult()
    for job_id in ended_now:
        result.merge(await gate.mark_done(tx, job_id, None, now))
    return ids, result


async def retry_jobs(tx: Tx, ids: Sequence[str], now: float) -> tuple[list[str], GateResult]:
    """Queue ended, unsuccessful jobs again (new attempts); returns the ids re-opened.

    In a pipeline a retried job first waits for its needs again (they are usually met: it
    is queued in the same transaction), and the jobs downstream of it that were skipped
    because of it are re-opened too, to wait for its new result.
    """
    done: list[str] = []
    reopened: dict[str, list[tuple[str, str]]] = {}
    for job_id in ids:
        row = await tx.one(
            "UPDATE jobs SET state=CASE WHEN stage IS NULL THEN 'queued' ELSE 'waiting' END,"
            " done=0, cancel_requested=0, not_before=NULL, runs=0, losses=0, exit_code=NULL,"
            f" error=NULL, finished=NULL, updated=? WHERE id=? AND state IN {_RETRYABLE}"
            " RETURNING batch_id, stage, state",
            (now, job_id),
        )
        if row is None:
            continue
        await transition(tx, job_id, None, row[2], now, "covey", "retry")
        done.append(job_id)
        if row[1] is not None:
            reopened.setdefault(row[0], []).append((job_id, row[1]))
    gated = GateResult()
    for batch_id, jobs in reopened.items():
        below = await _downstream(tx, batch_id, {stage for _, stage in jobs})
        marks = ",".join("?" * len(below))
        skipped = (
            await tx.all(
                "UPDATE jobs SET state='waiting', done=0, error=NULL, finished=NULL, updated=?"
                f" WHERE batch_id=? AND state='skipped' AND stage IN ({marks}) RETURNING id",
                [now, batch_id, *below],
            )
            if below
            else []
        )
        for (job_id,) in skipped:
            await transition(tx, job_id, None, "waiting", now, "covey", "retry (re-opened)")
        done += [r[0] for r in skipped]
        if below:  # a fan-out skipped because its source failed waits for the new run
            await tx.run(
                "UPDATE stages SET size=NULL, skipped=NULL WHERE batch_id=? AND name IN"
                f" ({marks}) AND skipped IS NOT NULL",
                [batch_id, *below],
            )
        gated.merge(
            await gate.judge_reopened(
                tx, batch_id, [j for j, _ in jobs] + [r[0] for r in skipped], now
            )
        )
    if done:
        # a batch whose foreground process is gone (it ended, or was killed) is the queue's
        # now: a supervisor runs the retried jobs (a live holder runs them itself)
        marks = ",".join("?" * len(done))
        await tx.run(
            "UPDATE batches SET owner='queue' WHERE holder IS NULL AND id IN"
            f" (SELECT batch_id FROM jobs WHERE id IN ({marks}))",
            done,
        )
    return done, gated


async def _downstream(tx: Tx, batch_id: str, stages: set[str]) -> list[str]:
    """Every stage that needs one of ``stages``, directly or through others."""
    edges: dict[str, list[str]] = {}
    for stage, need in await tx.all("SELECT stage, need FROM needs WHERE batch_id=?", (batch_id,)):
        edges.setdefault(need, []).append(stage)
    seen: set[str] = set()
    todo = list(stages)
    while todo:
        for dep in edges.get(todo.pop(), []):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return sorted(seen)


# -- shared outputs (covey.sharer) ---------------------------------------------------------


async def note_output(tx: Tx, attempt: str, batch_id: str, config_id: str) -> None:
    await tx.run(
        "INSERT OR REPLACE INTO outputs(attempt_id, batch_id, config_id) VALUES (?,?,?)",
        (attempt, batch_id, config_id),
    )


async def forget_outputs(tx: Tx, attempts: Sequence[str]) -> None:
    await tx.many("DELETE FROM outputs WHERE attempt_id=?", [(a,) for a in attempts])


# -- holders: who owns work ---------------------------------------------------------------


async def holders(tx: Tx) -> list[HolderRow]:
    return [holder_row(r) for r in await tx.all(f"SELECT {HOLDER_COLS} FROM holders")]


async def release_holder(tx: Tx, holder: str) -> int:
    """The holder is gone (cleanly or not): its unfinished batches go to the queue, where a
    supervisor adopts them; returns how many batches were handed over."""
    handed = await tx.changed(
        "UPDATE batches SET owner='queue', holder=NULL WHERE holder=? AND EXISTS"
        f" (SELECT 1 FROM jobs WHERE jobs.batch_id=batches.id AND state NOT IN {_TERMINAL})"
        " RETURNING 1",
        (holder,),
    )
    await tx.run("UPDATE batches SET holder=NULL WHERE holder=?", (holder,))
    await tx.run("DELETE FROM holders WHERE id=?", (holder,))
    return handed


async def add_holder(tx: Tx, holder: HolderRow) -> None:
    await tx.run(
        f"INSERT INTO holders({HOLDER_COLS}) VALUES (?,?,?,?,?,?,?)",
        (
            holder.id,
            holder.role,
            holder.pid,
            holder.host,
            holder.proc_started,
            holder.since,
            holder.heartbeat,
        ),
    )


async def heartbeat(tx: Tx, holder: str, now: float) -> bool:
    return bool(
        await tx.changed("UPDATE holders SET heartbeat=? WHERE id=? RETURNING 1", (now, holder))
    )


# -- retention --------------------------------------------------------------------------


async def delete_finished(tx: Tx, before: float, limit: int) -> int:
    """Delete up to ``limit`` jobs that ended before ``before`` with everything they left
    (attempts, transitions, logs), but only once nothing of theirs is left on the engine;
    then batches left empty. Returns the number of jobs deleted."""
    # The unary ``+`` keeps SQLite off two indexes it would otherwise pick without
    # statistics: ``jobs_state`` (every ended job, recent ones too, scanned again for each
    # chunk) and ``attempts_open`` (every open attempt scanned once per job): on a store of
    # 100,000 jobs with 1,000 in flight that made this select take over a minute.
    rows = await tx.all(
        "SELECT id FROM jobs WHERE finished IS NOT NULL AND finished < ?"
        f" AND +state IN {_TERMINAL}"
        " AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.job_id=jobs.id AND +a.removed=0)"
        # a pipeline's jobs stay while a job of it may still need them
        " AND (stage IS NULL OR NOT EXISTS (SELECT 1 FROM jobs o WHERE o.batch_id=jobs.batch_id"
        " AND o.stage IS NOT NULL AND o.done=0))"
        " LIMIT ?",
        (before, limit),
    )
    ids = [r[0] for r in rows]
    if not ids:
        return 0
    marks = ",".join("?" * len(ids))
    await tx.run(
        f"DELETE FROM logs WHERE attempt_id IN (SELECT id FROM attempts WHERE job_id IN ({marks}))",
        ids,
    )
    await tx.run(f"DELETE FROM attempts WHERE job_id IN ({marks})", ids)
    await tx.run(f"DELETE FROM transitions WHERE job_id IN ({marks})", ids)
    await tx.run(f"DELETE FROM jobs WHERE id IN ({marks})", ids)
    gone = "NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.batch_id=batches.id)"
    for table in ("needs", "stages"):
        await tx.run(f"DELETE FROM {table} WHERE batch_id IN (SELECT id FROM batches WHERE {gone})")
    await tx.run(f"DELETE FROM batches WHERE {gone}")
    return len(ids)


__all__ = ["AttemptEnd", "StreamLog", "attempt_id"]


# -- schedules (covey.schedules) -------------------------------------------------------


async def schedule_add(
    tx: Tx, name: str, cron: str, tz: str, file: str, now: float, next_fire: float
) -> bool:
    """A new schedule; ``False`` if one of that name exists."""
    return bool(
        await tx.changed(
            "INSERT INTO schedules(name, cron, tz, file, created, next_fire) VALUES (?,?,?,?,?,?)"
            " ON CONFLICT(name) DO NOTHING RETURNING 1",
            (name, cron, tz, file, now, next_fire),
        )
    )


async def schedule_remove(tx: Tx, name: str) -> bool:
    return bool(await tx.changed("DELETE FROM schedules WHERE name=? RETURNING 1", (name,)))


async def schedule_pause(tx: Tx, name: str, paused: bool, next_fire: float | None) -> bool:
    """Pause, or resume from ``next_fire`` (what was due while paused is not fired)."""
    return bool(
        await tx.changed(
            "UPDATE schedules SET paused=?, next_fire=coalesce(?, next_fire) WHERE name=?"
            " RETURNING 1",
            (int(paused), next_fire, name),
        )
    )


async def schedule_fired(
    tx: Tx, name: str, fire: float, upcoming: float, batch_id: str | None, error: str | None
) -> None:
    """One fire time is done (its batch submitted, or why not): move on to the next."""
    await tx.run(
        "UPDATE schedules SET last_fire=?, next_fire=?, last_batch=?, last_error=?"
        " WHERE name=? AND next_fire<=?",
        (fire, upcoming, batch_id, error, name, fire),
    )
