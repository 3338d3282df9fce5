"""Whether a finished job runs again, and after how long.

Kept pure (no clock, no engine) so the whole table of cases is unit-tested, and so the runner and
``covey explain``-style output agree on the reason.

Two budgets are kept apart on purpose: ``attempts`` counts the job's own failures (a bad exit,
a deadline, an image the engine refused), while ``lost_retries`` counts runs the engine lost
(node down or drained, task orphaned). A lost run says nothing about the job, so it must not use
up the job's attempts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from covey.spec import RetryPolicy
from covey.states import Outcome

OUTCOMES: tuple[str, ...] = tuple(o.value for o in Outcome)

LOST_MAX_DELAY = 10.0
"""Cap on the wait before re-running a lost job: the job did nothing wrong, so be quick."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after one run: ``counts_as_loss`` says which budget the run used."""

    retry: bool
    delay: float
    counts_as_loss: bool
    reason: str


def backoff_delay(policy: RetryPolicy, n: int) -> float:
    """Seconds before retry number ``n`` (1 = first retry): exponential, capped."""
    if n < 1:
        return 0.0
    try:
        delay = float(policy.backoff * policy.factor ** (n - 1))
    except OverflowError:
        delay = math.inf
    return max(0.0, min(policy.max_backoff, delay))


def decide(
    policy: RetryPolicy, outcome: str, exit_code: int | None, runs: int, losses: int
) -> Decision:
    """Decide on the run that just ended with ``outcome``.

    ``runs`` counts the runs that used the ``attempts`` budget (failed, timed out, rejected),
    *including the one that just ended*; ``losses`` likewise counts engine-side losses including
    this one. So with ``attempts=3`` a job runs at most 3 times for its own failures, and with
    ``lost_retries=3`` it is re-run at most 3 times after losses.
    """
    if outcome == "succeeded":
        return Decision(False, 0.0, False, "succeeded")
    if outcome == "cancelled":
        return Decision(False, 0.0, False, "cancelled")
    if outcome == "lost":
        return _lost(policy, losses)
    if outcome == "failed":
        code = "unknown exit code" if exit_code is None else f"exit code {exit_code}"
        if policy.on_exit_codes is not None and exit_code not in policy.on_exit_codes:
            codes = ", ".join(str(c) for c in policy.on_exit_codes)
            return Decision(False, 0.0, False, f"{code} is not retryable (retried on: {codes})")
        return _own(policy, runs, f"{code} is retryable")
    if outcome == "timed_out":
        if not policy.on_timeout:
            return Decision(False, 0.0, False, "timed out (retry on timeout is off)")
        return _own(policy, runs, "timed out, retry on timeout is on")
    if outcome == "rejected":
        if not policy.on_rejected:
            return Decision(False, 0.0, False, "rejected by the engine (retry on rejected is off)")
        return _own(policy, runs, "rejected by the engine, retry on rejected is on")
    raise ValueError(f"unknown outcome {outcome!r} (one of {', '.join(OUTCOMES)})")


def _own(policy: RetryPolicy, runs: int, why: str) -> Decision:
    """A retry on the job's own ``attempts`` budget."""
    if policy.attempts <= 1:
        return Decision(False, 0.0, False, f"{why}, but retries are off (attempts: 1)")
    if runs >= policy.attempts:
        return Decision(False, 0.0, False, f"{why}, but all {policy.attempts} attempts are used up")
    delay = backoff_delay(policy, runs)
    return Decision(True, delay, False, f"{why} (run {runs + 1} of {policy.attempts})")


def _lost(policy: RetryPolicy, losses: int) -> Decision:
    """A retry on the separate ``lost_retries`` budget, with a short delay."""
    if losses > policy.lost_retries:
        return Decision(
            False,
            0.0,
            True,
            f"lost by the engine {losses} time{'' if losses == 1 else 's'}, "
            f"lost_retries ({policy.lost_retries}) used up",
        )
    delay = min(LOST_MAX_DELAY, backoff_delay(policy, losses))
    return Decision(
        True,
        delay,
        True,
        f"lost by the engine, not the job's fault (re-run {losses} of {policy.lost_retries})",
    )
