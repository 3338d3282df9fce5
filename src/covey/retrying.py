"""One way to try an engine request again: one backoff rule, one give-up rule.

Only an engine that cannot be reached right now (:class:`~covey.engine.Unavailable`: a
restarting dockerd, a manager without quorum) is worth asking again; a request the engine
refused will be refused again, so it is never retried here. Every retry in covey waits the
same way — doubling delays with a cap, shortened at random so that the hundreds of creates
waiting for a restarting engine do not all arrive in the same instant — and gives up the
same way: after a deadline (``--engine-timeout``, two minutes by default), with the last
error, so that no caller can wait forever without saying why.

A stream that covey keeps open for good (the event stream) uses :class:`Backoff` alone: it
never gives up, because the task list it only hints at is polled anyway.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from covey.engine import Unavailable
from covey.errors import EngineError

T = TypeVar("T")

GIVE_UP_AFTER = 120.0
"""Default deadline for retrying one request while the engine is unavailable (seconds)."""


@dataclass
class Backoff:
    """Delays that double from ``first`` up to ``cap``; each is cut by up to ``jitter``
    (a fraction) at random, so waiters that failed together do not retry together."""

    first: float = 0.25
    factor: float = 2.0
    cap: float = 5.0
    jitter: float = 0.25
    failures: int = field(default=0, init=False)

    def next(self) -> float:
        """The delay before the next try; each call counts one more failure."""
        delay = min(self.cap, self.first * self.factor ** min(self.failures, 64))
        self.failures += 1
        return delay * (1.0 - self.jitter * random.random())

    def reset(self) -> None:
        """It worked: the next failure starts again from ``first``."""
        self.failures = 0

    async def sleep(self) -> None:
        await anyio.sleep(self.next())


class GaveUp(EngineError):
    """A request still failed when its deadline came (or its caller stopped waiting)."""

    def __init__(self, message: str, last: BaseException) -> None:
        super().__init__(message)
        self.last = last


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    give_up_after: float = GIVE_UP_AFTER,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Unavailable,
    stop: Callable[[], bool] | None = None,
    on_retry: Callable[[BaseException], None] | None = None,
    backoff: Backoff | None = None,
) -> T:
    """``await call()`` until it succeeds, retrying only ``retry_on`` errors.

    Gives up with :class:`GaveUp` (naming ``what``, the time spent and the last error) once
    ``give_up_after`` seconds have passed since the first try — the last try is made at the
    deadline, not a backoff before it — or as soon as ``stop()`` says the result is no
    longer wanted. Any other error propagates at once. A try in flight is never cut short:
    the deadline bounds the waiting between tries, each request has its own timeout.
    """
    backoff = backoff or Backoff()
    started = time.monotonic()
    while True:
        try:
            return await call()
        except retry_on as exc:
            last = exc
        spent = time.monotonic() - started
        if stop is not None and stop():
            raise GaveUp(f"{what}: stopped while retrying: {last}", last) from last
        if spent >= give_up_after:
            raise GaveUp(f"{what}: gave up after {_seconds(spent)}: {last}", last) from last
        if on_retry is not None:
            on_retry(last)
        await anyio.sleep(min(backoff.next(), give_up_after - spent))
        if stop is not None and stop():
            raise GaveUp(f"{what}: stopped while retrying: {last}", last) from last


def _seconds(spent: float) -> str:
    return f"{spent:.1f}s" if spent < 10 else f"{spent:.0f}s"
