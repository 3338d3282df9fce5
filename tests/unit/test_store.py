"""The store on a real SQLite file: schema, producers, the attempt life cycle, operators, reads."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import covey.store
from covey.errors import StoreError
from covey.policy import decide
from covey.spec import JobSpec, RetryPolicy
from covey.states import JobState, Outcome
from covey.store import (
    SCHEMA_VERSION,
    AttemptRow,
    EndDecision,
    JobRow,
    Scope,
    Store,
)

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
    decision: EndDecision | None = None,
) -> bool:
    """``finish_attempt`` with the usual arguments: the outcome named like the state."""
    return await store.finish_attempt(
        attempt,
        outcome=outcome or Outcome(state.value),
        exit_code=code,
        error=error,
        node=node,
        at=time.time() if at is None else at,
        source=source,
        decision=decision or EndDecision(state),
    )


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
        verdict = decide(policy, "failed", 75, job.runs + 1, job.losses)
        state = JobState.RETRYING if verdict.retry else JobState.FAILED
        decision = EndDecision(
            state,
            not_before=now + verdict.delay if verdict.retry else None,
            detail=verdict.reason,
        )
        assert await end(
            store, attempt, state, outcome=Outcome.FAILED, code=75, at=now, decision=decision
        )
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
    decision = EndDecision(
        JobState.RETRYING,
        not_before=time.time(),
        counts_as_run=False,
        counts_as_loss=True,
    )
    await end(store, attempt, JobState.RETRYING, outcome=Outcome.LOST, decision=decision)
    job = await reload(store, job)
    assert (job.state, job.runs, job.losses) == (JobState.RETRYING, 0, 1)


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
    monkeypatch.setattr(covey.store, "new_id", lambda: next(ids))
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
    queue_batch, queue_ids, _ = await store.create_batch([SPEC, SPEC, SPEC])
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
    retry = EndDecision(JobState.RETRYING, not_before=now + 30)
    await end(store, attempt, JobState.RETRYING, outcome=Outcome.FAILED, code=1, decision=retry)
    assert ids(await store.due_jobs(now, 10, Scope(None))) == queue_ids[1:]
    assert ids(await store.due_jobs(now + 29, 10, Scope(None))) == queue_ids[1:]
    assert ids(await store.due_jobs(now + 30, 10, Scope(None))) == queue_ids
    assert await store.next_due(Scope(None)) == pytest.approx(now + 30)
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
    hops = 0
    real = store._conn._execute

    async def counting(fn: Any, *args: Any) -> Any:
        nonlocal hops
        hops += 1
        return await real(fn, *args)

    store._conn._execute = counting  # type: ignore[method-assign]

    async def write(job: JobRow) -> str:
        if job is bad:

            def broken(db: sqlite3.Connection) -> None:
                db.execute("UPDATE jobs SET error='half' WHERE id=?", (job.id,))
                db.execute("INSERT INTO no_such_table VALUES (1)")

            try:
                await store._txn(broken)
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
    assert hops < 20  # the writes shared transactions
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
