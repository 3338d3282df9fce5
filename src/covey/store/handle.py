"""An open store: one SQLite file in WAL mode, shared by the supervisor and its producers.

Two aiosqlite connections: one writes (group commit, :mod:`covey.store.writer`), one reads
(so reads see committed data only, and never wait behind this process's writes). A store
holds every job's environment and logs, so its file, its WAL and SHM files and the default
directory are created for the owner only.

This module opens, locks and writes; :class:`Store` also takes its thin methods, by role,
from :mod:`~covey.store.queries` (reads), :mod:`~covey.store.running` (the submitter, the
tracker, operators), :mod:`~covey.store.steering` (steering and schedules) and
:mod:`~covey.store.holding` (holders). Producers and retention are here: they need the
writer itself.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import platformdirs

from covey.errors import StoreError
from covey.pipeline import Pipeline, validate
from covey.retrying import GaveUp, retry
from covey.spec import JobSpec
from covey.states import JobState
from covey.store import schema, writes
from covey.store.gate import GateResult
from covey.store.holding import Holding
from covey.store.queries import Queries
from covey.store.rows import new_id
from covey.store.running import Running
from covey.store.steering import Steering
from covey.store.writer import GroupWriter, Tx, Write

log = logging.getLogger("covey")
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


class Store(Running, Queries, Steering, Holding):
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
