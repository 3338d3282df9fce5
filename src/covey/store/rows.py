"""What the store hands out: frozen rows, and the mappers from SQLite tuples to them."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from covey.spec import JobSpec
from covey.states import JobState, Outcome


def new_id() -> str:
    """A batch's or a job's id: 12 hex digits (docker's short-id look)."""
    return secrets.token_hex(6)


def attempt_id(job_id: str, n: int) -> str:
    """The one format of an attempt's id: the job's id and the attempt's number."""
    return f"{job_id}-{n}"


@dataclass(frozen=True, slots=True)
class BatchRow:
    id: str
    name: str | None
    created: float
    total: int
    owner: str = "queue"  # "queue" (a supervisor's) or "run" (a foreground process's)
    max_concurrent: int | None = None  # its own cap (covey throttle)
    paused: bool = False  # no admissions (covey pause)


@dataclass(frozen=True, slots=True)
class JobRow:
    id: str
    batch_id: str
    seq: int
    name: str
    service_base: str
    spec: JobSpec
    state: JobState
    created: float
    updated: float
    attempts: int
    runs: int
    losses: int
    not_before: float | None
    exit_code: int | None
    error: str | None
    node: str | None
    started: float | None
    finished: float | None
    cancel_requested: bool
    stage: str | None = None  # its stage in a pipeline (None: a job of a flat batch)
    idx: int | None = None  # its instance number in that stage


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A schedule (covey.schedules): a batch file submitted at each fire time."""

    name: str
    cron: str
    tz: str
    file: str
    created: float
    paused: bool
    next_fire: float
    last_fire: float | None = None
    last_batch: str | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class StageRow:
    """One stage of a pipeline batch, and what it waits for."""

    batch_id: str
    name: str
    seq: int
    size: int | None  # instances; None while a fan-out waits for its items
    items_from: str | None  # the stage whose stdout gives its items
    skipped: str | None  # why a fan-out will never have instances
    needs: tuple[tuple[str, str, bool], ...] = ()  # (stage, condition, inputs)

    @property
    def instances_note(self) -> str | None:
        """What a fan-out's instances are when there are none to count (``None``: counted)."""
        if self.items_from is None:
            return None
        if self.skipped:
            return f"none: skipped ({self.skipped})"
        if self.size is None:
            return f"one per line {self.items_from} prints (not known yet)"
        if self.size == 0:
            return f"none: {self.items_from} printed no items"
        return None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    id: str
    job_id: str
    n: int
    service: str
    mode: str
    engine_id: str | None = None
    phase: str = "creating"
    outcome: Outcome | None = None
    exit_code: int | None = None
    error: str | None = None
    node: str | None = None
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    stop_reason: str | None = None
    logs_saved: bool = False
    removed: bool = False
    image: str | None = None  # the reference it ran (pinned: name@digest)
    pulling: float | None = None  # since when its node has been pulling the image


@dataclass(frozen=True, slots=True)
class Transition:
    job_id: str
    attempt_id: str | None
    state: str
    at: float
    source: str
    detail: str | None


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One stream of one attempt as stored: ``data`` is all of it, or its tail when
    ``truncated``; ``complete`` is false when the engine could not give all of it."""

    stream: str
    data: bytes
    size: int
    truncated: bool
    complete: bool = True


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """A job and the logs of its latest attempt, read together."""

    job: JobRow
    logs: dict[str, LogRecord]


@dataclass(frozen=True, slots=True)
class HolderRow:
    """A covey process that holds work in the store: the supervisor, or a foreground run."""

    id: str
    role: str
    pid: int
    host: str
    proc_started: float
    since: float
    heartbeat: float


JOB_COLS = (
    "id, batch_id, seq, name, service_base, spec, state, created, updated, attempts, runs,"
    " losses, not_before, exit_code, error, node, started, finished, cancel_requested, stage, idx"
)
ATTEMPT_COLS = (
    "id, job_id, n, service, mode, engine_id, phase, outcome, exit_code, error, node, created,"
    " started, ended, stop_reason, logs_saved, removed, image, pulling"
)
BATCH_COLS = "id, name, created, total, owner, max_concurrent, paused"
LOG_COLS = "stream, data, size, truncated, complete"
HOLDER_COLS = "id, role, pid, host, proc_started, since, heartbeat"
SCHEDULE_COLS = (
    "name, cron, tz, file, created, paused, next_fire, last_fire, last_batch, last_error"
)


def job_row(row: Sequence[Any]) -> JobRow:
    return JobRow(
        id=row[0],
        batch_id=row[1],
        seq=row[2],
        name=row[3],
        service_base=row[4],
        spec=JobSpec.from_json(row[5]),
        state=JobState(row[6]),
        created=row[7],
        updated=row[8],
        attempts=row[9],
        runs=row[10],
        losses=row[11],
        not_before=row[12],
        exit_code=row[13],
        error=row[14],
        node=row[15],
        started=row[16],
        finished=row[17],
        cancel_requested=bool(row[18]),
        stage=row[19],
        idx=row[20],
    )


def attempt_row(row: Sequence[Any]) -> AttemptRow:
    return AttemptRow(
        id=row[0],
        job_id=row[1],
        n=row[2],
        service=row[3],
        mode=row[4],
        engine_id=row[5],
        phase=row[6],
        outcome=Outcome(row[7]) if row[7] else None,
        exit_code=row[8],
        error=row[9],
        node=row[10],
        created=row[11],
        started=row[12],
        ended=row[13],
        stop_reason=row[14],
        logs_saved=bool(row[15]),
        removed=bool(row[16]),
        image=row[17],
        pulling=row[18],
    )


def batch_row(row: Sequence[Any]) -> BatchRow:
    return BatchRow(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]))


def holder_row(row: Sequence[Any]) -> HolderRow:
    return HolderRow(row[0], row[1], int(row[2]), row[3], float(row[4]), row[5], row[6])


def log_records(rows: Iterable[Sequence[Any]]) -> dict[str, LogRecord]:
    return {r[0]: LogRecord(r[0], bytes(r[1]), r[2], bool(r[3]), bool(r[4])) for r in rows}
