"""Schema versions: a store written by covey 0.1 (schema 1) opens, with its data, in this covey;
a store of a newer covey is refused."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from covey import holders
from covey.errors import StoreError
from covey.spec import JobSpec, RetryPolicy
from covey.states import JobState, Outcome
from covey.store import SCHEMA_VERSION, Scope, Store, writes
from covey.store.rows import HolderRow
from covey.store.schema import MIGRATIONS

SPEC = JobSpec(image="busybox:latest", command=("sh", "-c", "exit 3"), env=(("A", "1"),))
RETRIED = SPEC.with_changes(retry=RetryPolicy(attempts=3, backoff=2.0))
T0 = 1_700_000_000.0
STORE_ID = "0123456789ab"


def v1_store(path: Path) -> None:
    """A store as covey 0.1 left it: schema 1 (built from its DDL), one batch with jobs in
    several states, their attempts, history and logs."""
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[1])
        db.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?)", [("store_id", STORE_ID), ("schema", "1")]
        )
        db.execute(
            "INSERT INTO batches(id, name, created, idempotency_key, total, owner)"
            " VALUES ('b1', 'old.yaml', ?, 'key-1', 4, 'queue')",
            (T0,),
        )
        jobs = [
            # id, seq, spec, state, attempts, runs, not_before, exit_code, error, finished
            ("jq", 0, SPEC, "queued", 0, 0, None, None, None, None),
            ("jr", 1, RETRIED, "running", 2, 1, None, None, None, None),
            ("js", 2, SPEC, "succeeded", 1, 1, None, 0, None, T0 + 9),
            ("jf", 3, RETRIED, "retrying", 1, 1, T0 + 30, 3, "exit", None),
        ]
        db.executemany(
            "INSERT INTO jobs(id, batch_id, seq, name, service_base, spec, state, created,"
            " updated, attempts, runs, not_before, exit_code, error, node, started, finished)"
            " VALUES (?, 'b1', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'n1', ?, ?)",
            [
                (
                    *(i, seq, f"job-{seq}", f"covey-{i}", spec.to_json(), state, T0, T0 + 10),
                    *(attempts, runs, not_before, code, error, T0 + 1 if attempts else None, fin),
                )
                for i, seq, spec, state, attempts, runs, not_before, code, error, fin in jobs
            ],
        )
        db.executemany(
            "INSERT INTO attempts(id, job_id, n, service, mode, engine_id, phase, outcome,"
            " exit_code, node, created, started, ended, logs_saved, removed)"
            " VALUES (?,?,?,?, 'swarm', ?,?,?,?, 'n1', ?,?,?,?,?)",
            [
                ("jr-1", "jr", 1, "covey-jr-1", "e1", "ended", "failed", 1, T0, T0, T0 + 2, 1, 1),
                (
                    "jr-2",
                    "jr",
                    2,
                    "covey-jr-2",
                    "e2",
                    "running",
                    None,
                    None,
                    T0,
                    T0 + 3,
                    None,
                    0,
                    0,
                ),
                (
                    "js-1",
                    "js",
                    1,
                    "covey-js-1",
                    "e3",
                    "ended",
                    "succeeded",
                    0,
                    T0,
                    T0,
                    T0 + 9,
                    1,
                    1,
                ),
                ("jf-1", "jf", 1, "covey-jf-1", "e4", "ended", "failed", 3, T0, T0, T0 + 5, 1, 0),
            ],
        )
        db.executemany(
            "INSERT INTO transitions(job_id, attempt_id, state, at, source, detail)"
            " VALUES (?,?,?,?,?,?)",
            [
                ("js", None, "queued", T0, "covey", None),
                ("js", "js-1", "pending", T0 + 1, "covey", "covey-js-1"),
                ("js", "js-1", "running", T0 + 2, "event", "n1"),
                ("js", "js-1", "succeeded", T0 + 9, "poll", "exit 0"),
            ],
        )
        db.executemany(
            "INSERT INTO logs(attempt_id, stream, data, size, truncated) VALUES (?,?,?,?,?)",
            [
                ("js-1", "stdout", b"hello \xff\n", 8, 0),
                ("js-1", "stderr", b"tail", 1000, 1),
                ("jf-1", "stdout", b"", 0, 0),
            ],
        )


def meta(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT key, value FROM meta"))


@pytest.mark.parametrize("readonly", [False, True], ids=["read-write", "read-only"])
async def test_a_v1_store_is_migrated_with_its_data(tmp_path: Path, readonly: bool) -> None:
    """A read-only open (``ls`` on a store of covey 0.1) migrates too, once, then reads."""
    path = tmp_path / "covey.db"
    v1_store(path)
    async with Store.open(path, readonly=readonly) as store:
        assert store.id == STORE_ID
        assert meta(path) == {"schema": str(SCHEMA_VERSION), "store_id": STORE_ID}
        jobs = {j.id: j for j in await store.jobs()}
        assert list(jobs) == ["jq", "jr", "js", "jf"]
        assert jobs["jq"].state is JobState.QUEUED and jobs["jq"].spec == SPEC
        running = jobs["jr"]
        assert (running.state, running.attempts, running.runs, running.spec) == (
            JobState.RUNNING,
            2,
            1,
            RETRIED,
        )
        done = jobs["js"]
        assert (done.state, done.exit_code, done.finished, done.node) == (
            JobState.SUCCEEDED,
            0,
            T0 + 9,
            "n1",
        )
        assert (jobs["jf"].state, jobs["jf"].not_before) == (JobState.RETRYING, T0 + 30)
        batch = await store.batch("b1")
        assert batch is not None and (batch.name, batch.total, batch.owner) == (
            "old.yaml",
            4,
            "queue",
        )
        attempts = await store.attempts("jr")
        assert [(a.n, a.phase, a.outcome, a.removed) for a in attempts] == [
            (1, "ended", Outcome.FAILED, True),
            (2, "running", None, False),
        ]
        assert {a.id for a in await store.open_attempts(Scope(None))} == {"jr-2", "jf-1"}
        logs = await store.logs("js-1")
        assert logs["stdout"].data == b"hello \xff\n"
        assert (logs["stderr"].data, logs["stderr"].size, logs["stderr"].truncated) == (
            b"tail",
            1000,
            True,
        )
        assert all(record.complete for record in logs.values())  # schema 1 kept them all
        snapshot = await store.job_with_logs("js")
        assert snapshot is not None and snapshot.logs["stdout"].complete
        history = await store.transitions("js")
        assert [(t.state, t.source, t.attempt_id) for t in history] == [
            ("queued", "covey", None),
            ("pending", "covey", "js-1"),
            ("running", "event", "js-1"),
            ("succeeded", "poll", "js-1"),
        ]
        assert await store.resolve("b1") == ("batch", ["jq", "jr", "js", "jf"])
        assert await store.holders() == []
    async with Store.open(path) as again:  # migrated once: the id and the data stay
        assert again.id == STORE_ID
        assert len(await again.jobs()) == 4


async def test_new_features_work_on_a_migrated_store(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    v1_store(path)
    async with Store.open(path) as store:
        ours, other = await store.hold("run")
        assert other is None
        assert [h.id for h in await store.holders()] == [ours.id]
        batch_id, job_ids, _ = await store.create_batch([SPEC], owner="run", holder=ours.id)
        assert await store.holders_of(job_ids) == {ours.id}
        assert await store.unhold(ours.id) == 1  # the unfinished batch goes to the queue
        assert await store.holders() == []
        handed = await store.batch(batch_id)
        assert handed is not None and handed.owner == "queue"
        # the old queue and the handed-over batch are served together, oldest first
        due = await store.due_jobs(time.time(), 10, Scope(None))
        assert [j.id for j in due] == ["jq", "jf", job_ids[0]]
        attempt = await store.begin_attempt(due[0], "swarm")
        assert attempt is not None and attempt.id == "jq-1"
        await store.save_logs(attempt.id, b"out", b"err")
        assert (await store.logs(attempt.id))["stdout"].complete
        # retention: the old success goes, with everything it left; an old store is switched
        # to incremental auto-vacuum on its first reclaim
        assert await store.delete_finished(time.time()) == 1
        assert await store.job("js") is None and await store.logs("js-1") == {}
        assert await store.batch("b1") is not None  # other jobs are still in it
        await store.reclaim_space()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_a_pipeline_runs_on_a_migrated_v1_store(tmp_path: Path) -> None:
    """Schema 3 on a store of covey 0.1: old jobs keep working (no stage: the gate leaves
    them alone), a pipeline batch waits and is released beside them."""
    from covey.pipeline import Pipeline

    path = tmp_path / "covey.db"
    v1_store(path)
    async with Store.open(path) as store:
        old = {j.id: j for j in await store.jobs()}
        assert {j.stage for j in old.values()} == {None}
        assert await store.stages("b1") == []
        # an old job ends as before; the gate has nothing to do for it
        due = await store.due_jobs(time.time(), 10, Scope(None))
        attempt = await store.begin_attempt(due[0], "swarm")
        assert attempt is not None
        end = writes.AttemptEnd(Outcome.SUCCEEDED, 0, None, None, time.time(), "poll")
        assert await store.finish(attempt, end) is not None
        await store.save_logs(attempt.id, b"old\n", b"")
        p = Pipeline()
        p.add("first", SPEC.with_changes(retry=RetryPolicy()))
        p.add("second", SPEC, needs={"first": "completed"})
        batch_id, ids, _ = await store.create_batch(p)
        by_name = {j.name: j for j in await store.jobs_by_id(ids)}
        first, second = by_name["first"], by_name["second"]
        assert (first.state, second.state) == (JobState.QUEUED, JobState.WAITING)
        attempt = await store.begin_attempt(first, "swarm")
        assert attempt is not None
        end = writes.AttemptEnd(Outcome.FAILED, 3, None, None, time.time(), "poll")
        await store.finish(attempt, end)
        await store.save_logs(attempt.id, b"", b"")
        after = {j.name: j.state for j in await store.jobs(batch_id=batch_id)}
        assert after == {"first": JobState.FAILED, "second": JobState.QUEUED}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM jobs WHERE done=1").fetchone() == (1,)


async def test_a_dead_holder_of_a_migrated_store_is_released(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    v1_store(path)
    async with Store.open(path) as store:
        gone = HolderRow("deadbeef0000", "run", 2**22 + 7, holders.host(), 1.0, T0, T0)
        await store._txn(lambda tx: writes.add_holder(tx, gone))
        _, job_ids, _ = await store.create_batch([SPEC], owner="run", holder=gone.id)
        assert await store.release_dead_holders() == 1
        assert await store.holders_of(job_ids) == set()


@pytest.mark.parametrize("readonly", [False, True], ids=["read-write", "read-only"])
async def test_a_store_of_a_newer_covey_is_refused(tmp_path: Path, readonly: bool) -> None:
    path = tmp_path / "covey.db"
    v1_store(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION + 1),))
    before = path.read_bytes()
    with pytest.raises(StoreError) as refused:
        async with Store.open(path, readonly=readonly):
            pass
    message = str(refused.value)
    assert str(path) in message
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this covey" in message
    assert "upgrade covey" in message
    assert "not a covey store" not in message
    assert meta(path)["schema"] == str(SCHEMA_VERSION + 1)
    assert path.read_bytes() == before  # nothing was touched


async def test_a_migration_waits_for_the_lock_and_says_so(tmp_path: Path) -> None:
    """Migrating needs a write: while another process holds one, even a read-only open fails
    with a clear error (not "not a covey store"), and the store stays at version 1."""
    path = tmp_path / "covey.db"
    v1_store(path)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        for readonly in (False, True):
            with pytest.raises(StoreError, match="locked by another process") as locked:
                async with Store.open(path, readonly=readonly, lock_patience=0.2):
                    pass
            assert "not a covey store" not in str(locked.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert meta(path)["schema"] == "1"
    async with Store.open(path) as store:
        assert store.id == STORE_ID
    assert meta(path)["schema"] == str(SCHEMA_VERSION)
