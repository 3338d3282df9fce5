"""Pure: what state a job is in, given what the engine reports.

Swarm has no task events, so covey decides from the task list (and, in container mode,
from container inspects). These functions take records and return an :class:`Observation`;
they are unit-tested for every swarm task state and never touch Docker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from covey.records import ContainerRecord, NodeRecord, TaskRecord


class JobState(StrEnum):
    """A job's state as the store records it."""

    WAITING = "waiting"  # for the jobs it needs (a pipeline's later stage)
    QUEUED = "queued"  # waiting for the governor
    PENDING = "pending"  # attempt created, not running yet
    RUNNING = "running"
    RETRYING = "retrying"  # an attempt ended; another one is due after a backoff
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    REJECTED = "rejected"  # the engine refused it (no such image, never schedulable)
    LOST = "lost"  # the engine lost it (node down, drained, orphaned) and no retry is left
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # what it needed can no longer happen (a need failed); never success

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.TIMED_OUT,
        JobState.REJECTED,
        JobState.LOST,
        JobState.CANCELLED,
        JobState.SKIPPED,
    }
)


class Phase(StrEnum):
    """Where one attempt is: waiting for the engine, running, or over."""

    PENDING = "pending"
    RUNNING = "running"
    ENDED = "ended"


class Outcome(StrEnum):
    """How an attempt ended; the retry policy decides what that means for the job."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    REJECTED = "rejected"
    LOST = "lost"
    CANCELLED = "cancelled"


# A job whose final attempt ended so is in this state.
FINAL_STATE = {
    Outcome.SUCCEEDED: JobState.SUCCEEDED,
    Outcome.FAILED: JobState.FAILED,
    Outcome.TIMED_OUT: JobState.TIMED_OUT,
    Outcome.REJECTED: JobState.REJECTED,
    Outcome.LOST: JobState.LOST,
    Outcome.CANCELLED: JobState.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class Observation:
    """What one look at the engine says about one attempt."""

    phase: Phase
    outcome: Outcome | None = None
    exit_code: int | None = None
    error: str | None = None
    node_id: str | None = None
    at: float | None = None  # when it happened, by the engine's clock (ends only)
    pulling: bool = False  # pending, but its node is pulling the image
    scheduled: bool = False  # pending, but on a node already (assigned and on)

    @property
    def ended(self) -> bool:
        return self.phase is Phase.ENDED


UNSCHEDULED = frozenset({"new", "pending"})  # no node yet: what --pending-timeout bounds
PRE_RUNNING = frozenset(
    {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
)
_EXIT_IN_ERR = re.compile(r"non-zero exit \((\d+)\)")


def start_failure_code(text: str) -> int:
    """``docker run``'s codes for a command that could not be started: 127 missing, else 126."""
    lowered = text.lower()
    if "not found" in lowered or "no such file" in lowered:
        return 127
    return 126


def _ended(outcome: Outcome, task: TaskRecord, error: str | None, code: int | None) -> Observation:
    """An end; ``code`` is always explicit, since ``None`` (no exit at all) is a real answer.

    A task in a final state carries when it got there (the engine's clock): an end found
    late (after a restart, by a process that adopted it) is recorded when it happened."""
    final = task.state != "running" and task.state not in PRE_RUNNING
    return Observation(
        Phase.ENDED, outcome, code, error, task.node_id, task.status_at if final else None
    )


def _task_exit(task: TaskRecord) -> int | None:
    """The exit code of the task's container, or ``None`` if it never had one.

    A task that never ran (rejected, or shut down while pending) still reports
    ``ContainerStatus.ExitCode`` 0, with an empty container id: that 0 is no exit.
    """
    return task.exit_code if task.container_id else None


def observe_task(task: TaskRecord, node: NodeRecord | None = None) -> Observation:
    """Map a swarm task (and the node it is on) to an observation.

    ``node`` matters for a task that still says ``running``: on a node that is down the
    engine keeps saying so for up to 24 hours, so covey reports it as lost.
    """
    state = task.state
    if state in PRE_RUNNING:
        shut = task.desired_state in ("shutdown", "remove")
        if shut and task.node_id and node is not None and node.state == "down":
            return _ended(Outcome.LOST, task, f"node {node.hostname} is down", None)
        # "preparing" is the node pulling the image (and making volumes): progress, which
        # --pull-timeout bounds, not a task the scheduler cannot place (--pending-timeout,
        # which ends once the task is assigned to a node)
        return Observation(
            Phase.PENDING,
            error=task.err,
            node_id=task.node_id,
            pulling=state == "preparing",
            scheduled=state not in UNSCHEDULED,
        )
    if state == "running":
        if node is not None and node.state in ("down", "disconnected"):
            return _ended(Outcome.LOST, task, f"node {node.hostname} is down", None)
        return Observation(Phase.RUNNING, node_id=task.node_id)
    if state == "complete":
        return _ended(Outcome.SUCCEEDED, task, None, 0)
    if state in ("failed", "rejected") and _container_lost(task.err):
        return _ended(Outcome.LOST, task, f"the engine lost its container: {task.err}", None)
    if state == "failed":
        return _failed(task)
    if state == "rejected":
        return _ended(Outcome.REJECTED, task, task.err or "rejected by the engine", None)
    if state == "shutdown":
        where = node.hostname if node is not None else task.node_id or "?"
        if node is not None and node.availability == "drain":
            return _ended(
                Outcome.LOST, task, f"stopped because node {where} was drained", _task_exit(task)
            )
        return _ended(
            Outcome.LOST, task, f"shut down by the engine on node {where}", _task_exit(task)
        )
    if state == "orphaned":
        return _ended(Outcome.LOST, task, "orphaned: its node was gone too long", None)
    # "remove" and anything newer than this engine: the task is gone without a result.
    return _ended(Outcome.LOST, task, f"task ended in state {state!r} without a result", None)


def _container_lost(err: str | None) -> bool:
    """After a dockerd restart swarm's agent reports tasks whose container it lost (removed,
    or found again under the task's name) as failed/rejected: an engine loss, not the job's
    failure (measured with ``engine.sh restart-dockerd``)."""
    text = (err or "").lower()
    return "no such container" in text or "is already in use by container" in text


def _failed(task: TaskRecord) -> Observation:
    err = task.err or ""
    if "starting container failed" in err or "failed to start" in err.lower():
        return _ended(Outcome.FAILED, task, err, start_failure_code(err))
    code = task.exit_code
    if code is None:
        match = _EXIT_IN_ERR.search(err)
        code = int(match.group(1)) if match else None
    if code == 0:  # a failed task with code 0 lost its container (e.g. a failed mount)
        return _ended(Outcome.FAILED, task, err or "failed", 125)
    return _ended(Outcome.FAILED, task, err or None, code)


def observe_container(container: ContainerRecord) -> Observation:
    """Map a plain container (container mode) to an observation."""
    state = container.state
    if state == "created":
        return Observation(Phase.PENDING)
    if state in ("running", "paused", "restarting"):
        return Observation(Phase.RUNNING)
    if state == "exited":
        if container.error:
            code = start_failure_code(container.error)
            return Observation(Phase.ENDED, Outcome.FAILED, code, container.error)
        code = container.exit_code if container.exit_code is not None else 125
        outcome = Outcome.SUCCEEDED if code == 0 else Outcome.FAILED
        error = "out of memory (OOM killed)" if container.oom_killed else None
        return Observation(Phase.ENDED, outcome, code, error, at=container.finished_at)
    if state == "dead":
        return Observation(Phase.ENDED, Outcome.LOST, container.exit_code, "container is dead")
    return Observation(Phase.ENDED, Outcome.LOST, None, f"container in state {state!r}")
