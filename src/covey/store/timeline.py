"""The read behind ``covey timeline``: every attempt of a batch with its times, and when
each job waited.

The store keeps no history of an attempt's own phases beyond its row (created, started,
ended; ``pulling`` only while it pulls), so the waits come from the job's transitions: a
job waits for its needs from ``waiting``, for admission from ``queued`` (or ``retrying``:
its backoff), until the next state it reaches.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from covey.store.rows import BATCH_COLS, BatchRow, attempt_id, batch_row
from covey.store.writer import Tx

WAITS = frozenset({"waiting", "queued", "retrying"})
"""A job's states before an attempt: for its needs (``waiting``), for admission (the others)."""


@dataclass(frozen=True, slots=True)
class Span:
    """One attempt, from admission to its end; or (``n`` 0) a job that ended without one
    (skipped, or cancelled while it waited): then ``created`` is when it ended."""

    job_id: str
    name: str
    index: int | None  # its instance in a stage, or its for_each index
    stage: str | None
    n: int
    node: str | None
    queued: float  # since when it waited for admission (queued, or its retry's backoff)
    created: float  # admitted: the attempt recorded, before its create on the engine
    started: float | None  # running
    ended: float | None
    outcome: str | None  # an Outcome, or for n 0 the job's state; None: not ended
    exit_code: int | None
    error: str | None
    pulling: float | None  # since when its node pulls the image (only while it does)

    @property
    def id(self) -> str:
        return attempt_id(self.job_id, self.n) if self.n else self.job_id


@dataclass(frozen=True, slots=True)
class Wait:
    """A job in ``state`` (waiting, queued, retrying) from ``since`` until ``until``."""

    job_id: str
    state: str
    since: float
    until: float | None  # None: it still is


@dataclass(frozen=True, slots=True)
class BatchTimeline:
    batch: BatchRow
    spans: tuple[Span, ...]  # in order of admission
    waits: tuple[Wait, ...]
    stages: tuple[str, ...]  # a pipeline's stages in order (empty: a flat batch)
    now: float  # when this was read: the end of what has not ended


async def batch_for(tx: Tx, ref: str) -> BatchRow | None:
    """The batch with this id, else the latest one of this name (``covey batch`` names a
    batch after its file)."""
    row = await tx.one(f"SELECT {BATCH_COLS} FROM batches WHERE id=?", (ref,))
    if row is None:
        row = await tx.one(
            f"SELECT {BATCH_COLS} FROM batches WHERE name=? ORDER BY created DESC LIMIT 1", (ref,)
        )
    return batch_row(row) if row else None


def _index(idx: int | None, spec: str) -> int | None:
    if idx is not None:
        return idx
    found = json.loads(spec).get("index")
    return found if isinstance(found, int) else None


def _waits(rows: Sequence[Sequence[Any]]) -> list[Wait]:
    """``(job id, state, at)`` rows in order per job -> the spans spent in a wait state."""
    waits: list[Wait] = []
    for i, (job, state, at) in enumerate(rows):
        if state not in WAITS:
            continue
        following = rows[i + 1] if i + 1 < len(rows) else None
        until = following[2] if following is not None and following[0] == job else None
        waits.append(Wait(job, state, at, until))
    return waits


def _queued_since(waits: Sequence[Wait], created: float, default: float) -> float:
    """When the job last began to wait for admission before an attempt admitted then."""
    since = [w.since for w in waits if w.state != "waiting" and w.since <= created]
    return max(since, default=default)


async def batch_timeline(tx: Tx, ref: str) -> BatchTimeline | None:
    """The batch ``ref`` (an id, or a batch name) as a timeline; ``None``: no such batch."""
    batch = await batch_for(tx, ref)
    if batch is None:
        return None
    now = time.time()
    history = await tx.all(
        "SELECT t.job_id, t.state, t.at FROM transitions t JOIN jobs j ON j.id=t.job_id"
        " WHERE j.batch_id=? ORDER BY t.job_id, t.id",
        (batch.id,),
    )
    per_job: dict[str, list[Wait]] = {}
    waits = _waits(history)
    for wait in waits:
        per_job.setdefault(wait.job_id, []).append(wait)
    rows = await tx.all(
        "SELECT j.id, j.name, j.idx, j.spec, j.stage, j.created, j.state, j.finished, j.error,"
        " a.n, a.node, a.created, a.started, a.ended, a.outcome, a.exit_code, a.error, a.pulling"
        " FROM jobs j LEFT JOIN attempts a ON a.job_id=j.id WHERE j.batch_id=?"
        " ORDER BY coalesce(a.created, j.finished, j.created), j.seq, a.n",
        (batch.id,),
    )
    spans: list[Span] = []
    for job, name, idx, spec, stage, job_created, state, finished, job_error, *a in rows:
        index = _index(idx, spec)
        if a[0] is None:  # no attempt: shown only once the job has ended without one
            if finished is not None:
                queued = _queued_since(per_job.get(job, []), finished, job_created)
                spans.append(
                    Span(job, name, index, stage, 0, None, queued, finished, None, finished,
                         state, None, job_error, None)
                )  # fmt: skip
            continue
        n, node, created, started, ended, outcome, code, error, pulling = a
        queued = _queued_since(per_job.get(job, []), created, job_created)
        spans.append(
            Span(job, name, index, stage, n, node, queued, created, started, ended, outcome,
                 code, error, pulling)
        )  # fmt: skip
    stages = await tx.all("SELECT name FROM stages WHERE batch_id=? ORDER BY seq", (batch.id,))
    return BatchTimeline(batch, tuple(spans), tuple(waits), tuple(s[0] for s in stages), now)
