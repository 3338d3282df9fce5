"""backend.py without Docker: which container events covey takes as facts about an attempt."""

from __future__ import annotations

from covey.backend import event_filters, event_observation
from covey.records import EngineEvent
from covey.states import Outcome, Phase


def event(action: str, container: str = "c1", **attributes: str) -> EngineEvent:
    attrs = {"covey.attempt": "job1-1", "com.docker.swarm.node.id": "n1", **attributes}
    return EngineEvent("container", action, container, attrs, 0)


def test_the_filters_ask_for_kill_events_too() -> None:
    filters = event_filters("store1")
    assert sorted(filters["event"]) == ["die", "kill", "start"]
    assert filters["label"] == ["covey.store=store1"]


def test_start_is_running() -> None:
    hint = event_observation(event("start"))
    assert hint is not None
    assert (hint[0], hint[1].phase, hint[1].node_id) == ("job1-1", Phase.RUNNING, "n1")


def test_a_zero_exit_no_one_signalled_is_success() -> None:
    hint = event_observation(event("die", exitCode="0"))
    assert hint is not None
    assert (hint[1].phase, hint[1].outcome, hint[1].exit_code) == (
        Phase.ENDED,
        Outcome.SUCCEEDED,
        0,
    )


def test_a_non_zero_exit_is_left_to_the_task_list() -> None:
    assert event_observation(event("die", exitCode="143")) is None


def test_a_zero_exit_after_a_kill_is_left_to_the_task_list() -> None:
    """A job that traps SIGTERM exits 0 when a drain or `docker stop` stops it: the task
    list says `shutdown` (or nothing at all), and only it knows."""
    killed = {"c1"}
    assert event_observation(event("die", "c1", exitCode="0"), killed) is None
    other = event_observation(event("die", "c2", exitCode="0"), killed)
    assert other is not None and other[1].outcome is Outcome.SUCCEEDED


def test_a_kill_event_is_no_fact_by_itself() -> None:
    assert event_observation(event("kill", signal="15")) is None


def test_events_of_containers_covey_does_not_own_are_ignored() -> None:
    assert event_observation(EngineEvent("container", "die", "c1", {"exitCode": "0"}, 0)) is None
