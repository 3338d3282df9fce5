"""What ``covey run`` decides once a job's followed output ended: write what the store has that
the stream missed, or say what could not be passed through (then it exits 125)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from covey.capture import STDERR, STDOUT, Passthrough
from covey.context import Context
from covey.foreground import _rest_from_store
from covey.store import LogRecord


class FakeStore:
    def __init__(self, records: dict[str, LogRecord]) -> None:
        self.records = records

    async def logs(self, attempt_id: str) -> dict[str, LogRecord]:
        return self.records


def ctx_with(**records: LogRecord) -> Context:
    fake: Any = type("Ctx", (), {"store": FakeStore(records)})()
    return cast(Context, fake)


def hold(stdout: int, stderr: int) -> Passthrough:
    h = Passthrough()
    h.wrote(STDOUT, stdout)
    h.wrote(STDERR, stderr)
    return h


def record(stream: str, data: bytes, size: int, *, complete: bool = True) -> LogRecord:
    return LogRecord(stream, data, size, truncated=len(data) < size, complete=complete)


async def test_nothing_missing_writes_nothing(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    ctx = ctx_with(stdout=record("stdout", b"abc", 3), stderr=record("stderr", b"", 0))
    assert await _rest_from_store(ctx, "a-1", hold(3, 0)) is None
    assert capsysbinary.readouterr() == (b"", b"")


async def test_what_the_stream_missed_comes_from_a_whole_stored_log(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    ctx = ctx_with(stdout=record("stdout", b"abc\xff", 4), stderr=record("stderr", b"e\n", 2))
    assert await _rest_from_store(ctx, "a-1", hold(1, 0)) is None
    assert capsysbinary.readouterr() == (b"bc\xff", b"e\n")


async def test_a_cut_stored_log_cannot_fill_the_gap_and_says_so(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    ctx = ctx_with(stdout=record("stdout", b"tail", 2_000_000), stderr=record("stderr", b"", 0))
    assert await _rest_from_store(ctx, "a-1", hold(1_600_000, 0)) == (
        "stdout: 1600000 of 2000000 bytes"
    )
    assert capsysbinary.readouterr() == (b"", b"")


async def test_an_incomplete_read_is_never_taken_for_all_of_it() -> None:
    ctx = ctx_with(
        stdout=record("stdout", b"abc", 3, complete=False),
        stderr=record("stderr", b"", 0, complete=False),
    )
    assert await _rest_from_store(ctx, "a-1", hold(3, 0)) == (
        "stdout: the engine could not give all of it; stderr: the engine could not give all of it"
    )


async def test_logs_that_were_never_stored_are_not_all_of_it() -> None:
    assert await _rest_from_store(ctx_with(), "a-1", hold(0, 0)) is not None
