"""The retry decision table."""

from __future__ import annotations

import pytest

from covey.policy import LOST_MAX_DELAY, Decision, backoff_delay, decide
from covey.spec import RetryPolicy

NO_RETRY = RetryPolicy()
THREE = RetryPolicy(attempts=3, backoff=2.0, factor=2.0, max_backoff=300.0)
ONLY_75 = RetryPolicy(attempts=3, backoff=1.0, on_exit_codes=(75,))
EVERYTHING = RetryPolicy(attempts=4, backoff=1.0, on_timeout=True, on_rejected=True)


Case = tuple[RetryPolicy, str, int | None, int, int, bool, float, bool]


@pytest.mark.parametrize(
    "case",
    [
        # success and cancellation are final
        (EVERYTHING, "succeeded", 0, 1, 0, False, 0.0, False),
        (EVERYTHING, "cancelled", None, 1, 0, False, 0.0, False),
        # failures under the default policy: one run only
        (NO_RETRY, "failed", 1, 1, 0, False, 0.0, False),
        # any non-zero exit is retryable when on_exit_codes is None
        (THREE, "failed", 1, 1, 0, True, 2.0, False),
        (THREE, "failed", 137, 2, 0, True, 4.0, False),
        (THREE, "failed", 1, 3, 0, False, 0.0, False),
        (THREE, "failed", None, 1, 0, True, 2.0, False),
        # only listed exit codes
        (ONLY_75, "failed", 75, 1, 0, True, 1.0, False),
        (ONLY_75, "failed", 75, 2, 0, True, 2.0, False),
        (ONLY_75, "failed", 75, 3, 0, False, 0.0, False),
        (ONLY_75, "failed", 1, 1, 0, False, 0.0, False),
        (ONLY_75, "failed", None, 1, 0, False, 0.0, False),
        # timeouts and rejections only when asked for
        (THREE, "timed_out", None, 1, 0, False, 0.0, False),
        (EVERYTHING, "timed_out", None, 1, 0, True, 1.0, False),
        (EVERYTHING, "timed_out", None, 4, 0, False, 0.0, False),
        (THREE, "rejected", None, 1, 0, False, 0.0, False),
        (EVERYTHING, "rejected", None, 2, 0, True, 2.0, False),
        # losses use their own budget, whatever attempts says
        (NO_RETRY, "lost", None, 0, 1, True, 1.0, True),
        (NO_RETRY, "lost", None, 5, 3, True, 4.0, True),
        (NO_RETRY, "lost", None, 0, 4, False, 0.0, True),
        (RetryPolicy(lost_retries=0), "lost", None, 0, 1, False, 0.0, True),
        (RetryPolicy(backoff=100.0), "lost", None, 0, 1, True, LOST_MAX_DELAY, True),
        (RetryPolicy(backoff=0.0), "lost", None, 0, 2, True, 0.0, True),
    ],
)
def test_decide(case: Case) -> None:
    """(policy, outcome, exit code, runs, losses) -> (retry, delay, counts as loss)."""
    policy, outcome, code, runs, losses, retry, delay, loss = case
    decision = decide(policy, outcome, code, runs, losses)
    assert isinstance(decision, Decision)
    assert (decision.retry, decision.delay, decision.counts_as_loss) == (retry, delay, loss)
    assert decision.reason


@pytest.mark.parametrize(
    ("policy", "call", "reason"),
    [
        (ONLY_75, ("failed", 75, 1, 0), "exit code 75 is retryable (run 2 of 3)"),
        (ONLY_75, ("failed", 1, 1, 0), "exit code 1 is not retryable (retried on: 75)"),
        (
            ONLY_75,
            ("failed", 75, 3, 0),
            "exit code 75 is retryable, but all 3 attempts are used up",
        ),
        (
            NO_RETRY,
            ("failed", 2, 1, 0),
            "exit code 2 is retryable, but retries are off (attempts: 1)",
        ),
        (THREE, ("timed_out", None, 1, 0), "timed out (retry on timeout is off)"),
        (THREE, ("rejected", None, 1, 0), "rejected by the engine (retry on rejected is off)"),
        (THREE, ("succeeded", 0, 1, 0), "succeeded"),
        (THREE, ("cancelled", None, 1, 0), "cancelled"),
    ],
)
def test_reasons(policy: RetryPolicy, call: tuple[str, int | None, int, int], reason: str) -> None:
    assert decide(policy, *call).reason == reason


def test_lost_reasons() -> None:
    assert "re-run 1 of 3" in decide(NO_RETRY, "lost", None, 0, 1).reason
    assert "lost_retries (3) used up" in decide(NO_RETRY, "lost", None, 0, 4).reason


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, 0.0), (1, 2.0), (2, 4.0), (3, 8.0), (8, 256.0), (9, 300.0), (5000, 300.0)],
)
def test_backoff_grows_and_is_capped(n: int, expected: float) -> None:
    assert backoff_delay(THREE, n) == expected


def test_backoff_with_factor_one_is_constant() -> None:
    policy = RetryPolicy(attempts=10, backoff=3.0, factor=1.0)
    assert [backoff_delay(policy, n) for n in (1, 2, 9)] == [3.0, 3.0, 3.0]


def test_unknown_outcome_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown outcome 'exploded'"):
        decide(THREE, "exploded", None, 1, 0)
