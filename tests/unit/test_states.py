"""Every swarm task state and every container state, mapped to an observation."""

from __future__ import annotations

import pytest

from covey.records import ContainerRecord, NodeRecord, TaskRecord
from covey.states import (
    PRE_RUNNING,
    TERMINAL,
    JobState,
    Observation,
    Outcome,
    Phase,
    observe_container,
    observe_task,
    start_failure_code,
)

GIB = 1024**3


def node(
    state: str = "ready", availability: str = "active", hostname: str = "w1", ident: str = "n1"
) -> NodeRecord:
    return NodeRecord(
        id=ident,
        hostname=hostname,
        role="worker",
        availability=availability,
        state=state,
        nano_cpus=2_000_000_000,
        memory=4 * GIB,
    )


def task(
    state: str,
    *,
    desired: str = "running",
    err: str | None = None,
    exit_code: int | None = None,
    node_id: str | None = "n1",
    container_id: str | None = None,
) -> TaskRecord:
    return TaskRecord(
        id="t1",
        service_id="s1",
        node_id=node_id,
        state=state,
        desired_state=desired,
        err=err,
        message=None,
        exit_code=exit_code,
        container_id=container_id,
        attempt="job1-1",
    )


def container(
    state: str, exit_code: int | None = None, error: str | None = None, oom: bool = False
) -> ContainerRecord:
    return ContainerRecord(
        id="c1",
        name="covey-job1-1",
        state=state,
        exit_code=exit_code,
        error=error,
        oom_killed=oom,
        attempt="job1-1",
    )


# -- swarm tasks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state", ["new", "pending", "assigned", "accepted", "preparing", "ready", "starting"]
)
def test_before_running_is_pending(state: str) -> None:
    assert state in PRE_RUNNING
    obs = observe_task(task(state), node())
    assert obs.phase is Phase.PENDING
    assert obs.outcome is None
    assert not obs.ended
    assert obs.node_id == "n1"


def test_pending_keeps_the_schedulers_reason() -> None:
    reason = "no suitable node (insufficient resources on 1 node)"
    obs = observe_task(task("pending", err=reason, node_id=None), None)
    assert obs == Observation(Phase.PENDING, error=reason, node_id=None)


def test_pending_on_a_down_node_that_should_shut_down_is_lost() -> None:
    obs = observe_task(task("assigned", desired="shutdown"), node(state="down"))
    assert obs.phase is Phase.ENDED
    assert obs.outcome is Outcome.LOST
    assert "w1" in (obs.error or "")


def test_pending_that_should_shut_down_on_a_live_node_waits() -> None:
    obs = observe_task(task("assigned", desired="shutdown"), node())
    assert obs.phase is Phase.PENDING


def test_running() -> None:
    obs = observe_task(task("running"), node())
    assert obs == Observation(Phase.RUNNING, node_id="n1")


def test_running_without_a_known_node_is_running() -> None:
    assert observe_task(task("running"), None).phase is Phase.RUNNING


@pytest.mark.parametrize("node_state", ["down", "disconnected"])
def test_running_on_a_down_node_is_lost(node_state: str) -> None:
    """Swarm says 'running' for up to 24 h on a dead node; covey calls it lost at once."""
    obs = observe_task(task("running", desired="shutdown"), node(state=node_state, hostname="w2"))
    assert obs.phase is Phase.ENDED
    assert obs.outcome is Outcome.LOST
    assert obs.exit_code is None
    assert obs.error is not None
    assert "w2" in obs.error
    assert "down" in obs.error
    assert obs.node_id == "n1"


def test_complete_is_success_with_code_zero() -> None:
    obs = observe_task(task("complete", exit_code=0), node())
    assert obs == Observation(Phase.ENDED, Outcome.SUCCEEDED, 0, None, "n1")
    assert obs.ended


def test_complete_without_a_container_status_is_still_code_zero() -> None:
    assert observe_task(task("complete"), node()).exit_code == 0


def test_failed_with_exit_code() -> None:
    obs = observe_task(task("failed", err="task: non-zero exit (3)", exit_code=3), node())
    assert obs.phase is Phase.ENDED
    assert obs.outcome is Outcome.FAILED
    assert obs.exit_code == 3
    assert obs.error == "task: non-zero exit (3)"
    assert obs.node_id == "n1"


def test_failed_exit_code_read_from_err_when_status_lacks_it() -> None:
    obs = observe_task(task("failed", err="task: non-zero exit (42)"), node())
    assert (obs.outcome, obs.exit_code) == (Outcome.FAILED, 42)


def test_failed_with_code_zero_is_covey_125() -> None:
    obs = observe_task(task("failed", err="invalid mount config", exit_code=0), node())
    assert (obs.outcome, obs.exit_code) == (Outcome.FAILED, 125)
    assert obs.error == "invalid mount config"


def test_failed_with_neither_code_nor_err() -> None:
    obs = observe_task(task("failed"), node())
    assert (obs.phase, obs.outcome, obs.exit_code) == (Phase.ENDED, Outcome.FAILED, None)


NOT_FOUND = (
    "starting container failed: OCI runtime create failed: runc create failed: unable to start "
    'container process: exec: "nosuch": executable file not found in $PATH: unknown'
)
NO_SUCH_FILE = (
    "starting container failed: OCI runtime create failed: "
    'exec: "/nope": stat /nope: no such file or directory: unknown'
)
PERMISSION = (
    "starting container failed: OCI runtime create failed: "
    'exec: "/etc/passwd": permission denied: unknown'
)


@pytest.mark.parametrize(
    ("err", "code"), [(NOT_FOUND, 127), (NO_SUCH_FILE, 127), (PERMISSION, 126)]
)
def test_failed_to_start_is_127_or_126(err: str, code: int) -> None:
    """docker run's convention: 127 when the command is missing, 126 when it cannot run."""
    obs = observe_task(task("failed", err=err, exit_code=128), node())
    assert (obs.phase, obs.outcome, obs.exit_code) == (Phase.ENDED, Outcome.FAILED, code)
    assert obs.error == err


def test_rejected_keeps_the_engines_reason() -> None:
    obs = observe_task(task("rejected", err="No such image: nosuch:1", node_id=None), None)
    assert (obs.phase, obs.outcome, obs.exit_code) == (Phase.ENDED, Outcome.REJECTED, None)
    assert obs.error == "No such image: nosuch:1"


# A task that never had a container reports ContainerStatus.ExitCode 0 (and ContainerID ""),
# as the engine does for "No such image": that 0 is not an exit, and covey must not show one.
NEVER_RAN = {"exit_code": 0, "container_id": None}


def test_a_rejected_task_has_no_exit_code_even_when_the_engine_says_0() -> None:
    obs = observe_task(task("rejected", err="No such image: nosuch:1", **NEVER_RAN), node())
    assert (obs.outcome, obs.exit_code) == (Outcome.REJECTED, None)


def test_a_task_shut_down_before_it_ran_has_no_exit_code() -> None:
    obs = observe_task(task("shutdown", desired="shutdown", **NEVER_RAN), node())
    assert (obs.outcome, obs.exit_code) == (Outcome.LOST, None)
    drained = observe_task(
        task("shutdown", desired="shutdown", **NEVER_RAN), node(availability="drain")
    )
    assert (drained.outcome, drained.exit_code) == (Outcome.LOST, None)


def test_a_pending_task_lost_with_its_node_has_no_exit_code() -> None:
    obs = observe_task(task("assigned", desired="shutdown", **NEVER_RAN), node(state="down"))
    assert (obs.outcome, obs.exit_code) == (Outcome.LOST, None)


def test_a_task_shut_down_while_running_keeps_its_containers_exit() -> None:
    obs = observe_task(
        task("shutdown", desired="shutdown", exit_code=143, container_id="c1"),
        node(availability="drain"),
    )
    assert (obs.outcome, obs.exit_code) == (Outcome.LOST, 143)


def test_rejected_without_err_still_says_why() -> None:
    assert observe_task(task("rejected"), node()).error


def test_shutdown_on_a_drained_node_is_lost_and_says_drained() -> None:
    obs = observe_task(
        task("shutdown", desired="shutdown", exit_code=143), node(availability="drain")
    )
    assert (obs.phase, obs.outcome) == (Phase.ENDED, Outcome.LOST)
    assert "drained" in (obs.error or "")
    assert "w1" in (obs.error or "")


def test_shutdown_elsewhere_is_lost() -> None:
    obs = observe_task(task("shutdown", desired="shutdown"), node())
    assert (obs.phase, obs.outcome) == (Phase.ENDED, Outcome.LOST)
    assert "drained" not in (obs.error or "")


def test_shutdown_on_an_unknown_node_names_the_node_id() -> None:
    obs = observe_task(task("shutdown", node_id="abc123"), None)
    assert obs.outcome is Outcome.LOST
    assert "abc123" in (obs.error or "")


def test_orphaned_is_lost() -> None:
    obs = observe_task(task("orphaned", desired="shutdown"), node(state="down"))
    assert (obs.phase, obs.outcome, obs.exit_code) == (Phase.ENDED, Outcome.LOST, None)
    assert "orphaned" in (obs.error or "")


@pytest.mark.parametrize("state", ["remove", "some-future-state"])
def test_removed_or_unknown_is_lost_naming_the_state(state: str) -> None:
    obs = observe_task(task(state, desired="remove"), node())
    assert (obs.phase, obs.outcome, obs.exit_code) == (Phase.ENDED, Outcome.LOST, None)
    assert repr(state) in (obs.error or "")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('exec: "x": executable file not found in $PATH', 127),
        ("stat /x: No such file or directory", 127),
        ("permission denied", 126),
        ("something else", 126),
    ],
)
def test_start_failure_code(text: str, code: int) -> None:
    assert start_failure_code(text) == code


# -- containers (container mode) ------------------------------------------------------------------


def test_container_created_is_pending() -> None:
    assert observe_container(container("created")) == Observation(Phase.PENDING)


@pytest.mark.parametrize("state", ["running", "paused", "restarting"])
def test_container_running(state: str) -> None:
    assert observe_container(container(state)) == Observation(Phase.RUNNING)


def test_container_exited_zero_is_success() -> None:
    obs = observe_container(container("exited", exit_code=0))
    assert obs == Observation(Phase.ENDED, Outcome.SUCCEEDED, 0, None)


def test_container_exited_three_is_failure() -> None:
    obs = observe_container(container("exited", exit_code=3))
    assert obs == Observation(Phase.ENDED, Outcome.FAILED, 3, None)


def test_container_exited_oom_says_so() -> None:
    obs = observe_container(container("exited", exit_code=137, oom=True))
    assert (obs.outcome, obs.exit_code) == (Outcome.FAILED, 137)
    assert "OOM" in (obs.error or "")


@pytest.mark.parametrize(("error", "code"), [(NOT_FOUND, 127), (PERMISSION, 126)])
def test_container_exited_with_an_error_could_not_start(error: str, code: int) -> None:
    obs = observe_container(container("exited", exit_code=128, error=error))
    assert (obs.phase, obs.outcome, obs.exit_code) == (Phase.ENDED, Outcome.FAILED, code)
    assert obs.error == error


def test_container_exited_without_a_code_is_125() -> None:
    obs = observe_container(container("exited"))
    assert (obs.outcome, obs.exit_code) == (Outcome.FAILED, 125)


def test_container_dead_is_lost() -> None:
    obs = observe_container(container("dead", exit_code=137))
    assert (obs.phase, obs.outcome, obs.exit_code) == (Phase.ENDED, Outcome.LOST, 137)
    assert "dead" in (obs.error or "")


def test_container_in_an_unknown_state_is_lost() -> None:
    obs = observe_container(container("removing"))
    assert (obs.phase, obs.outcome) == (Phase.ENDED, Outcome.LOST)
    assert "removing" in (obs.error or "")


# -- job states -----------------------------------------------------------------------------------


def test_terminal_job_states() -> None:
    assert {s for s in JobState if s.terminal} == TERMINAL
    assert {s.value for s in TERMINAL} == {
        "succeeded",
        "failed",
        "timed_out",
        "rejected",
        "lost",
        "cancelled",
        "skipped",
    }
    waiting, queued, pending = JobState.WAITING, JobState.QUEUED, JobState.PENDING
    for state in (waiting, queued, pending, JobState.RUNNING, JobState.RETRYING):
        assert not state.terminal


def test_preparing_is_pulling_and_other_pending_states_are_not() -> None:
    from covey.records import TaskRecord

    def task(state: str) -> TaskRecord:
        return TaskRecord("t", "s", "n", state, "running", None, None, None, None, "a")

    assert observe_task(task("preparing")).pulling
    assert observe_task(task("preparing")).phase is Phase.PENDING
    assert not observe_task(task("pending")).pulling
    assert not observe_task(task("assigned")).pulling
