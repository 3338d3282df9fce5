"""The one retry rule: what is retried, how long it waits, when it gives up. No Docker."""

from __future__ import annotations

import time

import pytest

from covey.engine import NotFound, Unavailable
from covey.errors import EngineError
from covey.retrying import Backoff, GaveUp, retry

FAST = Backoff(first=0.01, cap=0.02, jitter=0.0)


class Flaky:
    """Fails with ``errors`` in turn, then returns ``"done"``; counts the calls."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_backoff_doubles_up_to_its_cap_and_starts_again_after_a_reset() -> None:
    backoff = Backoff(first=0.25, factor=2.0, cap=5.0, jitter=0.0)
    assert [backoff.next() for _ in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next() == 0.25


def test_backoff_jitter_only_shortens_a_delay() -> None:
    backoff = Backoff(first=1.0, factor=1.0, cap=1.0, jitter=0.25)
    delays = [backoff.next() for _ in range(200)]
    assert all(0.75 <= d <= 1.0 for d in delays)
    assert len(set(delays)) > 1  # waiters that failed together do not retry together


def test_backoff_survives_a_very_long_outage() -> None:
    backoff = Backoff(jitter=0.0)
    backoff.failures = 10_000
    assert backoff.next() == backoff.cap


async def test_unavailable_is_retried_until_it_works() -> None:
    call = Flaky(Unavailable("down"), Unavailable("still down"))
    seen: list[str] = []
    result = await retry(
        call, what="create x", backoff=FAST, on_retry=lambda exc: seen.append(str(exc))
    )
    assert result == "done"
    assert call.calls == 3
    assert seen == ["down", "still down"]


@pytest.mark.parametrize("error", [EngineError("network x not found"), NotFound("gone")])
async def test_a_refusal_is_never_retried(error: Exception) -> None:
    call = Flaky(error)
    with pytest.raises(type(error)):
        await retry(call, what="create x", backoff=FAST)
    assert call.calls == 1


async def test_gives_up_at_the_deadline_naming_what_and_the_last_error() -> None:
    call = Flaky(*[Unavailable(f"down {n}") for n in range(10_000)])
    started = time.monotonic()
    with pytest.raises(GaveUp) as info:
        await retry(call, what="create covey-x-1", give_up_after=0.2, backoff=FAST)
    spent = time.monotonic() - started
    assert 0.2 <= spent < 1.0
    assert str(info.value).startswith("create covey-x-1: gave up after 0.")
    assert f"down {call.calls - 1}" in str(info.value)  # the last error, not the first
    assert isinstance(info.value.last, Unavailable)
    assert isinstance(info.value, EngineError)  # callers treat it as final, not as unavailable
    assert not isinstance(info.value, Unavailable)


async def test_the_last_try_is_made_at_the_deadline_not_a_backoff_before_it() -> None:
    call = Flaky(Unavailable("down"), Unavailable("down"))
    slow = Backoff(first=10.0, cap=10.0, jitter=0.0)
    started = time.monotonic()
    with pytest.raises(GaveUp):
        await retry(call, what="x", give_up_after=0.1, backoff=slow)
    assert time.monotonic() - started < 1.0  # the 10 s backoff was cut to the deadline
    assert call.calls == 2


async def test_a_deadline_of_zero_tries_once() -> None:
    call = Flaky(Unavailable("down"))
    with pytest.raises(GaveUp):
        await retry(call, what="x", give_up_after=0.0, backoff=FAST)
    assert call.calls == 1


async def test_stops_as_soon_as_the_result_is_no_longer_wanted() -> None:
    call = Flaky(*[Unavailable("down") for _ in range(10_000)])
    wanted = [True]

    def on_retry(exc: BaseException) -> None:
        if call.calls == 3:
            wanted[0] = False  # e.g. the job was cancelled while its create was retried

    with pytest.raises(GaveUp) as info:
        await retry(call, what="x", backoff=FAST, stop=lambda: not wanted[0], on_retry=on_retry)
    assert call.calls == 3
    assert "stopped while retrying" in str(info.value)
