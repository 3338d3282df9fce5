"""tracker.py without Docker: the event loop fed a scripted event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from covey import tracker
from covey.context import Counters, Signal
from covey.errors import EngineError
from covey.records import EngineEvent
from covey.states import Observation, Phase


def event(action: str, container: str, **attributes: str) -> EngineEvent:
    return EngineEvent("container", action, container, {"covey.attempt": "a1", **attributes}, 0)


class ScriptedEngine:
    """Serves ``streams`` one subscription at a time; the last one stays open."""

    def __init__(self, *streams: list[EngineEvent]) -> None:
        self.streams = list(streams)
        self.done = anyio.Event()

    async def events(self, filters: Mapping[str, list[str]]) -> AsyncIterator[EngineEvent]:
        stream = self.streams.pop(0)
        for item in stream:
            yield item
        if not self.streams:
            self.done.set()
            await anyio.sleep_forever()
        raise EngineError("event stream: closed by the engine")


async def follow(engine: ScriptedEngine, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[Any]]:
    """Run the event loop over the script; returns the live attempt and what was applied."""
    applied: list[tuple[Observation, str]] = []

    async def apply(ctx: Any, live: Any, obs: Observation, source: str) -> None:
        applied.append((obs, source))

    monkeypatch.setattr(tracker, "apply", apply)
    monkeypatch.setattr(tracker, "ended_here", lambda ctx, live, container: None)
    live = SimpleNamespace(ended=False, stop_reason=None, died=False)
    ctx = SimpleNamespace(
        engine=engine,
        backend=SimpleNamespace(event_filters=lambda: {}),
        counters=Counters(),
        live={"a1": live},
        look=Signal(),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(tracker.event_loop, ctx)
        with anyio.fail_after(10):
            await engine.done.wait()
        tg.cancel_scope.cancel()
    return live, applied


async def test_a_zero_exit_is_recorded_from_its_event(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = ScriptedEngine([event("start", "c1"), event("die", "c1", exitCode="0")])
    _, applied = await follow(engine, monkeypatch)
    assert [obs.phase for obs, _ in applied] == [Phase.RUNNING, Phase.ENDED]


async def test_a_zero_exit_after_a_kill_is_left_to_the_task_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = ScriptedEngine(
        [event("start", "c1"), event("kill", "c1", signal="15"), event("die", "c1", exitCode="0")]
    )
    live, applied = await follow(engine, monkeypatch)
    assert [obs.phase for obs, _ in applied] == [Phase.RUNNING]  # no success from the event
    assert live.died  # the tracker lists tasks again soon instead


async def test_a_kill_is_forgotten_once_its_container_died(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the killed container's zero exit waits for the task list; others stay fast."""
    engine = ScriptedEngine(
        [event("kill", "c1", signal="15"), event("die", "c1", exitCode="0")],
        [event("die", "c2", exitCode="0")],
    )
    _, applied = await follow(engine, monkeypatch)
    assert [obs.phase for obs, _ in applied] == [Phase.ENDED]
    assert engine.streams == []  # resubscribed after the first stream dropped


# -- pulling is progress, not pending (issue 12: "preparing" counted as pending) -------------


def pending_live(pending_timeout: float | None = None) -> Any:
    from covey.context import Live
    from covey.governor import Demand
    from covey.spec import JobSpec
    from covey.states import JobState
    from covey.store import AttemptRow, JobRow

    spec = JobSpec(image="busybox", pending_timeout=pending_timeout)
    job = JobRow(
        "j", "b", 0, "n", "covey-j", spec, JobState.PENDING, 0.0, 0.0, 1, 0, 0,
        None, None, None, None, None, None, False,
    )  # fmt: skip
    live = Live(attempt=AttemptRow("j-1", "j", 1, "covey-j-1", "swarm"), job=job, demand=Demand())
    live.since = 0.0
    return live


def test_time_spent_pulling_does_not_count_as_pending() -> None:
    """Once the task is on a node, --pending-timeout is over: the node pulls, then starts."""
    from covey.context import Options

    ctx = SimpleNamespace(options=Options(pending_timeout=10.0, pull_timeout=100.0))
    live = pending_live()
    live.scheduled = True  # assigned to a node at t<1
    live.pulling(True, 1.0)  # pulling from t=1
    assert tracker._stuck(ctx, live, 60.0) is None  # 59 s pulling
    live.pulling(False, 61.0)  # pulled; starting
    assert tracker._stuck(ctx, live, 90.0) is None


def test_a_task_no_node_takes_is_given_up_by_the_pending_timeout() -> None:
    from covey.context import Options

    ctx = SimpleNamespace(options=Options(pending_timeout=10.0, pull_timeout=100.0))
    live = pending_live()
    assert tracker._stuck(ctx, live, 9.0) is None
    why = tracker._stuck(ctx, live, 10.5)
    assert why is not None and why.startswith("still pending after 10s")


def test_a_task_state_says_whether_it_is_on_a_node() -> None:
    from covey.records import TaskRecord
    from covey.states import observe_task

    fields = {f: None for f in TaskRecord.__dataclass_fields__}
    for state, scheduled, pulling in [
        ("pending", False, False),
        ("assigned", True, False),
        ("preparing", True, True),
        ("starting", True, False),
    ]:
        task = TaskRecord(**{**fields, "state": state, "desired_state": "running"})
        obs = observe_task(task)
        assert (obs.scheduled, obs.pulling) == (scheduled, pulling), state


def test_a_pull_that_never_ends_is_given_up_by_the_pull_timeout() -> None:
    from covey.context import Options

    ctx = SimpleNamespace(options=Options(pending_timeout=10.0, pull_timeout=100.0))
    live = pending_live()
    live.pulling(True, 0.0)
    assert tracker._stuck(ctx, live, 99.0) is None
    assert tracker._stuck(ctx, live, 100.0) == "its image was still being pulled after 100s"
