"""The reads behind the web dashboard (:mod:`covey.dashboard`): a page of batches with their
counts per state, and a page of one batch's jobs, filtered, without reading their specs.

Every read is bounded by a page (``LIMIT``/``OFFSET`` over ``jobs_batch(batch_id, seq)``) or
is one ``GROUP BY`` over a batch's rows, so a store of 100,000 jobs answers each within tens
of milliseconds; nothing here reads a job's spec (JSON) or its logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from covey.store.rows import BATCH_COLS, BatchRow, batch_row
from covey.store.writer import Tx


@dataclass(frozen=True, slots=True)
class JobLine:
    """One job as a line of a batch's table (no spec, no logs)."""

    id: str
    seq: int
    name: str
    stage: str | None
    idx: int | None
    state: str
    exit_code: int | None
    node: str | None
    attempts: int
    created: float
    started: float | None
    finished: float | None
    error: str | None


LINE_COLS = (
    "id, seq, name, stage, idx, state, exit_code, node, attempts, created, started, finished, error"
)


async def batch_page(tx: Tx, limit: int, offset: int) -> tuple[list[BatchRow], int]:
    """The newest batches first, one page of them, and how many batches there are."""
    rows = await tx.all(
        f"SELECT {BATCH_COLS} FROM batches ORDER BY created DESC, id LIMIT ? OFFSET ?",
        (limit, offset),
    )
    total = await tx.one("SELECT count(*) FROM batches")
    return [batch_row(r) for r in rows], int(total[0])


async def batch_counts(tx: Tx, batch_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per batch: how many of its jobs are in each state (one ``GROUP BY`` per batch, each
    a range of the ``jobs_batch`` index)."""
    counts: dict[str, dict[str, int]] = {b: {} for b in batch_ids}
    for batch_id in batch_ids:
        for state, n in await tx.all(
            "SELECT state, count(*) FROM jobs WHERE batch_id=? GROUP BY state", (batch_id,)
        ):
            counts[batch_id][str(state)] = int(n)
    return counts


def _where(batch_id: str, states: Sequence[str], name: str | None) -> tuple[str, list[Any]]:
    sql = " WHERE batch_id=?"
    args: list[Any] = [batch_id]
    if states:
        sql += f" AND state IN ({','.join('?' * len(states))})"
        args += list(states)
    if name:
        escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        sql += " AND name LIKE ? ESCAPE '\\'"
        args.append(f"%{escaped}%")
    return sql, args


async def job_lines(
    tx: Tx,
    batch_id: str,
    *,
    states: Sequence[str] = (),
    name: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[JobLine]:
    """One page of a batch's jobs in submission order; ``name``: a part of the job's name
    (case does not matter for ASCII letters)."""
    where, args = _where(batch_id, states, name)
    rows = await tx.all(
        f"SELECT {LINE_COLS} FROM jobs{where} ORDER BY seq LIMIT ? OFFSET ?",
        [*args, limit, offset],
    )
    return [JobLine(*r) for r in rows]


async def count_jobs(
    tx: Tx, batch_id: str, *, states: Sequence[str] = (), name: str | None = None
) -> int:
    """How many of a batch's jobs :func:`job_lines` pages through."""
    where, args = _where(batch_id, states, name)
    row = await tx.one(f"SELECT count(*) FROM jobs{where}", args)
    return int(row[0])
