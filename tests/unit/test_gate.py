"""The pipeline gate on a real store: release, skip, fan out, cancel, retry (no Docker).

Jobs are driven through the store as the orchestrator drives them: an attempt begins, its
end is recorded, its logs are saved; the gate runs in the transaction that saves the logs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from covey.errors import SpecError
from covey.pipeline import Pipeline
from covey.spec import JobSpec, RetryPolicy
from covey.states import JobState, Outcome
from covey.store import AttemptEnd, JobRow, Scope, Store
from covey.store.gate import GateResult

SPEC = JobSpec(image="busybox:latest", command=("true",))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(tmp_path / "covey.db") as opened:
        yield opened


async def jobs_by_name(store: Store, batch_id: str) -> dict[str, JobRow]:
    return {j.name: j for j in await store.jobs(batch_id=batch_id, limit=10_000)}


async def run(
    store: Store,
    job: JobRow,
    outcome: Outcome = Outcome.SUCCEEDED,
    stdout: bytes = b"",
    code: int | None = None,
    cap: int = 1 << 20,
) -> None:
    """One attempt of ``job``, ended with ``outcome``, its logs saved (capped to ``cap``)."""
    attempt = await store.begin_attempt(job, "swarm")
    assert attempt is not None, job
    exit_code = code if code is not None else (0 if outcome is Outcome.SUCCEEDED else 1)
    end = AttemptEnd(outcome, exit_code, None, None, time.time(), "poll")
    assert await store.finish(attempt, end) is not None
    await store.save_logs(attempt.id, stdout, b"", cap)


def word_count() -> Pipeline:
    p = Pipeline()
    p.add("split", SPEC)
    p.add("count", SPEC, needs=["split"], for_each="split")
    p.add("total", SPEC, needs=["count"], inputs=["count"])
    p.add("alert", SPEC, needs={"count": "failed"})
    return p


async def test_a_dependent_waits_then_is_released_when_its_need_is_done(store: Store) -> None:
    p = Pipeline()
    p.add("a", SPEC)
    p.add("b", SPEC, needs=["a"])
    batch_id, _, _ = await store.create_batch(p)
    jobs = await jobs_by_name(store, batch_id)
    assert jobs["a"].state is JobState.QUEUED
    assert jobs["b"].state is JobState.WAITING
    assert [j.id for j in await store.due_jobs(time.time(), 10, _queue())] == [jobs["a"].id]
    news: list[GateResult] = []
    store.on_gate = news.append
    await run(store, jobs["a"])
    after = await jobs_by_name(store, batch_id)
    assert after["b"].state is JobState.QUEUED
    assert news and news[-1].queued == [jobs["b"].id]


@pytest.mark.parametrize("reads_output", [True, False], ids=["inputs", "no-inputs"])
async def test_release_waits_for_the_logs_only_when_the_output_is_read(
    store: Store, reads_output: bool
) -> None:
    """A dependent that reads its need's output is released when that is recorded (the
    logs saved); one that does not, as soon as the need's end is recorded."""
    p = Pipeline()
    p.add("a", SPEC)
    p.add("b", SPEC, needs=["a"], inputs=["a"] if reads_output else [])
    batch_id, _, _ = await store.create_batch(p)
    a = (await jobs_by_name(store, batch_id))["a"]
    attempt = await store.begin_attempt(a, "swarm")
    assert attempt is not None
    await store.finish(attempt, AttemptEnd(Outcome.SUCCEEDED, 0, None, None, time.time(), "x"))
    early = JobState.WAITING if reads_output else JobState.QUEUED
    assert (await jobs_by_name(store, batch_id))["b"].state is early
    await store.save_logs(attempt.id, b"out", b"")
    assert (await jobs_by_name(store, batch_id))["b"].state is JobState.QUEUED


async def test_a_failed_need_skips_the_dependents_and_theirs(store: Store) -> None:
    p = Pipeline()
    p.add("a", [SPEC, SPEC, SPEC])
    p.add("b", SPEC, needs=["a"])
    p.add("c", SPEC, needs=["b"])
    p.add("d", SPEC, needs={"b": "completed"})
    batch_id, _, _ = await store.create_batch(p)
    jobs = await jobs_by_name(store, batch_id)
    await run(store, jobs["a-0"])
    await run(store, jobs["a-1"], Outcome.FAILED, code=3)  # fails fast: a-2 still queued
    after = await jobs_by_name(store, batch_id)
    assert after["b"].state is JobState.SKIPPED
    assert after["b"].error == "a-1 failed"
    assert after["c"].state is JobState.SKIPPED
    assert after["c"].error == "b skipped"
    assert after["d"].state is JobState.QUEUED  # completed: a skipped need has ended
    assert after["a-2"].state is JobState.QUEUED  # the rest of the stage runs on


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([Outcome.SUCCEEDED, Outcome.SUCCEEDED], JobState.SKIPPED),
        ([Outcome.SUCCEEDED, Outcome.FAILED], JobState.QUEUED),
        ([Outcome.SUCCEEDED, Outcome.LOST], JobState.QUEUED),
        ([Outcome.SUCCEEDED, Outcome.CANCELLED], JobState.SKIPPED),
        ([Outcome.REJECTED, Outcome.SUCCEEDED], JobState.QUEUED),
    ],
)
async def test_failed_condition_runs_only_after_a_failure(
    store: Store, outcomes: list[Outcome], expected: JobState
) -> None:
    p = Pipeline()
    once = SPEC.with_changes(retry=RetryPolicy(lost_retries=0))  # lost is its end
    p.add("m", [once, once])
    p.add("alert", SPEC, needs={"m": "failed"})
    batch_id, _, _ = await store.create_batch(p)
    jobs = await jobs_by_name(store, batch_id)
    await run(store, jobs["m-0"], outcomes[0])
    assert (await jobs_by_name(store, batch_id))["alert"].state is JobState.WAITING
    await run(store, jobs["m-1"], outcomes[1])
    alert = (await jobs_by_name(store, batch_id))["alert"]
    assert alert.state is expected
    if expected is JobState.SKIPPED:
        assert alert.error == "no instance of m failed"


async def test_each_pairs_instance_i_with_instance_i(store: Store) -> None:
    p = Pipeline()
    p.add("m", [SPEC, SPEC, SPEC])
    p.add("n", [SPEC, SPEC, SPEC], needs={"m": "each"})
    batch_id, _, _ = await store.create_batch(p)
    jobs = await jobs_by_name(store, batch_id)
    await run(store, jobs["m-1"])
    after = await jobs_by_name(store, batch_id)
    assert [after[f"n-{i}"].state for i in range(3)] == [
        JobState.WAITING,
        JobState.QUEUED,
        JobState.WAITING,
    ]
    await run(store, jobs["m-0"], Outcome.FAILED)
    after = await jobs_by_name(store, batch_id)
    assert after["n-0"].state is JobState.SKIPPED
    assert after["n-0"].error == "m-0 failed"
    assert after["n-2"].state is JobState.WAITING


async def test_a_fan_out_is_made_from_the_lines_its_source_printed(store: Store) -> None:
    batch_id, ids, _ = await store.create_batch(word_count())
    assert len(ids) == 3  # split, total, alert: count's instances do not exist yet
    assert (await store.batch_open(batch_id))[1] == 1
    jobs = await jobs_by_name(store, batch_id)
    news: list[GateResult] = []
    store.on_gate = news.append
    await run(store, jobs["split"], stdout=b"part.aa\n\n  \npart.ab\r\npart.ac\n")
    after = await jobs_by_name(store, batch_id)
    counts = [after[f"count-{i}"] for i in range(3)]
    assert [c.state for c in counts] == [JobState.QUEUED] * 3
    assert [c.spec.item for c in counts] == ["part.aa", "part.ab", "part.ac"]
    assert [c.idx for c in counts] == [0, 1, 2]
    assert ("COVEY_ITEM", "part.ab") in counts[1].spec.env
    assert sorted(news[-1].added) == sorted(c.id for c in counts)
    assert (await store.batch(batch_id)).total == 6  # type: ignore[union-attr]
    assert (await store.batch_open(batch_id))[1] == 0
    for i, c in enumerate(counts):
        await run(store, c, stdout=f"{10 * (i + 1)}\n".encode())
    after = await jobs_by_name(store, batch_id)
    assert after["total"].state is JobState.QUEUED
    assert after["alert"].state is JobState.SKIPPED
    files = {path: data for path, data, _ in await store.inputs_for(after["total"])}
    assert [files[f"count/{i}"] for i in range(3)] == [b"10\n", b"20\n", b"30\n"]
    assert b'"item": "part.ab"' in files["count/index.json"]


async def test_a_fan_out_over_nothing_has_no_instances_and_its_dependents_run(
    store: Store,
) -> None:
    batch_id, _, _ = await store.create_batch(word_count())
    jobs = await jobs_by_name(store, batch_id)
    await run(store, jobs["split"], stdout=b"\n \n")
    after = await jobs_by_name(store, batch_id)
    assert not any(name.startswith("count") for name in after)
    assert after["total"].state is JobState.QUEUED  # all of none succeeded
    assert after["alert"].state is JobState.SKIPPED  # none of none failed
    files = {path: data for path, data, _ in await store.inputs_for(after["total"])}
    assert files == {"count/index.json": b"[]\n"}


async def test_a_failed_source_skips_the_fan_out_and_what_needs_it(store: Store) -> None:
    batch_id, _, _ = await store.create_batch(word_count())
    jobs = await jobs_by_name(store, batch_id)
    await run(store, jobs["split"], Outcome.FAILED, stdout=b"a\nb\n")
    after = await jobs_by_name(store, batch_id)
    assert not any(name.startswith("count") for name in after)
    assert after["total"].state is JobState.SKIPPED
    assert after["total"].error == "count was skipped (split failed)"
    assert after["alert"].state is JobState.SKIPPED
    open_ids, unresolved = await store.batch_open(batch_id)
    assert (open_ids, unresolved) == ([], 0)
    (stage,) = [s for s in await store.stages(batch_id) if s.name == "count"]
    assert stage.skipped == "split failed"


async def test_a_source_cut_at_the_log_cap_makes_no_fan_out(store: Store) -> None:
    """Its items would be wrong (only the tail of the lines): none are made, and what needs
    the stage is skipped with the reason."""
    batch_id, _, _ = await store.create_batch(word_count())
    jobs = await jobs_by_name(store, batch_id)
    await run(store, jobs["split"], stdout=b"".join(b"part.%03d\n" % i for i in range(100)), cap=64)
    after = await jobs_by_name(store, batch_id)
    assert not any(name.startswith("count-") for name in after)
    assert "cut at the log cap" in (after["total"].error or "")
    assert after["total"].state is JobState.SKIPPED


async def test_cancel_ends_waiting_jobs_at_once(store: Store) -> None:
    p = Pipeline()
    p.add("a", SPEC)
    p.add("b", SPEC, needs=["a"])
    p.add("c", SPEC, needs={"b": "completed"})
    batch_id, ids, _ = await store.create_batch(p)
    in_flight = await store.request_cancel(ids)
    assert in_flight == []
    after = await jobs_by_name(store, batch_id)
    assert {j.state for j in after.values()} == {JobState.CANCELLED}


async def test_retry_reopens_the_jobs_skipped_because_of_it(store: Store) -> None:
    p = Pipeline()
    p.add("a", [SPEC, SPEC])
    p.add("b", SPEC, needs=["a"])
    p.add("c", SPEC, needs=["b"])
    p.add("other", SPEC)
    batch_id, _, _ = await store.create_batch(p)
    jobs = await jobs_by_name(store, batch_id)
    await run(store, jobs["a-0"])
    await run(store, jobs["a-1"], Outcome.FAILED)
    await run(store, jobs["other"], Outcome.FAILED)
    assert (await jobs_by_name(store, batch_id))["c"].state is JobState.SKIPPED
    reopened = await store.retry_jobs([jobs["a-1"].id])
    after = await jobs_by_name(store, batch_id)
    assert after["a-1"].state is JobState.QUEUED
    assert after["b"].state is JobState.WAITING
    assert after["c"].state is JobState.WAITING
    assert after["other"].state is JobState.FAILED  # not downstream: left alone
    assert set(reopened) == {jobs["a-1"].id, jobs["b"].id, jobs["c"].id}
    await run(store, after["a-1"])
    assert (await jobs_by_name(store, batch_id))["b"].state is JobState.QUEUED


async def test_retry_of_a_failed_source_makes_the_fan_out_again(store: Store) -> None:
    batch_id, _, _ = await store.create_batch(word_count())
    jobs = await jobs_by_name(store, batch_id)
    await run(store, jobs["split"], Outcome.FAILED)
    await store.retry_jobs([jobs["split"].id])
    assert (await store.batch_open(batch_id))[1] == 1
    split = (await jobs_by_name(store, batch_id))["split"]
    await run(store, split, stdout=b"x\ny\n")
    after = await jobs_by_name(store, batch_id)
    assert after["count-0"].state is JobState.QUEUED
    assert after["total"].state is JobState.WAITING


async def test_a_bad_graph_is_refused_before_anything_is_stored(store: Store) -> None:
    p = Pipeline()
    p.add("a", SPEC, needs=["b"])
    p.add("b", SPEC, needs=["a"])
    with pytest.raises(SpecError, match=r"stages\[0\]\.needs: a cycle: a -> b -> a"):
        await store.create_batch(p)
    assert await store.batches() == []


def _queue() -> Scope:
    return Scope(None)


async def test_a_batch_cancelled_whole_makes_no_fan_out_later(store: Store) -> None:
    """``covey cancel BATCH`` while the source runs: its end must not fan out anything."""
    batch_id, _, _ = await store.create_batch(word_count())
    split = (await jobs_by_name(store, batch_id))["split"]
    attempt = await store.begin_attempt(split, "swarm")
    assert attempt is not None
    in_flight = await store.request_cancel((), batches=[batch_id])
    assert [j.id for j in in_flight] == [split.id]  # the rest ended at once
    # the attempt had exited 0 before the cancel reached it: a success, as recorded
    end = AttemptEnd(Outcome.SUCCEEDED, 0, None, None, time.time(), "poll")
    await store.finish(attempt, end)
    await store.save_logs(attempt.id, b"a\nb\n", b"")
    after = await jobs_by_name(store, batch_id)
    assert after["split"].state is JobState.SUCCEEDED
    assert not any(name.startswith("count-") for name in after)
    (count,) = [s for s in await store.stages(batch_id) if s.name == "count"]
    assert count.skipped == "the batch was cancelled"
    assert {after["total"].state, after["alert"].state} == {JobState.CANCELLED}
