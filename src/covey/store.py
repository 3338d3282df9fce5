"""The store: every job, attempt, state change and log covey knows, in one SQLite file.

aiosqlite in WAL mode, so producers (``covey submit``) and the supervisor share one file.
Every write is atomic and shielded from cancellation: a Ctrl-C or a cancelled task group can
never leave half a transition behind. Writes that meet in time share one ``BEGIN IMMEDIATE``
transaction (group commit, one savepoint each); notes that reconcile can redo after a crash
(engine id, start, removal) are not waited for and ride with the next commit. The end of an
attempt is recorded once (a guarded UPDATE), which is what makes "no result recorded twice"
hold across crashes, restarts and late events from returning nodes.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import anyio
import anyio.lowlevel
import platformdirs

from covey.errors import StoreError
from covey.spec import JobSpec
from covey.states import TERMINAL, JobState, Outcome

SCHEMA_VERSION = 1
T = TypeVar("T")
log = logging.getLogger("covey")
DEFAULT_LOG_CAP = 1024 * 1024

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE batches (
        id TEXT PRIMARY KEY,
        name TEXT,
        created REAL NOT NULL,
        idempotency_key TEXT UNIQUE,
        total INTEGER NOT NULL,
        owner TEXT NOT NULL
    );
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        batch_id TEXT NOT NULL REFERENCES batches(id),
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        service_base TEXT NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        runs INTEGER NOT NULL DEFAULT 0,
        losses INTEGER NOT NULL DEFAULT 0,
        not_before REAL,
        exit_code INTEGER,
        error TEXT,
        node TEXT,
        started REAL,
        finished REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_state ON jobs(state, not_before);
    CREATE INDEX jobs_batch ON jobs(batch_id, seq);
    CREATE TABLE attempts (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs(id),
        n INTEGER NOT NULL,
        service TEXT NOT NULL,
        mode TEXT NOT NULL,
        engine_id TEXT,
        phase TEXT NOT NULL,
        outcome TEXT,
        exit_code INTEGER,
        error TEXT,
        node TEXT,
        created REAL NOT NULL,
        started REAL,
        ended REAL,
        stop_reason TEXT,
        logs_saved INTEGER NOT NULL DEFAULT 0,
        removed INTEGER NOT NULL DEFAULT 0,
        UNIQUE (job_id, n)
    );
    CREATE INDEX attempts_open ON attempts(removed, phase);
    CREATE TABLE transitions (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL,
        attempt_id TEXT,
        state TEXT NOT NULL,
        at REAL NOT NULL,
        source TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX transitions_job ON transitions(job_id, id);
    CREATE TABLE logs (
        attempt_id TEXT NOT NULL,
        stream TEXT NOT NULL,
        data BLOB NOT NULL,
        size INTEGER NOT NULL,
        truncated INTEGER NOT NULL,
        PRIMARY KEY (attempt_id, stream)
    );
    """,
}


def default_path() -> Path:
    """``$COVEY_DB`` or ``covey.db`` in the user's data directory."""
    env = os.environ.get("COVEY_DB")
    if env:
        return Path(env)
    return Path(platformdirs.user_data_dir("covey")) / "covey.db"


def new_id() -> str:
    return secrets.token_hex(6)


@dataclass(frozen=True, slots=True)
class Scope:
    """Which jobs one orchestrator handles: some batches (a foreground run) or the queue."""

    batch_ids: tuple[str, ...] | None = None

    def sql(self, column: str) -> tuple[str, list[Any]]:
        if self.batch_ids is None:
            return f" AND {column} IN (SELECT id FROM batches WHERE owner='queue')", []
        marks = ",".join("?" * len(self.batch_ids)) or "NULL"
        return f" AND {column} IN ({marks})", list(self.batch_ids)


@dataclass(frozen=True, slots=True)
class BatchRow:
    id: str
    name: str | None
    created: float
    total: int


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


@dataclass(frozen=True, slots=True)
class AttemptRow:
    id: str
    job_id: str
    n: int
    service: str
    mode: str
    engine_id: str | None
    phase: str
    outcome: Outcome | None
    exit_code: int | None
    error: str | None
    node: str | None
    created: float
    started: float | None
    ended: float | None
    stop_reason: str | None
    logs_saved: bool
    removed: bool


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
    stream: str
    data: bytes
    size: int
    truncated: bool


@dataclass(frozen=True, slots=True)
class EndDecision:
    """What the end of an attempt means for its job (from :mod:`covey.policy`)."""

    state: JobState
    not_before: float | None = None
    counts_as_run: bool = True
    counts_as_loss: bool = False
    detail: str | None = None


_JOB_COLS = (
    "id, batch_id, seq, name, service_base, spec, state, created, updated, attempts, runs,"
    " losses, not_before, exit_code, error, node, started, finished, cancel_requested"
)
_ATTEMPT_COLS = (
    "id, job_id, n, service, mode, engine_id, phase, outcome, exit_code, error, node, created,"
    " started, ended, stop_reason, logs_saved, removed"
)


_LOGS_SQL = "SELECT stream, data, size, truncated FROM logs WHERE attempt_id=?"


def _log_records(rows: Iterable[Sequence[Any]]) -> dict[str, LogRecord]:
    return {r[0]: LogRecord(r[0], bytes(r[1]), r[2], bool(r[3])) for r in rows}


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How an attempt ended, as recorded: outcome, code, where, when, seen how, and what it
    means for its job."""

    outcome: Outcome
    exit_code: int | None
    error: str | None
    node: str | None
    at: float
    source: str
    decision: EndDecision
    engine_id: str | None = None  # noted with the end if the create's note is not in yet


def _finish(db: sqlite3.Connection, attempt: AttemptRow, end: AttemptEnd) -> bool:
    """Record an attempt's end once (the guarded UPDATE); ``False`` if it was recorded before."""
    cur = db.execute(
        "UPDATE attempts SET phase='ended', outcome=?, exit_code=?, error=?,"
        " node=coalesce(?, node), ended=?, engine_id=coalesce(engine_id, ?)"
        " WHERE id=? AND phase != 'ended'",
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
    if cur.rowcount != 1:
        return False
    decision = end.decision
    terminal = decision.state in TERMINAL
    db.execute(
        "UPDATE jobs SET state=?, updated=?, not_before=?, exit_code=?, error=?,"
        " node=coalesce(?, node), finished=?, runs=runs+?, losses=losses+?"
        " WHERE id=? AND attempts=?",
        (
            decision.state.value,
            end.at,
            decision.not_before,
            end.exit_code,
            end.error,
            end.node,
            end.at if terminal else None,
            int(decision.counts_as_run),
            int(decision.counts_as_loss),
            attempt.job_id,
            attempt.n,
        ),
    )
    detail = decision.detail or end.error
    if end.exit_code is not None:
        detail = f"exit {end.exit_code}" + (f": {detail}" if detail else "")
    _transition(db, attempt.job_id, attempt.id, decision.state.value, end.at, end.source, detail)
    return True


def _keep_logs(
    db: sqlite3.Connection, attempt_id: str, stdout: bytes, stderr: bytes, cap: int
) -> None:
    """Store at most ``cap`` bytes per stream (the tail) and say what was cut."""
    for stream, data in (("stdout", stdout), ("stderr", stderr)):
        kept = data[-cap:] if cap and len(data) > cap else data
        db.execute(
            "INSERT INTO logs(attempt_id, stream, data, size, truncated) VALUES (?,?,?,?,?)"
            " ON CONFLICT(attempt_id, stream) DO UPDATE SET data=excluded.data,"
            " size=excluded.size, truncated=excluded.truncated",
            (attempt_id, stream, kept, len(data), int(len(kept) < len(data))),
        )
    db.execute("UPDATE attempts SET logs_saved=1 WHERE id=?", (attempt_id,))


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """A job and the logs of its latest attempt, read together."""

    job: JobRow
    logs: dict[str, LogRecord]


def _snapshot(db: sqlite3.Connection, job_id: str) -> JobSnapshot | None:
    row = db.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE id=?", (job_id,)).fetchone()
    if row is None:
        return None
    job = _job(row)
    if not job.attempts:
        return JobSnapshot(job, {})
    logs = db.execute(_LOGS_SQL, (f"{job.id}-{job.attempts}",)).fetchall()
    return JobSnapshot(job, _log_records(logs))


def _job(row: Sequence[Any]) -> JobRow:
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
    )


def _attempt(row: Sequence[Any]) -> AttemptRow:
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
    )


def _transition(
    db: sqlite3.Connection,
    job_id: str,
    attempt_id: str | None,
    state: str,
    at: float,
    source: str,
    detail: str | None = None,
) -> None:
    db.execute(
        "INSERT INTO transitions(job_id, attempt_id, state, at, source, detail)"
        " VALUES (?,?,?,?,?,?)",
        (job_id, attempt_id, state, at, source, detail),
    )


class _Write:
    """One caller's write in a group commit, and what became of it."""

    __slots__ = ("error", "finished", "fn", "result", "turn", "waited")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], *, waited: bool = True) -> None:
        self.fn = fn
        self.waited = waited
        # set when finished, or when this caller is to lead; made only for a caller that
        # has to wait (most writes lead their own commit, deferred ones are not waited for)
        self.turn: anyio.Event | None = None
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None


def _nothing(db: sqlite3.Connection) -> None:
    return None


def _commit(db: sqlite3.Connection, batch: list[_Write]) -> None:
    """In the worker thread: one transaction, one savepoint per write."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if len(batch) == 1:  # alone: its transaction is its savepoint
            batch[0].result = batch[0].fn(db)
        else:
            for write in batch:
                db.execute("SAVEPOINT w")
                try:
                    write.result = write.fn(db)
                except Exception as exc:
                    db.execute("ROLLBACK TO w")
                    write.error = exc
                db.execute("RELEASE w")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class Store:
    """An open store; use :meth:`open` (async context manager)."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, store_id: str) -> None:
        self._conn = conn
        self.path = path
        self.id = store_id
        self._queue: list[_Write] = []  # writes waiting for the next group commit
        self._writing = False  # a group commit is under way (its leader hands on the lead)

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path | str | None = None) -> AsyncIterator[Store]:
        target = Path(path) if path else default_path()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(target, isolation_level=None, timeout=30.0)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store {target}: {exc}") from exc
        try:
            store = cls(conn, target, "")
            await store._prepare()
            try:
                yield store
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await store.flush()
                    except (sqlite3.Error, ValueError) as exc:
                        log.warning("store: writes left at close failed: %s", exc)
        finally:
            with anyio.CancelScope(shield=True):
                await conn.close()

    async def _prepare(self) -> None:
        try:
            await self._conn.execute("PRAGMA journal_mode=WAL")
            await self._conn.execute("PRAGMA synchronous=NORMAL")
            await self._conn.execute("PRAGMA foreign_keys=ON")
            await self._migrate()
            row = await self._one("SELECT value FROM meta WHERE key='store_id'")
            self.id = str(row[0]) if row else ""
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a covey store: {exc}") from exc

    async def _migrate(self) -> None:
        await self._txn(self._migrate_in)

    def _migrate_in(self, db: sqlite3.Connection) -> None:
        cur = db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='meta'")
        version = 0
        if cur.fetchone():
            row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            version = int(row[0]) if row else 0
        else:
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if tables and tables[0]:
                raise StoreError(f"{self.path} holds another program's database")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this covey "
                f"({SCHEMA_VERSION}): upgrade covey"
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in filter(str.strip, _MIGRATIONS[step].split(";")):
                db.execute(statement)
            if step == 1:
                db.execute("INSERT INTO meta(key, value) VALUES ('store_id', ?)", (new_id(),))
            db.execute(
                "INSERT INTO meta(key, value) VALUES ('schema', ?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(step),),
            )

    async def _txn(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` atomically in a ``BEGIN IMMEDIATE`` transaction, shielded from cancellation.

        Group commit: writes that arrive while one transaction is in the worker thread are
        queued and then committed together, each in a savepoint of its own (one write's error
        undoes only that write). Nobody returns before its write is committed. Under load
        this turns many thread hops and WAL commits into one; alone, a write costs what it
        did before (one hop, no added wait).
        """
        write = _Write(fn)
        self._queue.append(write)
        with anyio.CancelScope(shield=True):
            if self._writing:
                write.turn = anyio.Event()
                await write.turn.wait()  # done by the leader, or handed the lead
            if not write.finished:
                await self._commit_queued()
        if write.error is not None:
            raise write.error
        return cast(T, write.result)

    def _later(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        """Queue a write that nobody waits for: it is committed with the next one, or by
        :meth:`flush`. Only for bookkeeping that reconcile redoes if a crash loses it."""
        self._queue.append(_Write(fn, waited=False))

    async def flush(self) -> None:
        """Commit the writes queued by :meth:`_later` (the tracker calls this every round)."""
        if self._queue:
            await self._txn(_nothing)

    async def _commit_queued(self) -> None:
        """Lead: commit everything queued in one hop, then hand the lead to who came since.

        The leader lets the tasks that are ready run first (one checkpoint): writes caused by
        the same wake-up (a job's end, and the next job's admission it frees room for) then
        share this commit instead of queueing for the next.
        """
        self._writing = True
        await anyio.lowlevel.checkpoint()
        batch, self._queue = self._queue, []
        try:
            await self._conn._execute(_commit, self._conn._conn, batch)  # type: ignore[no-untyped-call]
        except BaseException as exc:  # the whole transaction failed (BEGIN, COMMIT, closed)
            for write in batch:
                write.error = write.error or exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for write in batch:
                write.finished = True
                if write.turn is not None:
                    write.turn.set()
                if write.error is not None and not write.waited:
                    log.warning("store: a deferred write failed: %s", write.error)
            turn = next((w.turn for w in self._queue if w.turn is not None), None)
            if turn is not None:
                turn.set()  # still "writing": that caller leads the next commit
            else:
                self._writing = False

    async def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        rows = await self._all(sql, args)
        return rows[0] if rows else None

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        # One hop to the worker thread, and no cursor left open between two hops: with many
        # concurrent readers (Client.wait per job) every open cursor pins a prepared statement
        # in SQLite's memory (about 20 KB each, invisible to tracemalloc).
        return list(await self._conn.execute_fetchall(sql, args))

    async def data_version(self) -> int:
        """Changes when another connection commits (how the supervisor notices producers)."""
        row = await self._one("PRAGMA data_version")
        return int(row[0])

    # -- producers ----------------------------------------------------------------------

    async def create_batch(
        self,
        specs: Sequence[JobSpec],
        *,
        name: str | None = None,
        idempotency_key: str | None = None,
        service_names: Sequence[str | None] | None = None,
        owner: str = "queue",
    ) -> tuple[str, list[str], bool]:
        """Queue jobs as one batch: ``(batch id, job ids, already existed)``."""
        now = time.time()
        rows = []
        batch_id = new_id()
        job_ids = [new_id() for _ in specs]
        names = list(service_names or [None] * len(specs))
        for seq, (job_id, spec, base) in enumerate(zip(job_ids, specs, names, strict=True)):
            label = spec.name or f"job-{seq}"
            rows.append(
                (
                    job_id,
                    batch_id,
                    seq,
                    label,
                    base or f"covey-{job_id}",
                    spec.to_json(),
                    JobState.QUEUED.value,
                    now,
                    now,
                )
            )

        def txn(db: sqlite3.Connection) -> tuple[str, list[str], bool]:
            if idempotency_key is not None:
                cur = db.execute(
                    "SELECT id FROM batches WHERE idempotency_key=?", (idempotency_key,)
                )
                found = cur.fetchone()
                if found:
                    cur = db.execute(
                        "SELECT id FROM jobs WHERE batch_id=? ORDER BY seq", (found[0],)
                    )
                    return found[0], [r[0] for r in cur.fetchall()], True
            db.execute(
                "INSERT INTO batches(id, name, created, idempotency_key, total, owner)"
                " VALUES (?,?,?,?,?,?)",
                (batch_id, name, now, idempotency_key, len(specs), owner),
            )
            db.executemany(
                "INSERT INTO jobs(id, batch_id, seq, name, service_base, spec, state, created,"
                " updated) VALUES (?,?,?,?,?,?,?,?,?)",
                rows,
            )
            db.executemany(
                "INSERT INTO transitions(job_id, state, at, source)"
                " VALUES (?, 'queued', ?, 'covey')",
                [(job_id, now) for job_id in job_ids],
            )
            return batch_id, job_ids, False

        return await self._txn(txn)

    # -- the submitter --------------------------------------------------------------------

    async def due_jobs(self, now: float, limit: int, scope: Scope) -> list[JobRow]:
        """Queued jobs, and retrying jobs whose backoff is over, oldest first."""
        sql = (
            f"SELECT {_JOB_COLS} FROM jobs WHERE state IN ('queued', 'retrying')"
            " AND (not_before IS NULL OR not_before <= ?) AND cancel_requested=0"
        )
        args: list[Any] = [now]
        where, extra = scope.sql("batch_id")
        sql += where
        args += extra
        sql += " ORDER BY created, seq LIMIT ?"
        args.append(limit)
        return [_job(r) for r in await self._all(sql, args)]

    async def next_due(self, scope: Scope) -> float | None:
        where, extra = scope.sql("batch_id")
        row = await self._one(
            "SELECT min(not_before) FROM jobs WHERE state='retrying' AND cancel_requested=0"
            + where,
            extra,
        )
        return float(row[0]) if row and row[0] is not None else None

    async def begin_attempt(self, job: JobRow, mode: str) -> AttemptRow | None:
        """Record the attempt (and its fixed name) before anything is created on the engine.

        ``None`` when the job is no longer due as read (cancelled, or taken meanwhile): the
        submitter reads due jobs ahead, so the row it holds may be stale.
        """
        n = job.attempts + 1
        attempt_id = f"{job.id}-{n}"
        service = (
            job.service_base
            if n == 1 and job.service_base != f"covey-{job.id}"  # --name: the name itself
            else (f"{job.service_base}-{n}")
        )
        now = time.time()

        def txn(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE jobs SET state='pending', attempts=?, updated=?, not_before=NULL"
                " WHERE id=? AND attempts=? AND state IN ('queued', 'retrying')"
                " AND cancel_requested=0",
                (n, now, job.id, job.attempts),
            )
            if cur.rowcount != 1:
                return False
            db.execute(
                "INSERT INTO attempts(id, job_id, n, service, mode, phase, created)"
                " VALUES (?,?,?,?,?, 'creating', ?)",
                (attempt_id, job.id, n, service, mode, now),
            )
            _transition(db, job.id, attempt_id, "pending", now, "covey", service)
            return True

        if not await self._txn(txn):
            return None
        return AttemptRow(
            attempt_id,
            job.id,
            n,
            service,
            mode,
            None,
            "creating",
            None,
            None,
            None,
            None,
            now,
            None,
            None,
            None,
            False,
            False,
        )

    def attempt_created(self, attempt_id: str, engine_id: str) -> None:
        """Note the engine's id (deferred: reconcile finds an unnoted service by its name)."""
        self._later(
            lambda db: db.execute(
                "UPDATE attempts SET engine_id=?, phase=CASE phase WHEN 'creating' THEN 'pending'"
                " ELSE phase END WHERE id=?",
                (engine_id, attempt_id),
            )
        )

    # -- the tracker ----------------------------------------------------------------------

    def attempt_running(
        self, attempt_id: str, job_id: str, node: str | None, at: float, source: str
    ) -> None:
        """Note the start (deferred: committed with the next write or the tracker's flush;
        a crash loses at most this note, and reconcile's first listing says it again)."""

        def txn(db: sqlite3.Connection) -> None:
            cur = db.execute(
                "UPDATE attempts SET phase='running', started=?, node=coalesce(?, node)"
                " WHERE id=? AND phase IN ('creating', 'pending')",
                (at, node, attempt_id),
            )
            if cur.rowcount != 1:
                return
            db.execute(
                "UPDATE jobs SET state='running', node=coalesce(?, node),"
                " started=coalesce(started, ?), updated=? WHERE id=? AND state='pending'",
                (node, at, at, job_id),
            )
            _transition(db, job_id, attempt_id, "running", at, source, node)

        self._later(txn)

    async def set_stop_reason(self, attempt_id: str, reason: str) -> None:
        await self._txn(
            lambda db: db.execute(
                "UPDATE attempts SET stop_reason=coalesce(stop_reason, ?) WHERE id=?",
                (reason, attempt_id),
            )
        )

    async def finish_attempt(
        self,
        attempt: AttemptRow,
        *,
        outcome: Outcome,
        exit_code: int | None,
        error: str | None,
        node: str | None,
        at: float,
        source: str,
        decision: EndDecision,
    ) -> bool:
        """Record the end of an attempt and what it means for the job, exactly once."""
        return await self.finish(
            attempt, AttemptEnd(outcome, exit_code, error, node, at, source, decision)
        )

    async def finish(self, attempt: AttemptRow, end: AttemptEnd) -> bool:
        """:meth:`finish_attempt` with the end as one value; ``False`` if recorded before."""
        return await self._txn(lambda db: _finish(db, attempt, end))

    async def save_logs(
        self,
        attempt_id: str,
        stdout: bytes,
        stderr: bytes,
        cap: int = DEFAULT_LOG_CAP,
        *,
        snapshot: str | None = None,
    ) -> JobSnapshot | None:
        """Keep at most ``cap`` bytes per stream (the tail); truncation is recorded.

        With ``snapshot`` (a job id), the job and its latest logs are read back in the same
        transaction: what a result needs, without another round trip once the job settles.
        """

        def txn(db: sqlite3.Connection) -> JobSnapshot | None:
            _keep_logs(db, attempt_id, stdout, stderr, cap)
            return _snapshot(db, snapshot) if snapshot else None

        return await self._txn(txn)

    def mark_removed(self, attempt_id: str) -> None:
        """Deferred: if a crash loses it, reconcile removes again (the engine says not found)."""
        self._later(
            lambda db: db.execute("UPDATE attempts SET removed=1 WHERE id=?", (attempt_id,))
        )

    async def open_attempts(self, scope: Scope) -> list[AttemptRow]:
        """Attempts not yet ended, or ended but not yet cleaned up (logs, removal)."""
        where, extra = scope.sql("(SELECT batch_id FROM jobs WHERE jobs.id=attempts.job_id)")
        rows = await self._all(
            f"SELECT {_ATTEMPT_COLS} FROM attempts WHERE removed=0{where} ORDER BY created", extra
        )
        return [_attempt(r) for r in rows]

    async def open_attempts_all(self) -> list[AttemptRow]:
        """Every attempt not yet cleaned up, whoever owns its batch."""
        rows = await self._all(f"SELECT {_ATTEMPT_COLS} FROM attempts WHERE removed=0")
        return [_attempt(r) for r in rows]

    # -- operators ------------------------------------------------------------------------

    async def request_cancel(self, job_ids: Iterable[str]) -> list[JobRow]:
        """Mark jobs cancelled-on-request; queued/retrying ones end at once; returns live ones."""
        now = time.time()
        ids = list(job_ids)

        def txn(db: sqlite3.Connection) -> None:
            for job_id in ids:
                cur = db.execute(
                    "UPDATE jobs SET cancel_requested=1, updated=? WHERE id=? AND state NOT IN"
                    " ('succeeded','failed','timed_out','rejected','lost','cancelled')",
                    (now, job_id),
                )
                if cur.rowcount != 1:
                    continue
                cur = db.execute(
                    "UPDATE jobs SET state='cancelled', finished=?, error='cancelled' WHERE id=?"
                    " AND state IN ('queued','retrying')",
                    (now, job_id),
                )
                if cur.rowcount == 1:
                    _transition(db, job_id, None, "cancelled", now, "covey", "cancelled")

        await self._txn(txn)
        return [j for j in await self.jobs_by_id(ids) if not j.state.terminal]

    async def retry_jobs(self, job_ids: Iterable[str]) -> list[str]:
        """Queue ended, unsuccessful jobs again (new attempts); returns the ids re-queued."""
        now = time.time()
        done: list[str] = []
        ids = list(job_ids)

        def txn(db: sqlite3.Connection) -> None:
            for job_id in ids:
                cur = db.execute(
                    "UPDATE jobs SET state='queued', cancel_requested=0, not_before=NULL, runs=0,"
                    " losses=0, exit_code=NULL, error=NULL, finished=NULL, updated=? WHERE id=?"
                    " AND state IN ('failed','timed_out','rejected','lost','cancelled')",
                    (now, job_id),
                )
                if cur.rowcount == 1:
                    _transition(db, job_id, None, "queued", now, "covey", "retry")
                    done.append(job_id)

        await self._txn(txn)
        return done

    # -- reads ----------------------------------------------------------------------------

    async def batch(self, batch_id: str) -> BatchRow | None:
        row = await self._one(
            "SELECT id, name, created, total FROM batches WHERE id=?", (batch_id,)
        )
        return BatchRow(*row) if row else None

    async def job(self, job_id: str) -> JobRow | None:
        row = await self._one(f"SELECT {_JOB_COLS} FROM jobs WHERE id=?", (job_id,))
        return _job(row) if row else None

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these (live) jobs an operator asked to cancel (asked every poll round)."""
        found: set[str] = set()
        for start in range(0, len(job_ids), 500):
            chunk = list(job_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = await self._all(
                f"SELECT id FROM jobs WHERE cancel_requested=1 AND id IN ({marks})", chunk
            )
            found.update(str(r[0]) for r in rows)
        return found

    async def fail_job(
        self, job: JobRow, state: JobState, error: str, source: str = "covey"
    ) -> None:
        """End a job that never got an attempt (e.g. it can never fit on any node)."""
        now = time.time()

        def txn(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE jobs SET state=?, error=?, finished=?, updated=? WHERE id=?"
                " AND state IN ('queued','retrying')",
                (state.value, error, now, now, job.id),
            )
            _transition(db, job.id, None, state.value, now, source, error)

        await self._txn(txn)

    async def jobs_by_id(self, ids: Sequence[str]) -> list[JobRow]:
        out: list[JobRow] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            out += [
                _job(r)
                for r in await self._all(
                    f"SELECT {_JOB_COLS} FROM jobs WHERE id IN ({marks})", chunk
                )
            ]
        return out

    async def jobs(
        self,
        *,
        batch_id: str | None = None,
        states: Sequence[str] = (),
        name: str | None = None,
        limit: int | None = None,
    ) -> list[JobRow]:
        sql = f"SELECT {_JOB_COLS} FROM jobs WHERE 1=1"
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
        return [_job(r) for r in await self._all(sql, args)]

    async def batches(self, limit: int = 50) -> list[BatchRow]:
        rows = await self._all(
            "SELECT id, name, created, total FROM batches ORDER BY created DESC LIMIT ?", (limit,)
        )
        return [BatchRow(*r) for r in rows]

    async def attempts(self, job_id: str) -> list[AttemptRow]:
        rows = await self._all(
            f"SELECT {_ATTEMPT_COLS} FROM attempts WHERE job_id=? ORDER BY n", (job_id,)
        )
        return [_attempt(r) for r in rows]

    async def attempt(self, attempt_id: str) -> AttemptRow | None:
        row = await self._one(f"SELECT {_ATTEMPT_COLS} FROM attempts WHERE id=?", (attempt_id,))
        return _attempt(row) if row else None

    async def transitions(self, job_id: str) -> list[Transition]:
        rows = await self._all(
            "SELECT job_id, attempt_id, state, at, source, detail FROM transitions"
            " WHERE job_id=? ORDER BY id",
            (job_id,),
        )
        return [Transition(*r) for r in rows]

    async def logs(self, attempt_id: str) -> dict[str, LogRecord]:
        rows = await self._all(_LOGS_SQL, (attempt_id,))
        return _log_records(rows)

    async def job_with_logs(self, job_id: str) -> JobSnapshot | None:
        """A job and the logs of its latest attempt in one round trip (what a result needs)."""
        found = await self._conn._execute(_snapshot, self._conn._conn, job_id)  # type: ignore[no-untyped-call]
        return cast("JobSnapshot | None", found)

    async def counts(self, batch_id: str | None = None) -> dict[str, int]:
        sql = "SELECT state, count(*) FROM jobs"
        args: tuple[Any, ...] = ()
        if batch_id:
            sql += " WHERE batch_id=?"
            args = (batch_id,)
        rows = await self._all(sql + " GROUP BY state", args)
        return {r[0]: r[1] for r in rows}

    async def resolve(self, ref: str) -> tuple[str, list[str]]:
        """A job id, batch id, job name or unique prefix -> ("job"|"batch", job ids)."""
        if await self.job(ref):
            return "job", [ref]
        if await self.batch(ref):
            return "batch", [j.id for j in await self.jobs(batch_id=ref)]
        rows = await self._all("SELECT id FROM jobs WHERE id LIKE ? LIMIT 2", (ref + "%",))
        if len(rows) == 1:
            return "job", [rows[0][0]]
        batches = await self._all("SELECT id FROM batches WHERE id LIKE ? LIMIT 2", (ref + "%",))
        if len(batches) == 1 and not rows:
            return "batch", [j.id for j in await self.jobs(batch_id=batches[0][0])]
        named = await self._all(
            "SELECT id FROM jobs WHERE name=? ORDER BY created DESC LIMIT 2", (ref,)
        )
        if len(named) == 1:
            return "job", [named[0][0]]
        if len(rows) > 1 or len(batches) > 1 or len(named) > 1:
            raise StoreError(f"{ref!r} is ambiguous: give more of the id")
        raise StoreError(f"no job or batch {ref!r} in {self.path}")


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
