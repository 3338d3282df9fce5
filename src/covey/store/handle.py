"""An open store: one SQLite file in WAL mode, shared by the supervisor and its producers.

Two aiosqlite connections: one writes (group commit, :mod:`covey.store.writer`), one reads
(so reads see committed data only, and never wait behind this process's writes). A store
holds every job's environment and logs, so its file, its WAL and SHM files and the default
directory are created for the owner only.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aiosqlite
import anyio
import platformdirs

from covey import holders as holding
from covey.errors import StoreError
from covey.lifecycle import EndDecision
from covey.pipeline import Pipeline, validate
from covey.retrying import GaveUp, retry
from covey.spec import JobSpec
from covey.states import JobState
from covey.store import gate, pages, reads, schema, writes
from covey.store.gate import GateResult
from covey.store.pages import JobLine
from covey.store.reads import Scope
from covey.store.rows import (
    AttemptRow,
    BatchRow,
    HolderRow,
    JobRow,
    JobSnapshot,
    LogRecord,
    ScheduleRow,
    StageRow,
    Transition,
    attempt_id,
    new_id,
)
from covey.store.timeline import BatchTimeline, batch_timeline
from covey.store.writer import GroupWriter, Tx, Write
from covey.store.writes import AttemptEnd, StreamLog

log = logging.getLogger("covey")
DEFAULT_LOG_CAP = 1024 * 1024
BUSY_TIMEOUT = 5.0
"""SQLite's own wait for a lock, per try; covey's patience (below) is on top of it."""
_warned: set[Path] = set()


def default_path() -> Path:
    """``$COVEY_DB`` or ``covey.db`` in the user's data directory."""
    env = os.environ.get("COVEY_DB")
    if env:
        return Path(env)
    return Path(platformdirs.user_data_dir("covey")) / "covey.db"


def _pipeline_rows(
    pipeline: Pipeline, batch_id: str, now: float
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows of a pipeline batch: jobs (stage and instance number; ``waiting`` when the
    stage needs others), stages (a fan-out's template), needs."""
    jobs: list[tuple[Any, ...]] = []
    stages: list[tuple[Any, ...]] = []
    needs: list[tuple[Any, ...]] = []
    for n, stage in enumerate(pipeline.stages):
        dynamic = stage.items_from is not None
        template = stage.specs[0].to_json() if dynamic else None
        stages.append((batch_id, stage.name, n, template, stage.items_from, stage.size))
        needs += [
            (batch_id, stage.name, need.stage, need.condition.value, int(need.inputs))
            for need in stage.needs
        ]
        if dynamic:
            continue
        state = JobState.WAITING if stage.needs else JobState.QUEUED
        for i, spec in enumerate(stage.specs):
            job_id = new_id()
            seq = len(jobs)
            jobs.append(
                (
                    job_id,
                    batch_id,
                    seq,
                    spec.name or f"job-{seq}",
                    f"covey-{job_id}",
                    spec.to_json(),
                    state.value,
                    now,
                    now,
                    stage.name,
                    i,
                )
            )
    return jobs, stages, needs


class _Bytes:
    """Plain bytes as a stream log, capped to their tail (callers that read everything)."""

    __slots__ = ("complete", "data", "size", "truncated")

    def __init__(self, data: bytes, cap: int) -> None:
        self.size = len(data)
        self.data, self.truncated = writes.cap_bytes(data, cap)
        self.complete = True


def _private(target: Path) -> None:
    """Create the store's directory and file for the owner only; warn (once) when an
    existing store can be read by others: it holds environments (often credentials)."""
    missing = []
    for directory in (target.parent, *target.parent.parents):
        if directory.exists():
            break
        missing.append(directory)
    for directory in reversed(missing):  # mkdir(parents=True) would make the parents 0755
        directory.mkdir(mode=0o700, exist_ok=True)
    if not target.exists():
        try:
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
        except FileExistsError:
            pass
        return
    mode = stat.S_IMODE(target.stat().st_mode)
    if mode & 0o077 and target not in _warned:
        _warned.add(target)
        print(
            f"covey: warning: the store {target} can be read by other users (mode {mode:o});"
            f" it holds jobs' environments and logs: chmod 600 {target}",
            file=sys.stderr,
        )


def _busy_wait(lock_patience: float | None) -> float:
    """SQLite's own wait for a lock: never longer than covey's patience (0.5 s means 0.5 s)."""
    return BUSY_TIMEOUT if lock_patience is None else min(BUSY_TIMEOUT, lock_patience)


class _Locked(Exception):
    """Another process holds the store's write lock (SQLite's own busy wait ran out)."""


def _locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


class Store:
    """An open store; use :meth:`open` (async context manager)."""

    def __init__(
        self,
        path: Path,
        reader: aiosqlite.Connection,
        writer: aiosqlite.Connection | None,
        lock_patience: float | None,
    ) -> None:
        self.path = path
        self.id = ""
        self._read = Tx(reader)
        self._reader = reader
        self._writer_conn = writer
        self._writer = GroupWriter(writer) if writer is not None else None
        self._lock_patience = lock_patience
        # told what the pipeline gate did in this process's commits (the orchestrator
        # wakes its submitter for released jobs and reports skipped ones)
        self.on_gate: Callable[[GateResult], None] | None = None

    def _gated(self, result: GateResult) -> None:
        if result and self.on_gate is not None:
            self.on_gate(result)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: Path | str | None = None,
        *,
        readonly: bool = False,
        lock_patience: float | None = 60.0,
    ) -> AsyncIterator[Store]:
        """Open (and create or migrate) the store.

        ``readonly``: only reads are made (``ls``, ``show``, ``wait``); no write lock is taken
        unless the schema must first be migrated. ``lock_patience``: how long a write waits
        for a lock another process holds before it fails with a clear error (``None``:
        forever, warning now and then; what a supervisor wants).
        """
        target = Path(path) if path else default_path()
        async with AsyncExitStack() as stack:
            try:
                _private(target)
                wait = _busy_wait(lock_patience)
                reader = await stack.enter_async_context(_connect(target, wait))
                writer = (
                    None if readonly else await stack.enter_async_context(_connect(target, wait))
                )
            except sqlite3.DatabaseError as exc:
                if _locked(exc):
                    raise StoreError(f"the store {target} is locked by another process") from exc
                raise StoreError(f"{target} is not a covey store: {exc}") from exc
            except (OSError, sqlite3.Error) as exc:
                raise StoreError(f"cannot open the store {target}: {exc}") from exc
            store = cls(target, reader, writer, lock_patience)
            await store._prepare()
            try:
                yield store
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await store.flush()
                    except (sqlite3.Error, StoreError, ValueError) as exc:
                        log.warning("store: writes left at close failed: %s", exc)

    async def _prepare(self) -> None:
        try:
            found = await schema.version(self._read, self.path)
            if found < schema.SCHEMA_VERSION:
                await self._migrate()
            row = await self._read.one("SELECT value FROM meta WHERE key='store_id'")
            self.id = str(row[0]) if row else ""
        except sqlite3.DatabaseError as exc:
            if _locked(exc):
                raise StoreError(
                    f"the store {self.path} is locked by another process: {exc}"
                ) from exc
            raise StoreError(f"{self.path} is not a covey store: {exc}") from exc

    async def _migrate(self) -> None:
        async with AsyncExitStack() as stack:
            conn = self._writer_conn
            if conn is None:  # a read-only open of an older store: migrate once, then read
                conn = await stack.enter_async_context(
                    _connect(self.path, _busy_wait(self._lock_patience))
                )
            await conn.execute_fetchall("PRAGMA journal_mode=WAL")
            writer = self._writer if conn is self._writer_conn else GroupWriter(conn)
            assert writer is not None
            await self._with_patience(
                lambda: writer.write(lambda tx: schema.migrate(tx, self.path))
            )

    # -- writing ----------------------------------------------------------------------

    async def _txn(self, fn: Any) -> Any:
        if self._writer is None:
            raise StoreError(f"the store {self.path} was opened read-only")
        writer = self._writer
        return await self._with_patience(lambda: writer.write(fn))

    async def _with_patience(self, attempt: Callable[[], Awaitable[Any]]) -> Any:
        """A write, retried by covey's one retry rule while another process holds the
        store's write lock; any other SQLite error is a :class:`StoreError` at once."""
        started = warned = time.monotonic()

        async def once() -> Any:
            try:
                return await attempt()
            except sqlite3.OperationalError as exc:
                if _locked(exc):
                    raise _Locked(str(exc)) from exc
                raise StoreError(f"the store {self.path}: {exc}") from exc

        def waiting(exc: BaseException) -> None:
            nonlocal warned
            if time.monotonic() - warned > 30:
                warned = time.monotonic()
                waited = warned - started
                log.warning("store %s locked by another process for %.0fs", self.path, waited)

        patience = math.inf if self._lock_patience is None else self._lock_patience
        try:
            return await retry(
                once,
                what=str(self.path),
                give_up_after=patience,
                retry_on=_Locked,
                on_retry=waiting,
            )
        except GaveUp as exc:
            raise StoreError(
                f"the store {self.path} stayed locked by another process for"
                f" {time.monotonic() - started:.0f}s (a long write, or a sqlite3 shell with an"
                " open transaction?); try again when it is free"
            ) from (exc.last.__cause__ or exc)

    def _later(self, fn: Write) -> None:
        if self._writer is not None:
            self._writer.later(fn)

    async def flush(self) -> None:
        """Commit the deferred notes (the tracker calls this every round)."""
        writer = self._writer
        if writer is not None and writer.queued:
            await self._with_patience(lambda: writer.write(_nothing))

    async def data_version(self) -> int:
        """Changes when another connection commits (how the supervisor notices producers)."""
        return int(await _value(self._writer_conn or self._reader, "PRAGMA data_version"))

    # -- producers --------------------------------------------------------------------

    async def create_batch(
        self,
        specs: Sequence[JobSpec] | Pipeline,
        *,
        name: str | None = None,
        idempotency_key: str | None = None,
        service_names: Sequence[str | None] | None = None,
        owner: str = "queue",
        holder: str | None = None,
        pins: Sequence[tuple[str, str | None, str | None]] = (),
    ) -> tuple[str, list[str], bool]:
        """Queue jobs as one batch: ``(batch id, job ids, already existed)``.

        A :class:`~covey.pipeline.Pipeline` with needs is stored with its stages: the jobs of
        a stage that needs others wait (``waiting``) until the gate releases them, and a
        fan-out over another stage's output has no jobs until that stage's job is done.
        The job ids returned are the ones known now, in stage order."""
        now = time.time()
        batch_id = new_id()
        pipeline = specs if isinstance(specs, Pipeline) and specs.has_needs else None
        if pipeline is not None:
            validate(pipeline)
            jobs, stages, needs = _pipeline_rows(pipeline, batch_id, now)
        else:
            flat = specs.static_specs() if isinstance(specs, Pipeline) else list(specs)
            names = list(service_names or [None] * len(flat))
            jobs, stages, needs = [], [], []
            for seq, (spec, base) in enumerate(zip(flat, names, strict=True)):
                job_id = new_id()
                jobs.append(
                    (
                        job_id,
                        batch_id,
                        seq,
                        spec.name or f"job-{seq}",
                        base or f"covey-{job_id}",
                        spec.to_json(),
                        JobState.QUEUED.value,
                        now,
                        now,
                    )
                )
        result: tuple[str, list[str], bool] = await self._txn(
            lambda tx: writes.create_batch(
                tx,
                batch_id=batch_id,
                name=name,
                idempotency_key=idempotency_key,
                owner=owner,
                holder=holder,
                jobs=jobs,
                now=now,
                stages=stages,
                needs=needs,
                pins=pins,
            )
        )
        return result

    # -- the web dashboard (covey.dashboard): pages of rows, never a whole table -----

    async def batch_page(self, limit: int, offset: int) -> tuple[list[BatchRow], int]:
        """Newest batches first, one page; and how many batches the store has."""
        return await pages.batch_page(self._read, limit, offset)

    async def batch_counts(self, batch_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Per batch, its jobs per state."""
        return await pages.batch_counts(self._read, batch_ids)

    async def job_lines(
        self,
        batch_id: str,
        *,
        states: Sequence[str] = (),
        name: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[JobLine]:
        """One page of a batch's jobs (no specs read), filtered by state and part of a name."""
        return await pages.job_lines(
            self._read, batch_id, states=states, name=name, limit=limit, offset=offset
        )

    async def count_jobs(
        self, batch_id: str, *, states: Sequence[str] = (), name: str | None = None
    ) -> int:
        return await pages.count_jobs(self._read, batch_id, states=states, name=name)

    # -- the submitter ----------------------------------------------------------------

    async def due_jobs(
        self, now: float, limit: int, scope: Scope, held: Sequence[str] = ()
    ) -> list[JobRow]:
        """Due jobs, highest priority first, none of the ``held`` batches."""
        return await reads.due_jobs(self._read, now, limit, scope, held)

    # -- schedules (covey.schedules) ----------------------------------------------------

    async def schedules(self) -> list[ScheduleRow]:
        return await reads.schedules(self._read)

    async def schedule_add(
        self, name: str, cron: str, tz: str, file: str, next_fire: float
    ) -> bool:
        """``False`` when a schedule of that name exists."""
        now = time.time()
        added: bool = await self._txn(
            lambda tx: writes.schedule_add(tx, name, cron, tz, file, now, next_fire)
        )
        return added

    async def schedule_remove(self, name: str) -> bool:
        removed: bool = await self._txn(lambda tx: writes.schedule_remove(tx, name))
        return removed

    async def schedule_pause(self, name: str, paused: bool, next_fire: float | None) -> bool:
        done: bool = await self._txn(lambda tx: writes.schedule_pause(tx, name, paused, next_fire))
        return done

    async def schedule_fired(
        self, name: str, fire: float, upcoming: float, batch_id: str | None, error: str | None
    ) -> None:
        await self._txn(lambda tx: writes.schedule_fired(tx, name, fire, upcoming, batch_id, error))

    async def queued_since(self, batch_id: str) -> tuple[float | None, int]:
        """(when its longest-waiting queued job was queued, the top priority due elsewhere)."""
        return await reads.queued_since(self._read, batch_id)

    async def steering(self, scope: Scope) -> dict[str, tuple[int | None, bool]]:
        """Batches (in scope) with a cap of their own or paused: id -> (cap, paused)."""
        return await reads.steering(self._read, scope)

    async def steer(
        self, batch_id: str, *, max_concurrent: int | bool | None = False, paused: bool | None
    ) -> None:
        """Set a batch's own cap (``None``: none) or pause it; its orchestrator reads it
        within a second (covey throttle, pause, resume)."""
        await self._txn(
            lambda tx: writes.steer(tx, batch_id, max_concurrent=max_concurrent, paused=paused)
        )

    async def next_due(self, scope: Scope) -> float | None:
        return await reads.next_due(self._read, scope)

    async def begin_attempt(self, job: JobRow, mode: str) -> AttemptRow | None:
        """Record the attempt (and its fixed name) before anything is created on the engine.

        ``None`` when the job is no longer due as read (cancelled, or taken meanwhile): the
        submitter reads due jobs ahead, so the row it holds may be stale.
        """
        n = job.attempts + 1
        custom = job.service_base != f"covey-{job.id}"  # --name: the name itself, first time
        service = job.service_base if n == 1 and custom else f"{job.service_base}-{n}"
        attempt = AttemptRow(attempt_id(job.id, n), job.id, n, service, mode, created=time.time())
        begun = await self._txn(lambda tx: writes.begin_attempt(tx, attempt, job.attempts))
        return attempt if begun else None

    def attempt_created(self, attempt: str, engine_id: str, image: str | None = None) -> None:
        """Note the engine's id and the image reference it runs (deferred: reconcile finds
        an unnoted service by its name)."""
        self._later(lambda tx: writes.attempt_created(tx, attempt, engine_id, image))

    def attempt_pulling(self, attempt: str, since: float | None) -> None:
        """Note that its node pulls the image (since when, wall clock), or no longer does."""
        self._later(lambda tx: writes.attempt_pulling(tx, attempt, since))

    async def pin(self, batch_id: str, image: str) -> tuple[str | None, str | None] | None:
        """The batch's pin of an image, ``(digest, note)``; ``None`` if not resolved yet."""
        return await reads.pin(self._read, batch_id, image)

    async def save_pin(
        self, batch_id: str, image: str, digest: str | None, note: str | None
    ) -> tuple[str | None, str | None]:
        """Keep the batch's pin of an image; returns the one kept (the first saved wins)."""
        now = time.time()
        saved: tuple[str | None, str | None] = await self._txn(
            lambda tx: writes.save_pin(tx, batch_id, image, digest, note, now)
        )
        return saved

    async def pulling_jobs(self, job_ids: Sequence[str]) -> set[str]:
        """Of these jobs, those whose node is pulling the image of their attempt now."""
        return await reads.pulling_jobs(self._read, job_ids)

    # -- the tracker ------------------------------------------------------------------

    def attempt_running(
        self, attempt: str, job_id: str, node: str | None, at: float, source: str
    ) -> None:
        """Note the start (deferred: a crash loses at most this note, and reconcile's first
        listing says it again)."""
        self._later(lambda tx: writes.attempt_running(tx, attempt, job_id, node, at, source))

    async def set_stop_reason(self, attempt: str, reason: str) -> None:
        await self._txn(lambda tx: writes.set_stop_reason(tx, attempt, reason))

    async def finish(self, attempt: AttemptRow, end: AttemptEnd) -> EndDecision | None:
        """Record the end of an attempt and what it means for the job, exactly once;
        ``None`` if it was recorded before."""
        done = await self._txn(lambda tx: writes.finish(tx, attempt, end))
        if done is None:
            return None
        decision, gated = done
        self._gated(gated)
        return cast(EndDecision, decision)

    async def save_logs(
        self,
        attempt: str,
        stdout: bytes | StreamLog,
        stderr: bytes | StreamLog,
        cap: int = DEFAULT_LOG_CAP,
        *,
        snapshot: str | None = None,
    ) -> JobSnapshot | None:
        """Store an attempt's logs (bytes are capped to their tail here; a stream log read
        with its cap applied is stored as it is). With ``snapshot`` (a job id), the job and
        its latest logs are read back once committed: what a result needs."""
        streams = [
            (name, _Bytes(value, cap) if isinstance(value, bytes) else value)
            for name, value in (("stdout", stdout), ("stderr", stderr))
        ]
        self._gated(await self._txn(lambda tx: writes.keep_logs(tx, attempt, streams)))
        return await self.job_with_logs(snapshot) if snapshot else None

    def mark_removed(self, attempt: str) -> None:
        """Deferred: if a crash loses it, reconcile removes again (the engine says not found)."""
        self._later(lambda tx: writes.mark_removed(tx, attempt))

    async def open_attempts(self, scope: Scope | None) -> list[AttemptRow]:
        """Attempts not yet cleaned up (ended or not); ``None``: whoever owns their batch."""
        return await reads.open_attempts(self._read, scope)

    async def open_attempts_all(self) -> list[AttemptRow]:
        return await reads.open_attempts(self._read, None)

    async def fail_job(
        self, job: JobRow, state: JobState, error: str, source: str = "covey"
    ) -> bool:
        """End a job that never got an attempt (e.g. it can never fit on any node)."""
        ended, gated = await self._txn(lambda tx: writes.fail_job(tx, job.id, state, error, source))
        self._gated(gated)
        return bool(ended)

    # -- operators --------------------------------------------------------------------

    async def request_cancel(
        self, job_ids: Iterable[str], *, batches: Sequence[str] = ()
    ) -> list[JobRow]:
        """Mark jobs (and whole ``batches``, fan-outs to come included) cancelled-on-request;
        queued, retrying and waiting ones end at once; returns the ones still in flight (an
        attempt to stop)."""
        ids = list(job_ids)
        asked, gated = await self._txn(
            lambda tx: writes.request_cancel(tx, ids, time.time(), batches)
        )
        self._gated(gated)
        return [j for j in await self.jobs_by_id(asked) if not j.state.terminal]

    async def retry_jobs(self, job_ids: Iterable[str]) -> list[str]:
        ids = list(job_ids)
        done, gated = await self._txn(lambda tx: writes.retry_jobs(tx, ids, time.time()))
        self._gated(gated)
        return list(done)

    # -- holders ----------------------------------------------------------------------

    async def hold(
        self, role: str, *, exclusive: bool = False
    ) -> tuple[HolderRow, HolderRow | None]:
        """Register this process as a holder; first, hand the work of holders that are gone
        to the queue. Returns ``(ours, None)``; with ``exclusive``, ``(ours, other)`` and
        nothing registered when another live process already holds this role."""
        ours = holding.this_process(role)

        async def txn(tx: Tx) -> HolderRow | None:
            for other in await writes.holders(tx):
                if not holding.alive(other):
                    await writes.release_holder(tx, other.id)
                elif exclusive and other.role == role:
                    return other
            await writes.add_holder(tx, ours)
            return None

        taken: HolderRow | None = await self._txn(txn)
        return ours, taken

    async def release_dead_holders(self) -> int:
        """Hand the batches of holders that no longer exist to the queue; how many."""

        async def txn(tx: Tx) -> int:
            handed = 0
            for other in await writes.holders(tx):
                if not holding.alive(other):
                    handed += await writes.release_holder(tx, other.id)
            return handed

        count: int = await self._txn(txn)
        return count

    async def unhold(self, holder: str) -> int:
        """This process is done: what it still holds goes to the queue."""
        count: int = await self._txn(lambda tx: writes.release_holder(tx, holder))
        return count

    async def heartbeat(self, holder: str) -> bool:
        alive: bool = await self._txn(lambda tx: writes.heartbeat(tx, holder, time.time()))
        return alive

    async def holders(self) -> list[HolderRow]:
        return await writes.holders(self._read)

    async def minded_attempts(self) -> set[str]:
        """Open attempts a live covey process looks after: its own foreground batches, or
        the queue's while a supervisor runs. The others' ends nobody will record."""
        alive = [h for h in await self.holders() if holding.alive(h)]
        ids = {h.id for h in alive}
        supervised = any(h.role == "supervisor" for h in alive)
        return {
            attempt
            for attempt, owner, holder in await reads.open_attempt_owners(self._read)
            if holder in ids or (owner == "queue" and holder is None and supervised)
        }

    async def holders_of(self, job_ids: Sequence[str]) -> set[str]:
        return await reads.holders_of(self._read, job_ids)

    # -- retention --------------------------------------------------------------------

    async def delete_finished(self, before: float, chunk: int = 2000) -> int:
        """Delete jobs that ended before ``before`` (and all they left), in transactions
        of ``chunk`` jobs so producers and the supervisor are never locked out for long."""
        total = 0
        while True:
            n: int = await self._txn(lambda tx: writes.delete_finished(tx, before, chunk))
            total += n
            if n < chunk:
                return total

    async def reclaim_space(self) -> tuple[int, int]:
        """Give freed pages back to the file system; ``(bytes before, bytes after)``.

        A store created by this covey uses incremental auto-vacuum; an older one is switched
        to it once, which takes one full VACUUM (an exclusive lock for its duration)."""
        writer = self._writer
        if writer is None:
            raise StoreError(f"the store {self.path} was opened read-only")

        async def reclaim(conn: aiosqlite.Connection) -> tuple[int, int]:
            # between commits: VACUUM cannot run in a transaction, and executescript would
            # commit the one a concurrent write (the supervisor's tracker) has open
            before = _size(self.path)
            if await _value(conn, "PRAGMA auto_vacuum") != 2:
                await conn.execute_fetchall("PRAGMA auto_vacuum=INCREMENTAL")
                await conn.execute_fetchall("VACUUM")
            else:
                # each step of this pragma frees one page and yields an empty row, and
                # sqlite3's execute stops after the first of those: executescript steps it to
                # its end (execute_fetchall freed one page per call)
                await conn.executescript("PRAGMA incremental_vacuum;")
            await conn.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
            return before, _size(self.path)

        sizes: tuple[int, int] = await self._with_patience(lambda: writer.alone(reclaim))
        return sizes

    # -- reads ------------------------------------------------------------------------

    async def batch(self, batch_id: str) -> BatchRow | None:
        return await reads.batch(self._read, batch_id)

    async def batches(self, limit: int = 50) -> list[BatchRow]:
        return await reads.batches(self._read, limit)

    async def batch_open(self, batch_id: str) -> tuple[list[str], int]:
        return await reads.batch_open(self._read, batch_id)

    async def batch_job_ids(self, batch_id: str) -> list[str]:
        return await reads.batch_job_ids(self._read, batch_id)

    async def inputs_for(self, job: JobRow) -> list[tuple[str, bytes, tuple[str, str] | None]]:
        return await reads.inputs_for(self._read, job)

    async def outputs_of(self, batch_id: str) -> list[tuple[str, str]]:
        return await reads.outputs_of(self._read, batch_id)

    async def batch_finished(self, batch_id: str) -> bool:
        return await gate.finished(self._read, batch_id)

    def note_output(self, attempt: str, batch_id: str, config_id: str) -> None:
        """Deferred: a shared output not noted is made again (or the job makes its own)."""
        self._later(lambda tx: writes.note_output(tx, attempt, batch_id, config_id))

    async def forget_outputs(self, attempts: Sequence[str]) -> None:
        await self._txn(lambda tx: writes.forget_outputs(tx, attempts))

    async def stage_counts(self, batch_id: str) -> dict[str, dict[str, int]]:
        return await reads.stage_counts(self._read, batch_id)

    async def stages(self, batch_id: str) -> list[StageRow]:
        return await reads.stages(self._read, batch_id)

    async def job(self, job_id: str) -> JobRow | None:
        return await reads.job(self._read, job_id)

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        return await reads.cancel_requested(self._read, job_ids)

    async def jobs_by_id(self, ids: Sequence[str]) -> list[JobRow]:
        return await reads.jobs_by_id(self._read, ids)

    async def ended_since(self, scope: Scope, since: float) -> list[str]:
        return await reads.ended_since(self._read, scope, since)

    async def terminal_among(self, ids: Sequence[str]) -> set[str]:
        return await reads.terminal_among(self._read, ids)

    async def jobs(
        self,
        *,
        batch_id: str | None = None,
        states: Sequence[str] = (),
        name: str | None = None,
        limit: int | None = None,
    ) -> list[JobRow]:
        return await reads.jobs(
            self._read, batch_id=batch_id, states=states, name=name, limit=limit
        )

    async def attempts(self, job_id: str) -> list[AttemptRow]:
        return await reads.attempts(self._read, job_id)

    async def attempt(self, ident: str) -> AttemptRow | None:
        return await reads.attempt(self._read, ident)

    async def transitions(self, job_id: str) -> list[Transition]:
        return await reads.transitions(self._read, job_id)

    async def logs(self, attempt: str) -> dict[str, LogRecord]:
        return await reads.logs(self._read, attempt)

    async def job_with_logs(self, job_id: str) -> JobSnapshot | None:
        return await reads.job_with_logs(self._read, job_id)

    async def counts(self, batch_id: str | None = None) -> dict[str, int]:
        return await reads.counts(self._read, batch_id)

    async def resolve(self, ref: str) -> tuple[str, list[str]]:
        return await reads.resolve(self._read, ref, self.path)

    async def timeline(self, batch_id: str) -> BatchTimeline | None:
        """Every attempt of the batch (an id, or a batch's name: its latest) with its times,
        and its jobs' waits (``covey timeline``); ``None``: no such batch."""
        return await batch_timeline(self._read, batch_id)


async def _nothing(tx: Tx) -> None:
    return None


async def _value(conn: aiosqlite.Connection, sql: str) -> Any:
    rows = list(await conn.execute_fetchall(sql))
    return rows[0][0]


def _size(path: Path) -> int:
    return sum(
        p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


@asynccontextmanager
async def _connect(path: Path, wait: float = BUSY_TIMEOUT) -> AsyncIterator[aiosqlite.Connection]:
    conn = await aiosqlite.connect(path, isolation_level=None, timeout=wait)
    try:
        # a new file: incremental auto-vacuum must be chosen before the first table exists.
        # Only then: on an existing file this pragma writes the header (a write lock), and
        # opening a store to read must never wait for, or fail on, another process's write
        if await _value(conn, "PRAGMA page_count") == 0:
            await conn.execute_fetchall("PRAGMA auto_vacuum=INCREMENTAL")
        await conn.execute_fetchall("PRAGMA synchronous=NORMAL")
        await conn.execute_fetchall("PRAGMA foreign_keys=ON")
        yield conn
    finally:
        with anyio.CancelScope(shield=True):
            await conn.close()
