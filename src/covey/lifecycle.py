"""The rules of a job's life, in one place: which states a job may move between, and why.

The store's SQL guards are written from these sets (never from string lists of their own),
and what the end of an attempt means for its job is decided here from the job *as the
store holds it inside the recording transaction* — not from a copy read earlier. A copy
read earlier was how a cancel that raced a retryable failure left jobs ``retrying`` with
``cancel_requested`` set and nobody to end them.

Kept pure (no clock of its own, no store, no engine): the whole table is unit-tested.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from covey.policy import decide
from covey.spec import RetryPolicy
from covey.states import FINAL_STATE, TERMINAL, JobState, Outcome

DUE = frozenset({JobState.QUEUED, JobState.RETRYING})
"""Waiting for the submitter: no attempt in flight."""

IDLE = DUE | {JobState.WAITING}
"""Not ended and no attempt in flight: a cancel ends these at once."""

IN_FLIGHT = frozenset({JobState.PENDING, JobState.RUNNING})
"""An attempt exists on (or is being created on) the engine."""

RETRYABLE = TERMINAL - {JobState.SUCCEEDED}
"""What ``covey retry`` queues again: every end but success."""

CANCELLABLE = frozenset(JobState) - TERMINAL
"""Everything that has not ended may be cancelled."""


def sql_in(states: Iterable[JobState]) -> str:
    """``('a','b')`` for a SQL ``IN``: the guards quote the sets above, nothing else."""
    return "(" + ",".join(f"'{s.value}'" for s in sorted(states)) + ")"


@dataclass(frozen=True, slots=True)
class EndDecision:
    """What the end of an attempt means for its job."""

    state: JobState
    not_before: float | None = None
    counts_as_run: bool = True
    counts_as_loss: bool = False
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class JobBudget:
    """The part of a job row the end decision reads: its policy, what it used, and whether an
    operator asked to cancel it (read in the same transaction that records the end)."""

    retry: RetryPolicy
    runs: int
    losses: int
    cancel_requested: bool


def end_of_attempt(
    job: JobBudget, outcome: Outcome, exit_code: int | None, now: float
) -> EndDecision:
    """The job's next state after one attempt ended with ``outcome``.

    A cancel request wins over everything except a success that already happened: a job that
    ran to exit 0 before the request reached it did succeed, and says so.
    """
    counts_as_run = outcome not in (Outcome.LOST, Outcome.CANCELLED)
    counts_as_loss = outcome is Outcome.LOST
    if outcome is Outcome.CANCELLED or (job.cancel_requested and outcome is not Outcome.SUCCEEDED):
        return EndDecision(JobState.CANCELLED, counts_as_run=False, detail="cancelled")
    decision = decide(
        job.retry,
        outcome.value,
        exit_code,
        job.runs + int(counts_as_run),
        job.losses + int(counts_as_loss),
    )
    if decision.retry:
        return EndDecision(
            JobState.RETRYING,
            not_before=now + decision.delay,
            counts_as_run=counts_as_run,
            counts_as_loss=counts_as_loss,
            detail=decision.reason,
        )
    # the policy's reason is news only when a retry was possible at all
    quiet = outcome is Outcome.SUCCEEDED or (job.retry.attempts <= 1 and not counts_as_loss)
    return EndDecision(
        FINAL_STATE[outcome],
        counts_as_run=counts_as_run,
        counts_as_loss=counts_as_loss,
        detail=None if quiet else decision.reason or None,
    )
