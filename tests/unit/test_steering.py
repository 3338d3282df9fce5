"""Steering a running batch: priorities, a batch's own cap, pause and resume (the store's
side, and which batches the submitter holds back); on a real engine in
tests/engine/test_steering.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from covey import submitter
from covey.spec import JobSpec
from covey.store import Scope, Store

SPEC = JobSpec(image="busybox", command=("true",))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(tmp_path / "covey.db") as opened:
        yield opened


async def test_due_jobs_come_highest_priority_first_then_oldest(store: Store) -> None:
    _low, low_ids, _ = await store.create_batch([SPEC, SPEC])
    _high, high_ids, _ = await store.create_batch([SPEC.with_changes(priority=5)] * 2)
    _mid, mid_ids, _ = await store.create_batch([SPEC.with_changes(priority=1)])
    due = await store.due_jobs(time.time(), 10, Scope(None))
    assert [j.id for j in due] == [*high_ids, *mid_ids, *low_ids]
    assert [j.spec.priority for j in due] == [5, 5, 1, 0, 0]


async def test_priority_comes_from_the_spec_of_fan_out_instances_too(store: Store) -> None:
    from covey.pipeline import Pipeline

    p = Pipeline()
    p.add("split", SPEC.with_changes(priority=3, command=("sh", "-c", "echo a")))
    p.add("each", SPEC.with_changes(priority=3), for_each="split", needs=["split"])
    _, ids, _ = await store.create_batch(p)
    (job,) = await store.due_jobs(time.time(), 10, Scope(None))
    assert (job.id, job.spec.priority) == (ids[0], 3)


async def test_held_batches_are_left_out_of_the_read(store: Store) -> None:
    a, _a_ids, _ = await store.create_batch([SPEC])
    _b, b_ids, _ = await store.create_batch([SPEC])
    due = await store.due_jobs(time.time(), 10, Scope(None), [a])
    assert [j.id for j in due] == b_ids


async def test_throttle_and_pause_are_stored_and_read_back(store: Store) -> None:
    a, _, _ = await store.create_batch([SPEC])
    b, _, _ = await store.create_batch([SPEC])
    assert await store.steering(Scope(None)) == {}
    await store.steer(a, max_concurrent=2, paused=None)
    await store.steer(b, paused=True)
    assert await store.steering(Scope(None)) == {a: (2, False), b: (None, True)}
    assert await store.steering(Scope((a,))) == {a: (2, False)}
    batch = await store.batch(a)
    assert batch is not None and (batch.max_concurrent, batch.paused) == (2, False)
    await store.steer(a, max_concurrent=None, paused=None)  # no cap of its own
    await store.steer(b, paused=False)
    assert await store.steering(Scope(None)) == {}


def _ctx(steering: dict[str, tuple[int | None, bool]], running: dict[str, int]) -> Any:
    live = [
        SimpleNamespace(ended=False, job=SimpleNamespace(batch_id=batch))
        for batch, n in running.items()
        for _ in range(n)
    ]
    live.append(SimpleNamespace(ended=True, job=SimpleNamespace(batch_id="a")))  # not running
    return SimpleNamespace(steering=steering, live={i: x for i, x in enumerate(live)})


def test_the_submitter_holds_paused_batches_and_batches_at_their_cap() -> None:
    steering = {"a": (2, False), "b": (None, True), "c": (3, False)}
    held = submitter._held(_ctx(steering, {"a": 2, "c": 2, "d": 9}))
    assert held == {"a", "b"}  # a at its cap, b paused; c below its cap; d has none
    assert submitter._held(_ctx(steering, {"a": 1})) == {"b"}
