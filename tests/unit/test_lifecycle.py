"""The job state machine's rules: what the end of an attempt means, and the SQL guards' sets."""

from __future__ import annotations

import itertools
import sqlite3

import pytest

from covey.lifecycle import (
    CANCELLABLE,
    DUE,
    IDLE,
    IN_FLIGHT,
    RETRYABLE,
    EndDecision,
    JobBudget,
    end_of_attempt,
    sql_in,
)
from covey.policy import LOST_MAX_DELAY
from covey.spec import RetryPolicy
from covey.states import TERMINAL, JobState, Outcome

J = JobState

NOW = 1_000_000.0
NO_RETRY = RetryPolicy()  # attempts=1, lost_retries=3
THREE = RetryPolicy(attempts=3, backoff=2.0, factor=2.0)
ONLY_75 = RetryPolicy(attempts=3, backoff=1.0, on_exit_codes=(75,))
ASKED = RetryPolicy(attempts=3, backoff=5.0, on_timeout=True, on_rejected=True)
ONE_LOSS = RetryPolicy(attempts=5, backoff=4.0, lost_retries=1)
CAPPED = RetryPolicy(attempts=10, backoff=100.0, factor=10.0, max_backoff=300.0)
SLOW = RetryPolicy(attempts=1, backoff=60.0, lost_retries=3)

S, F, T, R, L, C = (
    Outcome.SUCCEEDED,
    Outcome.FAILED,
    Outcome.TIMED_OUT,
    Outcome.REJECTED,
    Outcome.LOST,
    Outcome.CANCELLED,
)


def budget(policy: RetryPolicy, runs: int = 0, losses: int = 0, cancel: bool = False) -> JobBudget:
    return JobBudget(policy, runs, losses, cancel)


# (job, outcome, exit code) -> (state, delay or None, counts_as_run, counts_as_loss)
TABLE: list[tuple[str, JobBudget, Outcome, int | None, JobState, float | None, bool, bool]] = [
    # success is final, whatever the policy
    ("success", budget(THREE), S, 0, J.SUCCEEDED, None, True, False),
    ("success, retries left", budget(ASKED, runs=1), S, 0, J.SUCCEEDED, None, True, False),
    # failures: retried while runs are left, with the policy's exponential backoff
    ("failure, no retries", budget(NO_RETRY), F, 1, J.FAILED, None, True, False),
    ("failure, 1st of 3", budget(THREE), F, 1, J.RETRYING, 2.0, True, False),
    ("failure, 2nd of 3", budget(THREE, runs=1), F, 137, J.RETRYING, 4.0, True, False),
    ("failure, last of 3", budget(THREE, runs=2), F, 1, J.FAILED, None, True, False),
    ("failure, no exit code", budget(THREE), F, None, J.RETRYING, 2.0, True, False),
    ("backoff capped", budget(CAPPED, runs=3), F, 1, J.RETRYING, 300.0, True, False),
    # losses do not use up the job's own attempts, and vice versa
    ("failure, losses used", budget(THREE, losses=9), F, 1, J.RETRYING, 2.0, True, False),
    # only the listed exit codes
    ("exit code listed", budget(ONLY_75), F, 75, J.RETRYING, 1.0, True, False),
    ("exit code not listed", budget(ONLY_75), F, 1, J.FAILED, None, True, False),
    ("no code, codes listed", budget(ONLY_75), F, None, J.FAILED, None, True, False),
    # timeouts and rejections are retried only when the policy says so
    ("timeout, not asked", budget(THREE), T, None, J.TIMED_OUT, None, True, False),
    ("timeout, asked", budget(ASKED), T, None, J.RETRYING, 5.0, True, False),
    ("timeout, asked, used", budget(ASKED, runs=2), T, None, J.TIMED_OUT, None, True, False),
    ("rejected, not asked", budget(THREE), R, None, J.REJECTED, None, True, False),
    ("rejected, asked", budget(ASKED, runs=1), R, None, J.RETRYING, 10.0, True, False),
    # a loss uses the separate lost_retries budget, with a short delay
    ("lost, attempts: 1", budget(NO_RETRY), L, None, J.RETRYING, 1.0, False, True),
    ("lost, runs used", budget(THREE, runs=3), L, None, J.RETRYING, 2.0, False, True),
    ("lost, last loss", budget(NO_RETRY, losses=2), L, None, J.RETRYING, 4.0, False, True),
    ("lost, losses used", budget(NO_RETRY, losses=3), L, None, J.LOST, None, False, True),
    ("lost, 2nd of 1", budget(ONE_LOSS, losses=1), L, None, J.LOST, None, False, True),
    ("lost, delay capped", budget(SLOW), L, None, J.RETRYING, LOST_MAX_DELAY, False, True),
    # an attempt the operator cancelled
    ("cancelled", budget(THREE), C, None, J.CANCELLED, None, False, False),
    ("cancelled, 137", budget(ASKED), C, 137, J.CANCELLED, None, False, False),
    # a cancel request (read in the recording transaction) wins over a retry and a failure...
    ("cancel vs retry", budget(THREE, cancel=True), F, 1, J.CANCELLED, None, False, False),
    ("cancel vs failure", budget(NO_RETRY, cancel=True), F, 1, J.CANCELLED, None, False, False),
    ("cancel vs timeout", budget(ASKED, cancel=True), T, None, J.CANCELLED, None, False, False),
    ("cancel vs timeout end", budget(THREE, cancel=True), T, None, J.CANCELLED, None, False, False),
    ("cancel vs rejected", budget(ASKED, cancel=True), R, None, J.CANCELLED, None, False, False),
    ("cancel vs lost", budget(NO_RETRY, cancel=True), L, None, J.CANCELLED, None, False, False),
    ("cancel vs lost end", budget(NO_RETRY, 0, 3, True), L, None, J.CANCELLED, None, False, False),
    ("cancel and cancelled", budget(THREE, cancel=True), C, None, J.CANCELLED, None, False, False),
    # ... but not over a success that already happened
    ("cancel vs success", budget(THREE, cancel=True), S, 0, J.SUCCEEDED, None, True, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("job", "outcome", "code", "state", "delay", "run", "loss"),
    [case[1:] for case in TABLE],
    ids=[case[0] for case in TABLE],
)
def test_end_of_attempt(
    job: JobBudget,
    outcome: Outcome,
    code: int | None,
    state: JobState,
    delay: float | None,
    run: bool,
    loss: bool,
) -> None:
    decision = end_of_attempt(job, outcome, code, NOW)
    assert decision.state is state
    assert decision.not_before == (None if delay is None else pytest.approx(NOW + delay))
    assert (decision.counts_as_run, decision.counts_as_loss) == (run, loss)


def test_the_reasons_say_why() -> None:
    retrying = end_of_attempt(budget(THREE), F, 3, NOW)
    assert retrying.detail == "exit code 3 is retryable (run 2 of 3)"
    used_up = end_of_attempt(budget(THREE, runs=2), F, 3, NOW)
    assert used_up.detail == "exit code 3 is retryable, but all 3 attempts are used up"
    not_listed = end_of_attempt(budget(ONLY_75), F, 1, NOW)
    assert not_listed.detail == "exit code 1 is not retryable (retried on: 75)"
    lost = end_of_attempt(budget(NO_RETRY, losses=3), L, None, NOW)
    assert lost.detail is not None and "lost_retries (3) used up" in lost.detail
    assert end_of_attempt(budget(THREE, cancel=True), F, 1, NOW).detail == "cancelled"
    # a policy that never retries has nothing to explain; neither has a success
    assert end_of_attempt(budget(NO_RETRY), F, 1, NOW).detail is None
    assert end_of_attempt(budget(THREE), S, 0, NOW).detail is None


@pytest.mark.parametrize("policy", [NO_RETRY, THREE, ONLY_75, ASKED, ONE_LOSS])
def test_every_decision_is_consistent(policy: RetryPolicy) -> None:
    """Over every outcome, budget and cancel flag: only a retry has a due time (in the
    future), an outcome never becomes another one's final state, and a requested cancel
    ends everything but a success."""
    for outcome, runs, losses, cancel, code in itertools.product(
        Outcome, range(4), range(5), (False, True), (None, 0, 1, 75)
    ):
        decision = end_of_attempt(budget(policy, runs, losses, cancel), outcome, code, NOW)
        assert isinstance(decision, EndDecision)
        if decision.state is JobState.RETRYING:
            assert decision.not_before is not None and decision.not_before >= NOW
            assert not cancel
        else:
            assert decision.not_before is None
            assert decision.state in TERMINAL
        if cancel and outcome is not Outcome.SUCCEEDED:
            assert decision.state is JobState.CANCELLED
        elif decision.state is not JobState.RETRYING:
            assert decision.state.value == outcome.value
        assert not (decision.counts_as_run and decision.counts_as_loss)


# -- the sets the SQL guards are written from ----------------------------------------------


def test_sql_in_quotes_and_sorts() -> None:
    assert sql_in({JobState.RUNNING, JobState.PENDING}) == "('pending','running')"
    assert sql_in([JobState.QUEUED, JobState.CANCELLED, JobState.LOST]) == (
        "('cancelled','lost','queued')"
    )
    assert sql_in([JobState.TIMED_OUT]) == "('timed_out')"
    # the same set gives the same text whatever its order (the guards are cached strings)
    states = list(JobState)
    assert sql_in(states) == sql_in(reversed(states)) == sql_in(set(states))
    assert sql_in(TERMINAL) == (
        "('cancelled','failed','lost','rejected','skipped','succeeded','timed_out')"
    )


def test_sql_in_is_what_sqlite_reads_as_strings() -> None:
    """Single quotes: SQLite reads a double-quoted word as a column when one has that name."""
    with sqlite3.connect(":memory:") as db:
        db.execute("CREATE TABLE jobs (queued TEXT, state TEXT)")
        db.execute("INSERT INTO jobs VALUES ('x', 'queued'), ('y', 'running'), ('z', 'failed')")
        due = [r[0] for r in db.execute(f"SELECT state FROM jobs WHERE state IN {sql_in(DUE)}")]
        ended = db.execute(f"SELECT state FROM jobs WHERE state IN {sql_in(TERMINAL)}").fetchall()
    assert due == ["queued"]
    assert ended == [("failed",)]


def test_the_sets_partition_the_states() -> None:
    assert frozenset(JobState) == IDLE | IN_FLIGHT | TERMINAL
    assert not (IDLE & IN_FLIGHT) and not (IDLE & TERMINAL) and not (IN_FLIGHT & TERMINAL)
    assert {JobState.QUEUED, JobState.RETRYING} == DUE
    assert DUE | {JobState.WAITING} == IDLE  # waiting for needs: not due, but cancelled at once
    assert {JobState.PENDING, JobState.RUNNING} == IN_FLIGHT
    assert IDLE | IN_FLIGHT == CANCELLABLE
    assert TERMINAL - {JobState.SUCCEEDED} == RETRYABLE
    assert JobState.CANCELLED in RETRYABLE and JobState.LOST in RETRYABLE
