"""The store on a real SQLite file: schema, producers, the attempt life cycle, operators, reads."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import anyio.lowlevel
import pytest

import covey.store.handle
from covey import holders
from covey.errors import StoreError
from covey.spec import JobSpec, RetryPolicy
from covey.states import JobState, Outcome
from covey.store import (
    SCHEMA_VERSION,
    AttemptEnd,
    AttemptRow,
    HolderRow,
    JobRow,
    Scope,
    Store,
    writes,
)
from covey.store.writer import GroupWriter, Tx, Write

SPEC = JobSpec(image="busybox:latest", command=("true",))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(tmp_path / "covey.db") as opened:
        yield opened


async def one_job(store: Store, spec: JobSpec = SPEC, **kw: object) -> JobRow:
    _, (job_id,), _ = await store.create_batch([spec], **kw)  # type: ignore[arg-type]
    job = await store.job(job_id)
    assert job is not None
    return job


async def reload(store: Store, job: JobRow) -> JobRow:
    fresh = await store.job(job.id)
    assert fresh is not None
    return fresh


async def end(
    store: Store,
    attempt: AttemptRow,
    state: JobState,
    *,
    outcome: Outcome | None = None,
    code: int | None = None,
    error: str | None = None,
    node: str | None = None,
    at: float | None = None,
    source: str = "poll",
) -> bool:
    """Record an attempt's end, the outcome named like the state; whether it was recorded."""
    when = time.time() if at is None else at
    ended = AttemptEnd(outcome or Outcome(state.value), code, error, node, when, source)
    return await store.finish(attempt, ended) is not None


# -- schema ------------------------------------------------------------------------------------


async def test_schema_is_created_versioned_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "covey.db"
    async with Store.open(path) as first:
        store_id = first.id
        assert len(store_id) == 12
    with sqlite3.connect(path) as db:
        meta = dict(db.execute("SELECT key, value FROM meta"))
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert meta == {"schema": str(SCHEMA_VERSION), "store_id": store_id}
    assert {"meta", "batches", "jobs", "attempts", "transitions", "logs"} <= tables
    assert journal == "wal"
    async with Store.open(path) as again:  # reopening migrates nothing and keeps the id
        assert again.id == store_id


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    async with Store.open(path):
        pass
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match=r"schema version \d+, newer than this covey.*upgrade"):
        async with Store.open(path):
            pass
    with sqlite3.connect(path) as db:  # and nothing was changed
        row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    assert row == (str(SCHEMA_VERSION + 1),)


async def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(StoreError, match="another program's database"):
        async with Store.open(path):
            pass
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert tables == ["customers"]


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    with pytest.raises(StoreError, match="not a covey store"):
        async with Store.open(path):
            pass


async def test_an_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open the store"):
        async with Store.open(blocker / "covey.db"):
            pass


# -- producers ---------------------------------------------------------------------------------


async def test_create_batch_queues_jobs_with_history(store: Store) -> None:
    specs = [SPEC.with_changes(name="first"), SPEC, SPEC.with_changes(index=7)]
    batch_id, job_ids, existed = await store.create_batch(specs, name="b.yaml")
    assert not existed
    assert len(set(job_ids)) == 3
    batch = await store.batch(batch_id)
    assert batch is not None
    assert (batch.name, batch.total) == ("b.yaml", 3)
    jobs = await store.jobs(batch_id=batch_id)
    assert [j.id for j in jobs] == job_ids
    assert [j.name for j in jobs] == ["first", "job-1", "job-2"]
    assert [j.seq for j in jobs] == [0, 1, 2]
    assert all(j.state is JobState.QUEUED and j.attempts == 0 for j in jobs)
    assert jobs[2].spec == specs[2]  # the spec survives the JSON round trip
    assert all(j.service_base == f"covey-{j.id}" for j in jobs)
    history = await store.transitions(job_ids[0])
    assert [(t.state, t.source, t.attempt_id) for t in history] == [("queued", "covey", None)]
    assert await store.counts(batch_id) == {"queued": 3}


async def test_idempotency_key_returns_the_same_batch(store: Store) -> None:
    first = await store.create_batch([SPEC, SPEC], idempotency_key="nightly-42")
    again = await store.create_batch([SPEC, SPEC, SPEC], idempotency_key="nightly-42")
    assert again == (first[0], first[1], True)
    assert len(await store.jobs()) == 2
    other = await store.create_batch([SPEC], idempotency_key="nightly-43")
    plain = await store.create_batch([SPEC])
    assert not other[2] and not plain[2]
    assert len({first[0], other[0], plain[0]}) == 3
    assert len(await store.batches()) == 3


async def test_given_service_name_is_used_for_the_first_attempt_only(store: Store) -> None:
    job = await one_job(store, service_names=["nightly-report"])
    assert job.service_base == "nightly-report"
    first = await store.begin_attempt(job, "swarm")
    assert (first.id, first.n, first.service) == (f"{job.id}-1", 1, "nightly-report")
    plain = await one_job(store)
    attempt = await store.begin_attempt(plain, "swarm")
    assert attempt.service == f"covey-{plain.id}-1"


# -- the attempt life cycle --------------------------------------------------------------------


async def test_attempt_life_cycle_records_transitions_with_sources(store: Store) -> None:
    job = await one_job(store)
    attempt = await store.begin_attempt(job, "swarm")
    assert (await reload(store, job)).state is JobState.PENDING
    row = await store.attempt(attempt.id)
    assert row is not None
    assert (row.phase, row.engine_id, row.mode) == ("creating", None, "swarm")

    store.attempt_created(attempt.id, "svc123")  # deferred: committed by the next flush
    await store.flush()
    row = await store.attempt(attempt.id)
    assert row is not None
    assert (row.phase, row.engine_id) == ("pending", "svc123")

    t0 = time.time()
    store.attempt_running(attempt.id, job.id, "node-a", t0, "event")
    store.attempt_running(attempt.id, job.id, "node-b", t0 + 1, "poll")  # no-op: running already
    await store.flush()
    running = await reload(store, job)
    assert (running.state, running.node, running.started) == (JobState.RUNNING, "node-a", t0)

    assert await end(store, attempt, JobState.SUCCEEDED, code=0, at=t0 + 2)
    ended = await reload(store, job)
    assert (ended.state, ended.exit_code, ended.finished, ended.runs) == (
        JobState.SUCCEEDED,
        0,
        t0 + 2,
        1,
    )
    assert ended.node == "node-a"  # kept when the end does not say where
    row = await store.attempt(attempt.id)
    assert row is not None
    assert (row.phase, row.outcome, row.exit_code, row.started, row.ended) == (
        "ended",
        Outcome.SUCCEEDED,
        0,
        t0,
        t0 + 2,
    )
    history = [(t.state, t.source, t.attempt_id) for t in await store.transitions(job.id)]
    assert history == [
        ("queued", "covey", None),
        ("pending", "covey", attempt.id),
        ("running", "event", attempt.id),
        ("succeeded", "poll", attempt.id),
    ]
    last = (await store.transitions(job.id))[-1]
    assert last.detail == "exit 0"


async def test_an_end_is_recorded_only_once(store: Store) -> None:
    job = await one_job(store)
    attempt = await store.begin_attempt(job, "swarm")
    store.attempt_running(attempt.id, job.id, "n1", time.time(), "poll")
    first = await end(
        store, attempt, JobState.FAILED, code=3, error="task: non-zero exit (3)", node="n1"
    )
    # e.g. a late event, or a node that came back
    late = await end(store, attempt, JobState.SUCCEEDED, code=0, node="n2", source="event")
    assert (first, late) == (True, False)
    ended = await reload(store, job)
    assert (ended.state, ended.exit_code, ended.node, ended.runs) == (JobState.FAILED, 3, "n1", 1)
    states = [t.state for t in await store.transitions(job.id)]
    assert states == ["queued", "pending", "running", "failed"]
    store.attempt_running(attempt.id, job.id, "n2", time.time(), "event")
    await store.flush()
    assert [t.state for t in await store.transitions(job.id)] == states  # nothing after the end


async def test_end_before_running_is_recorded(store: Store) -> None:
    job = await one_job(store)
    attempt = await store.begin_attempt(job, "swarm")
    assert await end(store, attempt, JobState.REJECTED, error="No such image: nope")
    ended = await reload(store, job)
    assert (ended.state, ended.exit_code, ended.error) == (
        JobState.REJECTED,
        None,
        "No such image: nope",
    )
    assert ended.started is None
    assert (await store.transitions(job.id))[-1].detail == "No such image: nope"


async def test_retry_decisions_move_the_job_through_retrying(store: Store) -> None:
    policy = RetryPolicy(attempts=3, backoff=1.0, on_exit_codes=(75,))
    job = await one_job(store, SPEC.with_changes(retry=policy))
    now = time.time()
    for n in (1, 2, 3):
        job = await reload(store, job)
        assert [j.id for j in await store.due_jobs(now + 1000, 10, Scope(None))] == [job.id]
        attempt = await store.begin_attempt(job, "swarm")
        assert (attempt.n, attempt.service) == (n, f"covey-{job.id}-{n}")
        assert await end(store, attempt, JobState.FAILED, code=75, at=now)
        job = await reload(store, job)
        if n < 3:
            assert job.state is JobState.RETRYING
            assert job.not_before == pytest.approx(now + 2.0 ** (n - 1))
            assert job.finished is None
            assert await store.next_due(Scope(None)) == pytest.approx(job.not_before)
        else:
            assert job.state is JobState.FAILED
            assert job.finished == now
    assert (job.attempts, job.runs, job.losses, job.exit_code) == (3, 3, 0, 75)
    history = [(t.state, t.attempt_id) for t in await store.transitions(job.id)]
    assert [s for s, _ in history] == [
        "queued",
        "pending",
        "retrying",
        "pending",
        "retrying",
        "pending",
        "failed",
    ]
    assert [a.n for a in await store.attempts(job.id)] == [1, 2, 3]
    details = [t.detail for t in await store.transitions(job.id) if t.state == "retrying"]
    assert details == [
        "exit 75: exit code 75 is retryable (run 2 of 3)",
        "exit 75: exit code 75 is retryable (run 3 of 3)",
    ]


async def test_a_loss_uses_the_loss_budget(store: Store) -> None:
    job = await one_job(store)
    attempt = await store.begin_attempt(job, "swarm")
    await end(store, attempt, JobState.LOST)
    job = await reload(store, job)
    assert (job.state, job.runs, job.losses) == (JobState.RETRYING, 0, 1)


async def test_a_cancel_recorded_while_an_attempt_ran_wins_over_its_retry(store: Store) -> None:
    """Issue 12, item 1: the end is decided from the job as the store holds it when the end
    is recorded; a retry decided from a copy read before the cancel left jobs stuck."""
    policy = RetryPolicy(attempts=3, backoff=5.0)
    job = await one_job(store, SPEC.with_changes(retry=policy))
    attempt = await store.begin_attempt(job, "swarm")
    assert attempt is not None
    await store.request_cancel([job.id])  # while the attempt runs
    assert await end(store, attempt, JobState.FAILED, code=1)
    job = await reload(store, job)
    assert (job.state, job.not_before) == (JobState.CANCELLED, None)
    assert job.finished is not None
    assert await store.due_jobs(time.time() + 1000, 10, Scope(None)) == []


async def test_a_success_before_the_cancel_reached_it_stays_a_success(store: Store) -> None:
    job = await one_job(store)
    attempt = await store.begin_attempt(job, "swarm")
    assert attempt is not None
    await store.request_cancel([job.id])
    assert await end(store, attempt, JobState.SUCCEEDED, code=0)
    assert (await reload(store, job)).state is JobState.SUCCEEDED


# -- logs --------------------------------------------------------------------------------------


async def test_save_logs_keeps_the_tail_and_records_truncation(store: Store) -> None:
    job = await one_job(store)
    attempt = await store.begin_attempt(job, "swarm")
    await store.save_logs(attempt.id, b"0123456789", b"err\n", cap=4)
    logs = await store.logs(attempt.id)
    assert (logs["stdout"].data, logs["stdout"].size, logs["stdout"].truncated) == (
        b"6789",
        10,
        True,
    )
    assert (logs["stderr"].data, logs["stderr"].size, logs["stderr"].truncated) == (
        b"err\n",
        4,
        False,
    )
    row = await store.attempt(attempt.id)
    assert row is not None and row.logs_saved
    # saving again replaces (e.g. the reaper after `covey logs -f` saved a partial copy)
    await store.save_logs(attempt.id, b"abc", b"", cap=0)
    logs = await store.logs(attempt.id)
    assert (logs["stdout"].data, logs["stdout"].truncated) == (b"abc", False)
    assert (logs["stderr"].data, logs["stderr"].size) == (b"", 0)


async def test_cap_zero_keeps_everything(store: Store) -> None:
    job = await one_job(store)
    attempt = await store.begin_attempt(job, "swarm")
    big = bytes(range(256)) * 5000
    await store.save_logs(attempt.id, big, b"", cap=0)
    logs = await store.logs(attempt.id)
    assert logs["stdout"].data == big
    assert not logs["stdout"].truncated


# -- operators ---------------------------------------------------------------------------------


async def test_request_cancel_ends_queued_jobs_at_once(store: Store) -> None:
    _, (queued, running, done), _ = await store.create_batch([SPEC, SPEC, SPEC])
    jobs = {j.id: j for j in await store.jobs_by_id([queued, running, done])}
    attempt = await store.begin_attempt(jobs[running], "swarm")
    store.attempt_running(attempt.id, running, "n1", time.time(), "poll")
    finished = await store.begin_attempt(jobs[done], "swarm")
    await end(store, finished, JobState.SUCCEEDED, code=0)

    live = await store.request_cancel([queued, running, done])

    assert [j.id for j in live] == [running]
    assert live[0].cancel_requested
    assert live[0].state is JobState.RUNNING  # the orchestrator stops it and records the end
    cancelled = await store.job(queued)
    assert cancelled is not None
    assert (cancelled.state, cancelled.error) == (JobState.CANCELLED, "cancelled")
    assert cancelled.finished is not None
    assert (await store.transitions(queued))[-1].state == "cancelled"
    untouched = await store.job(done)
    assert untouched is not None
    assert (untouched.state, untouched.cancel_requested) == (JobState.SUCCEEDED, False)
    assert await store.cancel_requested([running, done]) == {running}
    assert await store.due_jobs(time.time() + 1000, 10, Scope(None)) == []


async def test_retry_jobs_requeues_only_unsuccessful_ended_jobs(store: Store) -> None:
    _, ids, _ = await store.create_batch([SPEC, SPEC, SPEC])
    failed, succeeded, queued = ids
    for job_id, state in ((failed, JobState.FAILED), (succeeded, JobState.SUCCEEDED)):
        job = await store.job(job_id)
        assert job is not None
        attempt = await store.begin_attempt(job, "swarm")
        await end(store, attempt, state, code=0 if state is JobState.SUCCEEDED else 1)
    assert await store.retry_jobs(ids) == [failed]
    job = await store.job(failed)
    assert job is not None
    assert (job.state, job.exit_code, job.finished, job.runs, job.attempts) == (
        JobState.QUEUED,
        None,
        None,
        0,
        1,
    )
    assert (await store.transitions(failed))[-1].detail == "retry"
    again = await store.begin_attempt(job, "swarm")
    assert (again.n, again.service) == (2, f"covey-{failed}-2")
    due = await store.due_jobs(time.time(), 10, Scope(None))
    assert [j.id for j in due] == [queued]


# -- reads -------------------------------------------------------------------------------------


async def test_resolve_by_id_prefix_name_and_batch(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = iter(["b0b0b0b0b0b0", "aaaa11110000", "aaaa22220000", "cccc33330000"])
    monkeypatch.setattr(covey.store.handle, "new_id", lambda: next(ids))
    batch_id, (first, second, third), _ = await store.create_batch(
        [SPEC.with_changes(name="alpha"), SPEC.with_changes(name="beta"), SPEC]
    )
    assert batch_id == "b0b0b0b0b0b0"
    assert await store.resolve(first) == ("job", [first])
    assert await store.resolve(batch_id) == ("batch", [first, second, third])
    assert await store.resolve("b0b0") == ("batch", [first, second, third])
    assert await store.resolve("aaaa2") == ("job", [second])
    assert await store.resolve("cccc") == ("job", [third])
    assert await store.resolve("alpha") == ("job", [first])
    with pytest.raises(StoreError, match="ambiguous"):
        await store.resolve("aaaa")
    with pytest.raises(StoreError, match="no job or batch 'zzz'"):
        await store.resolve("zzz")


async def test_due_jobs_respects_not_before_scope_and_limit(store: Store) -> None:
    retried = SPEC.with_changes(retry=RetryPolicy(attempts=2, backoff=30.0))
    queue_batch, queue_ids, _ = await store.create_batch([retried, SPEC, SPEC])
    run_batch, run_ids, _ = await store.create_batch([SPEC, SPEC], owner="run")
    now = time.time()

    def ids(rows: list[JobRow]) -> list[str]:
        return [r.id for r in rows]

    assert ids(await store.due_jobs(now, 10, Scope(None))) == queue_ids
    assert ids(await store.due_jobs(now, 10, Scope((run_batch,)))) == run_ids
    assert ids(await store.due_jobs(now, 10, Scope((queue_batch, run_batch)))) == (
        queue_ids + run_ids
    )
    assert await store.due_jobs(now, 10, Scope(())) == []
    assert ids(await store.due_jobs(now, 2, Scope(None))) == queue_ids[:2]

    # the first queue job fails and must wait 30 s before its retry
    job = await store.job(queue_ids[0])
    assert job is not None
    attempt = await store.begin_attempt(job, "swarm")
    assert ids(await store.due_jobs(now, 10, Scope(None))) == queue_ids[1:]  # pending: not due
    await end(store, attempt, JobState.FAILED, code=1, at=now)
    # the backoff counts from when the end was recorded (a moment after ``now``)
    assert ids(await store.due_jobs(now, 10, Scope(None))) == queue_ids[1:]
    assert (
        ids(await store.due_jobs(now + 29, 10, Scope(None))) == queue_ids[1:]
    )  # backoff counts from the recording
    assert ids(await store.due_jobs(now + 31, 10, Scope(None))) == queue_ids
    assert await store.next_due(Scope(None)) == pytest.approx(now + 30, abs=1.0)
    assert await store.next_due(Scope((run_batch,))) is None


async def test_fail_job_ends_a_job_that_never_got_an_attempt(store: Store) -> None:
    job = await one_job(store)
    await store.fail_job(job, JobState.REJECTED, "cannot run: needs 64 CPUs")
    job = await reload(store, job)
    assert (job.state, job.error, job.attempts) == (
        JobState.REJECTED,
        "cannot run: needs 64 CPUs",
        0,
    )
    assert [t.state for t in await store.transitions(job.id)] == ["queued", "rejected"]


async def test_open_attempts_follow_removal_and_scope(store: Store) -> None:
    queue_batch, (q,), _ = await store.create_batch([SPEC])
    run_batch, (r,), _ = await store.create_batch([SPEC], owner="run")
    attempts = {}
    for job in await store.jobs_by_id([q, r]):
        attempts[job.id] = await store.begin_attempt(job, "swarm")
    assert [a.job_id for a in await store.open_attempts(Scope(None))] == [q]
    assert [a.job_id for a in await store.open_attempts(Scope((run_batch,)))] == [r]
    assert {a.job_id for a in await store.open_attempts_all()} == {q, r}
    store.mark_removed(attempts[q].id)
    await store.flush()
    assert await store.open_attempts(Scope(None)) == []
    assert await store.open_attempts(Scope((queue_batch,))) == []
    assert [a.job_id for a in await store.open_attempts_all()] == [r]


async def test_concurrent_writes_share_commits_and_fail_alone(store: Store) -> None:
    """Group commit: writes queued behind a running commit go in together, each atomic on
    its own; a failing one raises to its own caller and undoes only itself."""
    _, ids, _ = await store.create_batch([SPEC] * 20)
    jobs = await store.jobs_by_id(ids)
    bad = jobs[7]
    commits = 0
    writer = store._writer
    assert writer is not None
    real = writer._transaction

    async def counting(batch: Any) -> None:
        nonlocal commits
        commits += 1
        await real(batch)

    writer._transaction = counting  # type: ignore[method-assign]

    async def write(job: JobRow) -> str:
        if job is bad:

            async def broken(tx: Tx) -> None:
                await tx.run("UPDATE jobs SET error='half' WHERE id=?", (job.id,))
                await tx.run("INSERT INTO no_such_table VALUES (1)")

            try:
                await writer.write(broken)
            except sqlite3.OperationalError:
                return "failed"
            return "committed"
        attempt = await store.begin_attempt(job, "swarm")
        return "committed" if attempt else "not due"

    outcomes: dict[str, str] = {}

    async def one(job: JobRow) -> None:
        outcomes[job.id] = await write(job)

    async with anyio.create_task_group() as tg:
        for job in jobs:
            tg.start_soon(one, job)
    assert outcomes[bad.id] == "failed"
    assert sum(v == "committed" for v in outcomes.values()) == 19
    assert commits < 10  # the writes shared transactions
    states = {j.id: (j.state, j.error) for j in await store.jobs_by_id(ids)}
    assert states[bad.id] == (JobState.QUEUED, None)  # its half was undone, nothing else
    assert all(s == (JobState.PENDING, None) for i, s in states.items() if i != bad.id)


async def test_deferred_writes_ride_with_the_next_commit(store: Store) -> None:
    job = await one_job(store)
    attempt = await store.begin_attempt(job, "swarm")
    assert attempt is not None
    store.attempt_created(attempt.id, "svc-1")
    store.attempt_running(attempt.id, job.id, "n1", time.time(), "event")
    assert await end(store, attempt, JobState.SUCCEEDED, code=0)  # commits the notes first
    row = await store.attempt(attempt.id)
    assert row is not None
    assert (row.engine_id, row.phase, row.node) == ("svc-1", "ended", "n1")
    states = [t.state for t in await store.transitions(job.id)]
    assert states == ["queued", "pending", "running", "succeeded"]


async def test_deferred_writes_are_committed_at_close(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    async with Store.open(path) as store:
        job = await one_job(store)
        attempt = await store.begin_attempt(job, "swarm")
        assert attempt is not None
        store.mark_removed(attempt.id)
    async with Store.open(path) as again:
        assert await again.open_attempts_all() == []


async def test_a_stale_due_row_starts_no_attempt(store: Store) -> None:
    job = await one_job(store)
    await store.request_cancel([job.id])
    assert await store.begin_attempt(job, "swarm") is None
    assert await store.attempts(job.id) == []


async def test_two_connections_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    async with Store.open(path) as supervisor, Store.open(path) as producer:
        assert supervisor.id == producer.id
        before = await supervisor.data_version()
        for _ in range(3):
            await producer.create_batch([SPEC])
        assert await supervisor.data_version() != before
        assert len(await supervisor.due_jobs(time.time(), 10, Scope(None))) == 3


# -- who can read the store --------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)  # the usual one: what it lets through is what a store must not
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(covey.store.handle, "_warned", set())


async def test_a_new_store_is_for_its_owner_only(tmp_path: Path, umask_022: None) -> None:
    """It holds every job's environment and logs: the file, its WAL and SHM, and every
    directory made for it are the owner's only."""
    path = tmp_path / "data" / "covey" / "covey.db"
    async with Store.open(path) as store:
        await store.create_batch([SPEC.with_changes(env=(("TOKEN", "s3cret"),))])
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        assert {p.name: mode(p) for p in (path, wal, shm)} == {
            "covey.db": 0o600,
            "covey.db-wal": 0o600,
            "covey.db-shm": 0o600,
        }
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert mode(path.parent.parent) == 0o700


async def test_a_store_others_can_read_is_warned_about_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fresh_warnings: None, umask_022: None
) -> None:
    path = tmp_path / "covey.db"
    async with Store.open(path):
        pass
    assert capsys.readouterr().err == ""  # a new store: nothing to say
    async with Store.open(path):
        pass
    assert capsys.readouterr().err == ""  # mode 600: nothing to say
    path.chmod(0o644)
    for readonly in (False, True, False):
        async with Store.open(path, readonly=readonly) as store:
            assert await store.jobs() == []
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines  # once per process, however often it is opened
    assert str(path) in lines[0]
    assert f"chmod 600 {path}" in lines[0]
    assert "644" in lines[0]
    assert mode(path) == 0o644  # a warning, not a change behind the user's back


# -- locks held by other processes -------------------------------------------------------------


@pytest.fixture
def other_writer(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's connection to the store, e.g. a sqlite3 shell (not in a transaction
    until the test begins one)."""
    conn = sqlite3.connect(tmp_path / "covey.db", isolation_level=None, timeout=0)
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


async def test_reads_never_wait_for_another_process_write(
    tmp_path: Path, other_writer: sqlite3.Connection
) -> None:
    """``ls``, ``show`` and ``wait`` open the store read-only: they read what is committed
    while another process holds the write lock, at once."""
    path = tmp_path / "covey.db"
    async with Store.open(path) as store:
        batch_id, ids, _ = await store.create_batch([SPEC, SPEC])
    other_writer.execute("BEGIN IMMEDIATE")
    other_writer.execute("UPDATE jobs SET state='running'")  # not committed
    started = time.monotonic()
    async with Store.open(path, readonly=True) as reader:
        assert [j.state for j in await reader.jobs()] == [JobState.QUEUED] * 2
        assert await reader.counts(batch_id) == {"queued": 2}
        assert await reader.resolve(batch_id) == ("batch", ids)
        assert await reader.terminal_among(ids) == set()
        with pytest.raises(StoreError, match="read-only"):
            await reader.create_batch([SPEC])
    assert time.monotonic() - started < 1.0  # no busy wait for a lock
    assert other_writer.in_transaction


async def test_a_write_on_a_locked_store_fails_clearly_after_its_patience(
    tmp_path: Path, other_writer: sqlite3.Connection
) -> None:
    path = tmp_path / "covey.db"
    async with Store.open(path):
        pass
    other_writer.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    async with Store.open(path, lock_patience=0.5) as store:  # opening takes no write lock
        assert await store.jobs() == []
        with pytest.raises(StoreError) as locked:
            await store.create_batch([SPEC])
    waited = time.monotonic() - started
    message = str(locked.value)
    assert "locked by another process" in message and str(path) in message
    assert "not a covey store" not in message
    assert isinstance(locked.value.__cause__, sqlite3.OperationalError)
    assert 0.4 < waited < 3.0  # its patience, not SQLite's busy timeout on top
    other_writer.execute("ROLLBACK")
    async with Store.open(path, lock_patience=0.5) as store:
        assert await store.jobs() == []  # nothing half written


async def test_without_a_limit_a_write_waits_for_the_lock(
    tmp_path: Path, other_writer: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor's patience (``None``): a lock held longer than SQLite's busy timeout
    is waited out (covey's own retries, not one busy wait), and the write goes in."""
    monkeypatch.setattr(covey.store.handle, "BUSY_TIMEOUT", 0.1)
    path = tmp_path / "covey.db"
    async with Store.open(path, lock_patience=None) as store:
        other_writer.execute("BEGIN IMMEDIATE")
        other_writer.execute("INSERT INTO meta(key, value) VALUES ('shell', 'was here')")
        done: list[float] = []

        async def write() -> None:
            await store.create_batch([SPEC])
            done.append(time.monotonic())

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            await anyio.sleep(0.8)  # eight busy timeouts
            assert done == []
            released = time.monotonic()
            other_writer.execute("COMMIT")
        assert done and done[0] >= released
        assert len(await store.jobs()) == 1
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='shell'").fetchone() == ("was here",)


# -- holders: nothing owned by a process that is gone ------------------------------------------


def gone_holder(role: str, ident: str = "deadbeef0001") -> HolderRow:
    """The row a killed process left: its pid no longer exists."""
    child = subprocess.Popen(["true"])
    child.wait()
    return HolderRow(ident, role, child.pid, holders.host(), time.time() - 60, 1.0, 1.0)


async def add_holder(store: Store, holder: HolderRow) -> None:
    await store._txn(lambda tx: writes.add_holder(tx, holder))


async def test_a_second_supervisor_is_refused_while_the_first_lives(store: Store) -> None:
    first, other = await store.hold("supervisor", exclusive=True)
    assert other is None
    assert [h.id for h in await store.holders()] == [first.id]
    second, running = await store.hold("supervisor", exclusive=True)
    assert running is not None and running.id == first.id  # named, for the message
    assert (running.pid, running.host) == (os.getpid(), holders.host())
    assert [h.id for h in await store.holders()] == [first.id]  # the second is not registered
    # foreground holders are not exclusive, of each other or of the supervisor
    run, none = await store.hold("run")
    assert none is None
    assert {h.id for h in await store.holders()} == {first.id, run.id}
    assert second.id not in {h.id for h in await store.holders()}


@pytest.mark.parametrize("how", ["killed", "pid reused", "other host, silent"])
async def test_a_supervisor_takes_over_from_one_that_is_gone(store: Store, how: str) -> None:
    if how == "killed":
        dead = gone_holder("supervisor")
    elif how == "pid reused":  # e.g. the same pid in a restarted container
        dead = replace(holders.this_process("supervisor"), id="deadbeef0001", proc_started=1.0)
    else:
        dead = HolderRow("deadbeef0001", "supervisor", os.getpid(), "elsewhere", 1.0, 1.0, 1.0)
    await add_holder(store, dead)
    ours, other = await store.hold("supervisor", exclusive=True)
    assert other is None
    assert [h.id for h in await store.holders()] == [ours.id]


async def test_a_live_supervisor_on_another_host_is_respected(store: Store) -> None:
    now = time.time()
    remote = HolderRow("cafe00000001", "supervisor", 1, "elsewhere", 1.0, now, now)
    await add_holder(store, remote)
    _, other = await store.hold("supervisor", exclusive=True)
    assert other == remote


async def test_dead_foreground_holders_hand_their_work_to_the_queue(store: Store) -> None:
    """``covey batch`` killed with jobs in flight: its unfinished batches go to the queue
    (a supervisor adopts them), its finished ones are only let go; a live holder keeps its
    own."""
    live, _ = await store.hold("run")
    dead = gone_holder("run")
    await add_holder(store, dead)
    unfinished, (u_done, u_open), _ = await store.create_batch(
        [SPEC, SPEC], owner="run", holder=dead.id
    )
    finished, (f_one, f_two), _ = await store.create_batch(
        [SPEC, SPEC], owner="run", holder=dead.id
    )
    mine, (m_one,), _ = await store.create_batch([SPEC], owner="run", holder=live.id)
    await store.request_cancel([u_done, f_one, f_two])  # queued: ended at once
    assert await store.due_jobs(time.time(), 10, Scope(None)) == []

    assert await store.release_dead_holders() == 1

    assert [h.id for h in await store.holders()] == [live.id]
    owners = {}
    for batch_id in (unfinished, finished, mine):
        batch = await store.batch(batch_id)
        assert batch is not None
        owners[batch_id] = batch.owner
    assert owners == {unfinished: "queue", finished: "run", mine: "run"}
    assert await store.holders_of([u_done, u_open, f_one, f_two]) == set()
    assert await store.holders_of([m_one]) == {live.id}
    due = await store.due_jobs(time.time(), 10, Scope(None))
    assert [j.id for j in due] == [u_open]  # the supervisor's now
    assert await store.release_dead_holders() == 0  # nothing left to hand over
    assert await store.unhold(live.id) == 1  # a clean exit: the same, for its own work
    assert [j.id for j in await store.due_jobs(time.time(), 10, Scope(None))] == [u_open, m_one]


async def test_holding_releases_the_dead_first(store: Store) -> None:
    dead = gone_holder("run")
    await add_holder(store, dead)
    _, (job_id,), _ = await store.create_batch([SPEC], owner="run", holder=dead.id)
    await store.hold("supervisor", exclusive=True)
    assert [j.id for j in await store.due_jobs(time.time(), 10, Scope(None))] == [job_id]
    assert dead.id not in {h.id for h in await store.holders()}


# -- the group writer --------------------------------------------------------------------------


@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    async with aiosqlite.connect(tmp_path / "w.db", isolation_level=None) as db:
        await db.execute_fetchall("PRAGMA journal_mode=WAL")
        await db.execute_fetchall("CREATE TABLE t (k TEXT PRIMARY KEY)")
        yield db


def committed(tmp_path: Path) -> list[str]:
    """What another connection sees."""
    with sqlite3.connect(tmp_path / "w.db") as db:
        return [r[0] for r in db.execute("SELECT k FROM t ORDER BY k")]


def insert(key: str, *, then_fail: bool = False) -> Write:
    async def fn(tx: Tx) -> str:
        await tx.run("INSERT INTO t VALUES (?)", (key,))
        if then_fail:
            raise ValueError(f"{key} failed")
        row = await tx.one("SELECT count(*) FROM t WHERE k=?", (key,))
        return f"{key}:{row[0]}"

    return fn


async def test_a_failing_write_fails_alone_in_a_shared_transaction(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    writer = GroupWriter(conn)
    transactions: list[int] = []
    real = writer._transaction

    async def counting(batch: list[Any]) -> None:
        transactions.append(len(batch))
        await real(batch)

    writer._transaction = counting  # type: ignore[method-assign]
    keys = ["a", "b", "bad1", "c", "bad2", "d"]
    results: dict[str, object] = {}

    async def call(key: str) -> None:
        try:
            results[key] = await writer.write(insert(key, then_fail=key.startswith("bad")))
        except ValueError as exc:
            results[key] = exc

    async with anyio.create_task_group() as tg:
        for key in keys:
            tg.start_soon(call, key)
    assert transactions[0] == len(keys)  # they met in one transaction
    assert {k: str(v) for k, v in results.items()} == {
        "a": "a:1",
        "b": "b:1",
        "bad1": "bad1 failed",
        "c": "c:1",
        "bad2": "bad2 failed",
        "d": "d:1",
    }
    assert committed(tmp_path) == ["a", "b", "c", "d"]  # the failed ones' inserts undone
    assert not conn.in_transaction
    assert await writer.write(insert("e")) == "e:1"  # and the writer goes on


async def test_a_cancelled_caller_still_commits(conn: aiosqlite.Connection, tmp_path: Path) -> None:
    """Ctrl-C or a cancelled task group never leaves half a transition behind: the write in
    progress, and the one queued behind it, are committed whole."""
    writer = GroupWriter(conn)
    inside = anyio.Event()

    async def slow(tx: Tx) -> None:
        await tx.run("INSERT INTO t VALUES ('first half')")
        inside.set()
        await anyio.sleep(0.3)
        await tx.run("INSERT INTO t VALUES ('second half')")

    returned: list[str] = []

    async def call(fn: Write, name: str) -> None:
        await writer.write(fn)
        await anyio.lowlevel.checkpoint()
        returned.append(name)

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, slow, "slow")
            await inside.wait()
            tg.start_soon(call, insert("queued behind"), "queued")
            await anyio.sleep(0.05)
            scope.cancel()
    assert returned == []  # both callers were cancelled...
    assert committed(tmp_path) == ["first half", "queued behind", "second half"]  # ...yet
    assert not conn.in_transaction
    assert not writer.queued


async def test_deferred_writes_are_committed_by_flush(
    conn: aiosqlite.Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = GroupWriter(conn)
    writer.later(insert("a"))
    writer.later(insert("b", then_fail=True))  # bookkeeping that fails: logged, not raised
    writer.later(insert("c"))
    await anyio.sleep(0.05)
    queued = writer.queued
    assert queued
    assert committed(tmp_path) == []  # nobody waited for them: nothing committed yet
    with caplog.at_level("WARNING", logger="covey"):
        await writer.flush()
    assert not writer.queued
    assert committed(tmp_path) == ["a", "c"]
    assert "b failed" in caplog.text
    await writer.flush()  # nothing queued: nothing to do
    writer.later(insert("d"))
    assert await writer.write(insert("e")) == "e:1"  # a write takes the deferred ones along
    assert committed(tmp_path) == ["a", "c", "d", "e"]


async def test_alone_runs_between_commits(conn: aiosqlite.Connection, tmp_path: Path) -> None:
    """What cannot run inside a transaction (VACUUM, a checkpoint, an executescript that
    would commit another write's half) waits for the commit in progress, and the next
    write waits for it."""
    writer = GroupWriter(conn)
    inside = anyio.Event()
    order: list[str] = []

    async def slow(tx: Tx) -> None:
        await tx.run("INSERT INTO t VALUES ('slow')")
        inside.set()
        await anyio.sleep(0.2)
        order.append("slow")

    async def alone(db: aiosqlite.Connection) -> bool:
        order.append("alone")
        await anyio.sleep(0.1)  # a write arriving now waits
        await db.executescript("PRAGMA incremental_vacuum;")
        return db.in_transaction

    async def after(tx: Tx) -> None:
        order.append("after")
        await tx.run("INSERT INTO t VALUES ('after')")

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.write, slow)
        await inside.wait()
        writer.later(insert("deferred"))
        assert await writer.alone(alone) is False
        tg.start_soon(writer.write, after)
    assert order == ["slow", "alone", "after"]
    assert committed(tmp_path) == ["after", "deferred", "slow"]


async def test_reclaiming_space_never_commits_half_a_write(store: Store) -> None:
    """The supervisor reclaims space while its tracker writes: a write in flight is neither
    committed halfway nor broken by it."""
    _, ids, _ = await store.create_batch([SPEC] * 3)
    inside = anyio.Event()

    async def half_then_fail(tx: Tx) -> None:
        await tx.run("UPDATE jobs SET error='half'")
        inside.set()
        await anyio.sleep(0.2)
        raise RuntimeError("the second half failed")

    async def failing() -> None:
        with pytest.raises(RuntimeError, match="second half"):
            await store._txn(half_then_fail)

    async with anyio.create_task_group() as tg:
        tg.start_soon(failing)
        await inside.wait()
        before, after = await store.reclaim_space()
        assert before >= after > 0
    assert [j.error for j in await store.jobs_by_id(ids)] == [None] * 3
    await store.request_cancel(ids[:1])  # and the store writes on
    assert (await store.counts()) == {"cancelled": 1, "queued": 2}


async def test_store_flush_commits_deferred_notes(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    async with Store.open(path) as store:
        job = await one_job(store)
        attempt = await store.begin_attempt(job, "swarm")
        assert attempt is not None
        store.attempt_created(attempt.id, "svc-9")
        store.attempt_running(attempt.id, job.id, "n1", time.time(), "event")
        async with Store.open(path, readonly=True) as other:
            seen = await other.attempt(attempt.id)
            assert seen is not None and (seen.engine_id, seen.phase) == (None, "creating")
            await store.flush()
            seen = await other.attempt(attempt.id)
            assert seen is not None and (seen.engine_id, seen.phase) == ("svc-9", "running")
            assert (await other.job(job.id)).state is JobState.RUNNING  # type: ignore[union-attr]


# -- retention ---------------------------------------------------------------------------------

DAY = 86400.0
JOBS = 100_000
LOG_BYTES = 1024


def kind(i: int) -> str:
    """What job ``i`` of the big store is: most ended long ago, the rest must stay."""
    if i < 95_000:
        return "held" if i >= 90_000 and i % 1000 == 500 else "old"
    if i < 97_000:
        return "recent"
    if i < 99_000:
        return "queued" if i % 2 == 0 else "running"
    return "stale"  # not ended, though it carries an old end time (e.g. retried by hand)


KIND_SQL = """CASE
    WHEN i < 95000 AND i >= 90000 AND i % 1000 = 500 THEN 'held'
    WHEN i < 95000 THEN 'old'
    WHEN i < 97000 THEN 'recent'
    WHEN i < 99000 AND i % 2 = 0 THEN 'queued'
    WHEN i < 99000 THEN 'running'
    ELSE 'stale' END"""


def fill(db: sqlite3.Connection, now: float) -> None:
    """100,000 jobs in 100 batches, written straight into the store's file (create_batch
    would take minutes): ended ones with attempts, history and a few KB of logs each."""
    old, recent = now - 40 * DAY, now - DAY
    args = {"old": old, "recent": recent, "spec": SPEC.to_json(), "log": LOG_BYTES}
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    db.execute(
        "CREATE TEMP TABLE plan AS WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1"
        f" FROM n WHERE i < {JOBS - 1}) SELECT i, printf('j%06d', i) AS id,"
        f" printf('b%03d', i / 1000) AS batch, {KIND_SQL} AS kind,"
        " (i % 10 = 0 AND i < 95000) OR (i >= 90000 AND i < 95000 AND i % 1000 = 500) AS twice"
        " FROM n"
    )
    db.execute(
        "INSERT INTO batches(id, name, created, total, owner)"
        " SELECT DISTINCT batch, batch || '.yaml', :old, 1000, 'queue' FROM plan",
        args,
    )
    db.execute(
        "INSERT INTO jobs(id, batch_id, seq, name, service_base, spec, state, created, updated,"
        " attempts, runs, exit_code, finished) SELECT id, batch, i % 1000, 'job-' || i,"
        " 'covey-' || id, :spec, CASE kind WHEN 'old' THEN CASE i % 6 WHEN 0 THEN 'succeeded'"
        " WHEN 1 THEN 'failed' WHEN 2 THEN 'timed_out' WHEN 3 THEN 'rejected' WHEN 4 THEN"
        " 'lost' ELSE 'cancelled' END WHEN 'held' THEN 'lost' WHEN 'recent' THEN 'failed'"
        " WHEN 'stale' THEN 'retrying' ELSE kind END, :old, :old,"
        " CASE kind WHEN 'queued' THEN 0 ELSE 1 + twice END, 1, 0,"
        " CASE kind WHEN 'recent' THEN :recent WHEN 'queued' THEN NULL WHEN 'running' THEN"
        " NULL ELSE :old END FROM plan",
        args,
    )
    for n, where in ((1, "kind != 'queued'"), (2, "twice")):
        db.execute(
            "INSERT INTO attempts(id, job_id, n, service, mode, phase, outcome, created, ended,"
            f" logs_saved, removed) SELECT id || '-{n}', id, {n}, 'covey-' || id || '-{n}',"
            " 'swarm', CASE kind WHEN 'running' THEN 'running' ELSE 'ended' END,"
            " CASE kind WHEN 'running' THEN NULL ELSE 'failed' END, :old, :old, 1,"
            f" CASE WHEN kind = 'running' OR (kind = 'held' AND {n} = 2) THEN 0 ELSE 1 END"
            f" FROM plan WHERE {where}",
            args,
        )
    for state, where in (
        ("queued", "1"),
        ("pending", "kind != 'queued'"),
        ("end", "kind != 'queued'"),
    ):
        db.execute(
            "INSERT INTO transitions(job_id, attempt_id, state, at, source)"
            f" SELECT id, CASE '{state}' WHEN 'queued' THEN NULL ELSE id || '-1' END,"
            f" '{state}', :old, 'covey' FROM plan WHERE {where}",
            args,
        )
    db.execute(
        "INSERT INTO logs(attempt_id, stream, data, size, truncated)"
        " SELECT id || '-1', 'stdout', randomblob(:log), :log, 0 FROM plan"
        " WHERE kind != 'queued' UNION ALL SELECT id || '-1', 'stderr', randomblob(100), 100, 0"
        " FROM plan WHERE kind != 'queued'",
        args,
    )
    db.execute("DROP TABLE plan")
    db.execute("COMMIT")


def one(db: sqlite3.Connection, sql: str) -> tuple[Any, ...]:
    """The first row, the statement run to its end (no read snapshot is left open)."""
    rows: list[tuple[Any, ...]] = db.execute(sql).fetchall()
    return rows[0]


def table_counts(db: sqlite3.Connection) -> dict[str, int]:
    return {
        table: one(db, f"SELECT count(*) FROM {table}")[0]
        for table in ("batches", "jobs", "attempts", "transitions", "logs")
    }


async def test_a_new_store_uses_incremental_auto_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    async with Store.open(path) as store:
        await store.create_batch([SPEC])
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)


async def test_retention_on_a_store_of_100000_jobs(tmp_path: Path) -> None:
    """``covey prune --jobs --older-than 30d``: jobs that ended before the cut go with their
    attempts, history, logs and emptied batches; nothing else does; the file shrinks."""
    path = tmp_path / "covey.db"
    now = time.time()
    kinds = {f"j{i:06d}": kind(i) for i in range(JOBS)}
    kept = {job_id for job_id, k in kinds.items() if k != "old"}
    held = sorted(job_id for job_id, k in kinds.items() if k == "held")
    assert len(kept) == 5005 and len(held) == 5
    async with Store.open(path) as store:
        db = sqlite3.connect(path, isolation_level=None)  # another process, e.g. an import
        try:
            fill(db, now)
            full = table_counts(db)
            assert full["jobs"] == JOBS
            size = covey.store.handle._size(path)
            assert size > JOBS * LOG_BYTES
            sample = dict(
                db.execute(
                    "SELECT attempt_id, data FROM logs WHERE stream='stdout'"
                    " AND attempt_id IN ('j090500-1', 'j095000-1', 'j099999-1')"
                ).fetchall()
            )

            deleted = await store.delete_finished(now - 30 * DAY)

            assert deleted == JOBS - len(kept)
            assert {r[0] for r in db.execute("SELECT id FROM jobs")} == kept
            assert {r[0] for r in db.execute("SELECT id FROM batches")} == {
                f"b{n:03d}" for n in range(90, 100)
            }
            left = table_counts(db)
            with_attempt = [j for j in kept if kinds[j] != "queued"]
            assert left == {
                "batches": 10,
                "jobs": len(kept),
                "attempts": len(with_attempt) + len(held),
                "transitions": len(kept) + 2 * len(with_attempt),
                "logs": 2 * len(with_attempt),
            }
            orphans = one(
                db,
                "SELECT (SELECT count(*) FROM attempts WHERE job_id NOT IN (SELECT id FROM jobs)),"
                " (SELECT count(*) FROM transitions WHERE job_id NOT IN (SELECT id FROM jobs)),"
                " (SELECT count(*) FROM logs WHERE attempt_id NOT IN (SELECT id FROM attempts))",
            )
            assert orphans == (0, 0, 0)
            # an attempt still on the engine keeps its job, and all the job left
            assert [(a.n, a.removed) for a in await store.attempts(held[0])] == [
                (1, True),
                (2, False),
            ]
            assert len(await store.transitions(held[0])) == 3
            assert await store.delete_finished(now - 30 * DAY) == 0  # nothing more to do

            before, after = await store.reclaim_space()

            assert after < before
            shrunk = covey.store.handle._size(path)
            assert shrunk == after
            assert shrunk < size / 10, (size, shrunk)
            assert path.stat().st_size < size / 10
            for attempt, data in sample.items():
                assert (await store.logs(attempt))["stdout"].data == data
            assert one(db, "PRAGMA freelist_count") == (0,)
            assert one(db, "PRAGMA integrity_check") == ("ok",)
        finally:
            db.close()


# -- found in review: writes that must not be lost or misreported ----------------------------


async def test_a_deferred_note_survives_a_commit_that_could_not_begin(
    tmp_path: Path, other_writer: sqlite3.Connection
) -> None:
    """A note nobody waits for (a removal, a start) is kept for the next commit when the
    transaction itself cannot begin (another process's lock), not dropped with a warning."""
    path = tmp_path / "covey.db"
    async with Store.open(path, lock_patience=0.3) as store:
        job = await one_job(store)
        attempt = await store.begin_attempt(job, "swarm")
        assert attempt is not None
        other_writer.execute("BEGIN IMMEDIATE")
        store.mark_removed(attempt.id)
        with pytest.raises(StoreError, match="locked"):
            await store.flush()
        other_writer.execute("ROLLBACK")
        await store.flush()
        row = await store.attempt(attempt.id)
        assert row is not None and row.removed


class Interrupt(BaseException):
    """What a native task cancellation or a KeyboardInterrupt looks like to the writer."""


async def test_a_write_sharing_a_transaction_cut_short_is_not_reported_done(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """A transaction cut short by a BaseException is rolled back: every write in it fails,
    none of them is reported committed (a native cancel is not stopped by anyio's shield)."""
    writer = GroupWriter(conn)

    async def interrupted(tx: Tx) -> None:
        raise Interrupt

    outcome: dict[str, str] = {}

    async def call(name: str, fn: Write) -> None:
        try:
            await writer.write(fn)
            outcome[name] = "reported committed"
        except Interrupt:
            outcome[name] = "failed"

    async with anyio.create_task_group() as tg:  # both queued before the leader begins
        tg.start_soon(call, "lead", interrupted)
        tg.start_soon(call, "other", insert("other"))
    assert outcome == {"lead": "failed", "other": "failed"}
    assert committed(tmp_path) == []
    assert not conn.in_transaction


async def test_retrying_a_finished_foreground_batch_hands_it_to_the_queue(store: Store) -> None:
    """A `covey batch` that ended (its holder released) and is retried from another shell:
    nobody would run its jobs if the batch stayed the foreground's."""
    batch_id, (job_id,), _ = await store.create_batch([SPEC], owner="run", holder=None)
    job = await store.job(job_id)
    assert job is not None
    attempt = await store.begin_attempt(job, "swarm")
    assert attempt is not None
    assert await end(store, attempt, JobState.FAILED, code=1)
    assert await store.retry_jobs([job_id]) == [job_id]
    batch = await store.batch(batch_id)
    assert batch is not None and batch.owner == "queue"
    assert [j.id for j in await store.due_jobs(time.time(), 10, Scope(None))] == [job_id]
