"""reaper.py without Docker: removal retries while the engine is unavailable, and gives up."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from covey.engine import NotFound, Unavailable
from covey.errors import EngineError
from covey.reaper import remove_with_retry

ATTEMPT: Any = SimpleNamespace(service="covey-x-1", engine_id="s1")


class Backend:
    """``remove`` fails with ``errors`` in turn, then succeeds."""

    def __init__(self, *errors: Exception, forever: Exception | None = None) -> None:
        self.errors = list(errors)
        self.forever = forever
        self.calls = 0

    async def remove(self, attempt: Any) -> bool:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        if self.forever is not None:
            raise self.forever
        return True


async def test_removal_is_retried_while_the_engine_is_unavailable() -> None:
    backend = Backend(Unavailable("restarting"), Unavailable("restarting"))
    assert await remove_with_retry(backend, ATTEMPT) is True  # type: ignore[arg-type]
    assert backend.calls == 3


async def test_already_gone_counts_as_removed() -> None:
    assert await remove_with_retry(Backend(NotFound("gone")), ATTEMPT) is True  # type: ignore[arg-type]


async def test_a_removal_still_unavailable_at_the_deadline_is_left_and_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = Backend(forever=Unavailable("connection refused"))
    removed = await remove_with_retry(backend, ATTEMPT, give_up_after=0.3)  # type: ignore[arg-type]
    assert removed is False
    assert backend.calls >= 2
    assert "remove covey-x-1: gave up after" in caplog.text
    assert "left for `covey prune`" in caplog.text


async def test_a_refused_removal_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    backend = Backend(forever=EngineError("remove service s1: permission denied"))
    assert await remove_with_retry(backend, ATTEMPT) is False  # type: ignore[arg-type]
    assert backend.calls == 1
    assert "permission denied" in caplog.text
