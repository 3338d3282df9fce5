"""Every read of the store: what the loops ask for, and the lookups of the CLI.

Reads run on a connection of their own, so in WAL mode they see committed data only, never
a write transaction of this process half done, and never wait for one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from covey.errors import StoreError
from covey.inputs import output_config
from covey.lifecycle import DUE, sql_in
from covey.pipeline import index_json
from covey.spec import JobSpec
from covey.states import TERMINAL
from covey.store.rows import (
    ATTEMPT_COLS,
    BATCH_COLS,
    JOB_COLS,
    LOG_COLS,
    SCHEDULE_COLS,
    AttemptRow,
    BatchRow,
    JobRow,
    JobSnapshot,
    LogRecord,
    ScheduleRow,
    StageRow,
    Transition,
    attempt_row,
    batch_row,
    job_row,
    log_records,
)
from covey.store.writer import Tx

_DUE = sql_in(DUE)
CHUNK = 500  # ids per IN (...): well under SQLite's limit on bound parameters


@dataclass(frozen=True, slots=True)
class Scope:
    """Which jobs one orchestrator handles: some batches (a foreground run) or the queue."""

    batch_ids: tuple[str, ...] | None = None

    def sql(self, column: str) -> tuple[str, list[Any]]:
        if self.batch_ids is None:
            return f" AND {column} IN (SELECT id FROM batches WHERE owner='queue')", []
        marks = ",".join("?" * len(self.batch_ids)) or "NULL"
        return f" AND {column} IN ({marks})", list(self.batch_ids)


async def _chunked(tx: Tx, sql: str, ids: Sequence[str]) -> list[Any]:
    """``sql`` with one ``{marks}`` placeholder, run over ``ids`` in chunks."""
    rows: list[Any] = []
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start : start + CHUNK])
        rows += await tx.all(sql.format(marks=",".join("?" * len(chunk))), chunk)
    return rows


async def due_jobs(
    tx: Tx, now: float, limit: int, scope: Scope, held: Sequence[str] = ()
) -> list[JobRow]:
    """Queued jobs, and retrying jobs whose backoff is over: highest priority first, oldest
    first within one; none of the ``held`` batches (paused, or at their own cap)."""
    where, extra = scope.sql("batch_id")
    if held:
        where += f" AND batch_id NOT IN ({','.join('?' * len(held))})"
        extra = [*extra, *held]
    rows = await tx.all(
        f"SELECT {JOB_COLS} FROM jobs WHERE state IN {_DUE}"
        " AND (not_before IS NULL OR not_before <= ?) AND cancel_requested=0"
        + where
        + " ORDER BY priority DESC, created, seq LIMIT ?",
        [now, *extra, limit],
    )
    return [job_row(r) for r in rows]


async def queued_since(tx: Tx, batch_id: str) -> tuple[float | None, int]:
    """When the batch's longest-waiting queued job was queued, and the highest priority of
    any other batch's due jobs (what it may be waiting behind)."""
    row = await tx.one(
        "SELECT min(updated), max(priority) FROM jobs WHERE batch_id=? AND state='queued'",
        (batch_id,),
    )
    other = await tx.one(
        f"SELECT max(priority) FROM jobs WHERE state IN {_DUE} AND batch_id<>?", (batch_id,)
    )
    since = row[0] if row else None
    return since, int(other[0]) if other and other[0] is not None else 0


async def steering(tx: Tx, scope: Scope) -> dict[str, tuple[int | None, bool]]:
    """The batches (in scope) with a cap of their own or paused: id -> (cap, paused)."""
    where, extra = scope.sql("id")
    rows = await tx.all(
        "SELECT id, max_concurrent, paused FROM batches"
        " WHERE (max_concurrent IS NOT NULL OR paused=1)" + where,
        extra,
    )
    return {r[0]: (r[1], bool(r[2])) for r in rows}


async def next_due(tx: Tx, scope: Scope) -> float | None:
    where, extra = scope.sql("batch_id")
    row = await tx.one(
        "SELECT min(not_before) FROM jobs WHERE state='retrying' AND cancel_requested=0" + where,
        extra,
    )
    return float(row[0]) if row and row[0] is not None else None


async def open_attempts(tx: Tx, scope: Scope | None) -> list[AttemptRow]:
    """Attempts not yet cleaned up (ended or not); ``None``: whoever owns their batch."""
    sql = f"SELECT {ATTEMPT_COLS} FROM attempts WHERE removed=0"
    extra: list[Any] = []
    if scope is not None:
        where, extra = scope.sql("(SELECT batch_id FROM jobs WHERE jobs.id=attempts.job_id)")
        sql += where
    return [attempt_row(r) for r in await tx.all(sql + " ORDER BY created", extra)]


async def cancel_requested(tx: Tx, job_ids: Sequence[str]) -> set[str]:
    rows = await _chunked(
        tx, "SELECT id FROM jobs WHERE cancel_requested=1 AND id IN ({marks})", job_ids
    )
    return {str(r[0]) for r in rows}


async def jobs_by_id(tx: Tx, ids: Sequence[str]) -> list[JobRow]:
    rows = await _chunked(tx, f"SELECT {JOB_COLS} FROM jobs WHERE id IN ({{marks}})", ids)
    return [job_row(r) for r in rows]


async def terminal_among(tx: Tx, ids: Sequence[str]) -> set[str]:
    """Which of these jobs have ended for good (cheap: no spec decoding)."""
    rows = await _chunked(
        tx, f"SELECT id FROM jobs WHERE state IN {sql_in(TERMINAL)} AND id IN ({{marks}})", ids
    )
    return {str(r[0]) for r in rows}


async def ended_since(tx: Tx, scope: Scope, since: float) -> list[str]:
    """Jobs in scope that ended for good and were updated at or after ``since``."""
    where, extra = scope.sql("batch_id")
    rows = await tx.all(
        f"SELECT id FROM jobs WHERE state IN {sql_in(TERMINAL)} AND updated >= ?" + where,
        [since, *extra],
    )
    return [str(r[0]) for r in rows]


async def batch_open(tx: Tx, batch_id: str) -> tuple[list[str], int]:
    """The batch's jobs that have not ended, and how many of its fan-outs still wait for
    the output that decides their instances."""
    rows = await tx.all(
        f"SELECT id FROM jobs WHERE batch_id=? AND state NOT IN {sql_in(TERMINAL)}", (batch_id,)
    )
    unresolved = await tx.one(
        "SELECT count(*) FROM stages WHERE batch_id=? AND items_from IS NOT NULL AND size IS NULL",
        (batch_id,),
    )
    return [str(r[0]) for r in rows], int(unresolved[0])


async def outputs_of(tx: Tx, batch_id: str) -> list[tuple[str, str]]:
    """``(attempt id, config id)`` of the batch's shared outputs."""
    rows = await tx.all("SELECT attempt_id, config_id FROM outputs WHERE batch_id=?", (batch_id,))
    return [(str(r[0]), str(r[1])) for r in rows]


async def stage_counts(tx: Tx, batch_id: str) -> dict[str, dict[str, int]]:
    """Per stage of a pipeline batch: how many of its jobs are in each state."""
    counts: dict[str, dict[str, int]] = {}
    for stage, state, n in await tx.all(
        "SELECT stage, state, count(*) FROM jobs WHERE batch_id=? AND stage IS NOT NULL"
        " GROUP BY stage, state",
        (batch_id,),
    ):
        counts.setdefault(stage, {})[state] = n
    return counts


async def batch_job_ids(tx: Tx, batch_id: str) -> list[str]:
    rows = await tx.all("SELECT id FROM jobs WHERE batch_id=? ORDER BY seq", (batch_id,))
    return [str(r[0]) for r in rows]


async def stages(tx: Tx, batch_id: str) -> list[StageRow]:
    """A pipeline batch's stages in order, with what each needs (empty: a flat batch)."""
    needs: dict[str, list[tuple[str, str, bool]]] = {}
    for stage, need, condition, inputs in await tx.all(
        "SELECT stage, need, condition, inputs FROM needs WHERE batch_id=? ORDER BY rowid",
        (batch_id,),
    ):
        needs.setdefault(stage, []).append((need, condition, bool(inputs)))
    rows = await tx.all(
        "SELECT name, seq, size, items_from, skipped FROM stages WHERE batch_id=? ORDER BY seq",
        (batch_id,),
    )
    return [
        StageRow(batch_id, r[0], r[1], r[2], r[3], r[4], tuple(needs.get(r[0], ()))) for r in rows
    ]


async def inputs_for(tx: Tx, job: JobRow) -> list[tuple[str, bytes, tuple[str, str] | None]]:
    """The files a pipeline job reads under ``/covey/inputs``: ``(path, bytes)``.

    For each stage it needs with ``inputs``: ``NAME/INDEX`` holding the stdout of each done
    instance (for an ``each`` need only the paired one), and ``NAME/index.json`` describing
    them all; ``"complete": false`` there marks a stdout that is not all the job printed
    (cut at the log cap, or not all given by the engine). The third value is ``(id, name)``
    of a swarm config that already holds the file (covey.sharer), if there is one."""
    if job.stage is None:
        return []
    files: list[tuple[str, bytes, tuple[str, str] | None]] = []
    for need, condition in await tx.all(
        "SELECT need, condition FROM needs WHERE batch_id=? AND stage=? AND inputs=1"
        " ORDER BY rowid",
        (job.batch_id, job.stage),
    ):
        pair = " AND j.idx=?" if condition == "each" else ""
        args: list[Any] = [job.batch_id, need] + ([job.idx] if pair else [])
        rows = await tx.all(
            "SELECT j.idx, j.id, j.name, j.state, j.exit_code, j.node, j.spec, l.data,"
            " l.truncated, l.complete, o.config_id, o.attempt_id FROM jobs j LEFT JOIN logs l"
            " ON l.attempt_id = j.id || '-' || j.attempts AND l.stream='stdout'"
            " LEFT JOIN outputs o ON o.attempt_id = j.id || '-' || j.attempts"
            f" WHERE j.batch_id=? AND j.stage=? AND j.done=1{pair} ORDER BY j.idx",
            args,
        )
        entries = []
        for row in rows:
            idx, job_id, name, state, code, node, spec, data, truncated, complete = row[:10]
            number = idx if idx is not None else 0
            shared = (str(row[10]), output_config(str(row[11]))) if row[10] else None
            files.append((f"{need}/{number}", bytes(data) if data is not None else b"", shared))
            entries.append(
                {
                    "index": number,
                    "item": JobSpec.from_json(spec).item,
                    "job": job_id,
                    "name": name,
                    "state": state,
                    "exit_code": code,
                    "node": node,
                    "complete": data is not None and bool(complete) and not truncated,
                }
            )
        files.append((f"{need}/index.json", index_json(entries), None))
    return files


async def open_attempt_owners(tx: Tx) -> list[tuple[str, str, str | None]]:
    """``(attempt id, batch owner, batch holder)`` of every attempt not yet cleaned up."""
    rows = await tx.all(
        "SELECT a.id, b.owner, b.holder FROM attempts a JOIN jobs j ON j.id=a.job_id"
        " JOIN batches b ON b.id=j.batch_id WHERE a.removed=0"
    )
    return [(str(r[0]), str(r[1]), r[2]) for r in rows]


async def holders_of(tx: Tx, job_ids: Sequence[str]) -> set[str]:
    """The holders (foreground processes) of these jobs' batches."""
    rows = await _chunked(
        tx,
        "SELECT DISTINCT b.holder FROM batches b JOIN jobs j ON j.batch_id=b.id"
        " WHERE b.holder IS NOT NULL AND j.id IN ({marks})",
        job_ids,
    )
    return {str(r[0]) for r in rows}


async def jobs(
    tx: Tx,
    *,
    batch_id: str | None = None,
    states: Sequence[str] = (),
    name: str | None = None,
    limit: int | None = None,
) -> list[JobRow]:
    sql = f"SELECT {JOB_COLS} FROM jobs WHERE 1=1"
    args: list[Any] = []
    if batch_id:
        sql += " AND batch_id=?"
        args.append(batch_id)
    if states:
        sql += f" AND state IN ({','.join('?' * len(states))})"
        args += list(states)
    if name:
        sql += " AND name=?"
        args.append(name)
    sql += " ORDER BY created, seq"
    if limit:
        sql += " LIMIT ?"
        args.append(limit)
    return [job_row(r) for r in await tx.all(sql, args)]


async def batch(tx: Tx, batch_id: str) -> BatchRow | None:
    row = await tx.one(f"SELECT {BATCH_COLS} FROM batches WHERE id=?", (batch_id,))
    return batch_row(row) if row else None


async def batches(tx: Tx, limit: int) -> list[BatchRow]:
    rows = await tx.all(f"SELECT {BATCH_COLS} FROM batches ORDER BY created DESC LIMIT ?", (limit,))
    return [batch_row(r) for r in rows]


async def job(tx: Tx, job_id: str) -> JobRow | None:
    row = await tx.one(f"SELECT {JOB_COLS} FROM jobs WHERE id=?", (job_id,))
    return job_row(row) if row else None


async def attempts(tx: Tx, job_id: str) -> list[AttemptRow]:
    rows = await tx.all(f"SELECT {ATTEMPT_COLS} FROM attempts WHERE job_id=? ORDER BY n", (job_id,))
    return [attempt_row(r) for r in rows]


async def attempt(tx: Tx, ident: str) -> AttemptRow | None:
    row = await tx.one(f"SELECT {ATTEMPT_COLS} FROM attempts WHERE id=?", (ident,))
    return attempt_row(row) if row else None


async def transitions(tx: Tx, job_id: str) -> list[Transition]:
    rows = await tx.all(
        "SELECT job_id, attempt_id, state, at, source, detail FROM transitions"
        " WHERE job_id=? ORDER BY id",
        (job_id,),
    )
    return [Transition(*r) for r in rows]


async def logs(tx: Tx, attempt_id: str) -> dict[str, LogRecord]:
    return log_records(
        await tx.all(f"SELECT {LOG_COLS} FROM logs WHERE attempt_id=?", (attempt_id,))
    )


async def job_with_logs(tx: Tx, job_id: str) -> JobSnapshot | None:
    """A job and the logs of its latest attempt, in one statement (one consistent read)."""
    cols = ", ".join(f"j.{c.strip()}" for c in JOB_COLS.split(","))
    rows = await tx.all(
        f"SELECT {cols}, l.stream, l.data, l.size, l.truncated, l.complete FROM jobs j"
        " LEFT JOIN logs l ON l.attempt_id = j.id || '-' || j.attempts WHERE j.id=?",
        (job_id,),
    )
    if not rows:
        return None
    width = len(JOB_COLS.split(","))
    found = job_row(rows[0][:width])
    tails = [r[width:] for r in rows if r[width] is not None]
    return JobSnapshot(found, log_records(tails))


async def counts(tx: Tx, batch_id: str | None = None) -> dict[str, int]:
    sql = "SELECT state, count(*) FROM jobs"
    args: tuple[Any, ...] = ()
    if batch_id:
        sql += " WHERE batch_id=?"
        args = (batch_id,)
    return {r[0]: r[1] for r in await tx.all(sql + " GROUP BY state", args)}


async def resolve(tx: Tx, ref: str, path: object) -> tuple[str, list[str]]:
    """A job id, batch id, job name or unique prefix -> ("job"|"batch", job ids)."""
    if await job(tx, ref):
        return "job", [ref]
    if await batch(tx, ref):
        return "batch", [j.id for j in await jobs(tx, batch_id=ref)]
    rows = await tx.all("SELECT id FROM jobs WHERE id LIKE ? LIMIT 2", (ref + "%",))
    if len(rows) == 1:
        return "job", [rows[0][0]]
    found = await tx.all("SELECT id FROM batches WHERE id LIKE ? LIMIT 2", (ref + "%",))
    if len(found) == 1 and not rows:
        return "batch", [j.id for j in await jobs(tx, batch_id=found[0][0])]
    named = await tx.all("SELECT id FROM jobs WHERE name=? ORDER BY created DESC LIMIT 2", (ref,))
    if len(named) == 1:
        return "job", [named[0][0]]
    if len(rows) > 1 or len(found) > 1 or len(named) > 1:
        raise StoreError(f"{ref!r} is ambiguous: give more of the id")
    raise StoreError(f"no job or batch {ref!r} in {path}")


async def pin(tx: Tx, batch_id: str, image: str) -> tuple[str | None, str | None] | None:
    row = await tx.one(
        "SELECT digest, note FROM images WHERE batch_id=? AND image=?", (batch_id, image)
    )
    return (row[0], row[1]) if row else None


async def pulling_jobs(tx: Tx, job_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(job_ids), 500):
        chunk = list(job_ids[start : start + 500])
        rows = await tx.all(
            "SELECT DISTINCT job_id FROM attempts WHERE pulling IS NOT NULL AND removed=0"
            f" AND phase IN ('creating', 'pending') AND job_id IN ({','.join('?' * len(chunk))})",
            chunk,
        )
        found.update(r[0] for r in rows)
    return found


async def schedules(tx: Tx) -> list[ScheduleRow]:
    rows = await tx.all(f"SELECT {SCHEDULE_COLS} FROM schedules ORDER BY name")
    return [
        ScheduleRow(
            row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], row[7], row[8], row[9]
        )
        for row in rows
    ]
