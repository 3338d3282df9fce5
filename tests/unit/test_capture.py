"""capture.py without Docker: the incremental demux, the bounded tail, the passthrough hold."""

from __future__ import annotations

import random
import struct

import anyio
import pytest

from covey.capture import MIN_SLACK, STDERR, STDOUT, Captured, Demux, Passthrough, Tail


def frame(kind: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", kind, len(data)) + data


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, pos = [], 0
    for size in sizes:
        chunks.append(data[pos : pos + size])
        pos += size
    return [*chunks, data[pos:]]


def demux_all(chunks: list[bytes]) -> tuple[bytes, bytes, Demux]:
    out, err, demux = bytearray(), bytearray(), Demux()
    for chunk in chunks:
        for stream, data in demux.feed(chunk):
            (err if stream == STDERR else out).extend(data)
    return bytes(out), bytes(err), demux


STREAM = frame(1, b"out1\n") + frame(2, b"err\n") + frame(1, b"") + frame(1, b"out2\xff\x00")


def test_demux_keeps_streams_apart_and_bytes_as_they_are() -> None:
    out, err, demux = demux_all([STREAM])
    assert (out, err) == (b"out1\nout2\xff\x00", b"err\n")
    assert not demux.mid_frame


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_demux_gives_the_same_bytes_wherever_a_chunk_ends(cut: int) -> None:
    out, err, demux = demux_all([STREAM[:cut], STREAM[cut:]])
    assert (out, err) == (b"out1\nout2\xff\x00", b"err\n")
    assert not demux.mid_frame


def test_demux_in_one_byte_chunks_and_random_chunks() -> None:
    rng = random.Random(7)
    frames = [(rng.choice((1, 2)), rng.randbytes(rng.randrange(0, 300))) for _ in range(200)]
    stream = b"".join(frame(k, d) for k, d in frames)
    want_out = b"".join(d for k, d in frames if k == 1)
    want_err = b"".join(d for k, d in frames if k == 2)
    assert demux_all([stream[i : i + 1] for i in range(len(stream))])[:2] == (want_out, want_err)
    sizes = [rng.randrange(1, 500) for _ in range(100)]
    assert demux_all(split(stream, sizes))[:2] == (want_out, want_err)


def test_demux_hands_on_a_huge_frame_in_pieces_as_they_arrive() -> None:
    demux = Demux()
    payload = b"x" * 1_000_000
    head, rest = frame(1, payload)[:8], payload
    assert demux.feed(head) == []
    assert demux.mid_frame
    pieces = [demux.feed(rest[i : i + 65536]) for i in range(0, len(rest), 65536)]
    assert all(len(p) == 1 and len(p[0][1]) <= 65536 for p in pieces)
    assert b"".join(p[0][1] for p in pieces) == payload
    assert not demux.mid_frame


def test_demux_joins_runs_of_one_stream_within_a_chunk() -> None:
    lines = b"".join(frame(1, b"y\n") for _ in range(1000)) + frame(2, b"e") + frame(1, b"z")
    assert Demux().feed(lines) == [(STDOUT, b"y\n" * 1000), (STDERR, b"e"), (STDOUT, b"z")]


def test_demux_says_when_the_stream_stopped_inside_a_frame() -> None:
    for cut in (3, 8, 10):
        demux = Demux()
        demux.feed(frame(1, b"partial")[:cut])
        assert demux.mid_frame


def test_a_stream_kind_other_than_stderr_is_stdout() -> None:
    assert Demux().feed(frame(0, b"a") + frame(3, b"b")) == [(STDOUT, b"ab")]


def test_tail_keeps_everything_with_cap_zero() -> None:
    tail = Tail(0)
    for _ in range(100):
        tail.write(b"0123456789")
    assert tail.captured() == Captured(b"0123456789" * 100, 1000, truncated=False, complete=True)


def test_tail_keeps_the_last_cap_bytes_and_counts_all() -> None:
    tail = Tail(4)
    tail.write(b"0123456789")
    tail.write(b"ab")
    assert tail.captured() == Captured(b"89ab", 12, truncated=True, complete=True)
    assert Tail(4).captured(complete=False) == Captured(b"", 0, truncated=False, complete=False)


def test_tail_under_the_cap_is_not_truncated() -> None:
    tail = Tail(10)
    tail.write(b"abc")
    tail.write(b"defghij")
    assert tail.captured() == Captured(b"abcdefghij", 10, truncated=False, complete=True)


def test_tail_memory_is_bounded_by_the_cap_not_by_what_was_written() -> None:
    cap = 100_000
    tail = Tail(cap)
    rng = random.Random(1)
    written = bytearray()
    peak = 0
    for _ in range(3000):
        data = rng.randbytes(rng.randrange(1, 3000))
        written += data
        tail.write(data)
        peak = max(peak, len(tail._buf))
    assert len(written) > 40 * cap
    assert peak <= cap + max(cap // 2, MIN_SLACK) + 3000
    assert tail.captured() == Captured(bytes(written[-cap:]), len(written), True, True)


def test_tail_rejects_a_negative_cap() -> None:
    with pytest.raises(ValueError, match="cap"):
        Tail(-1)


async def test_drain_returns_once_the_follower_has_written_the_target() -> None:
    hold = Passthrough()
    hold.wrote(STDOUT, 5)

    async def follower() -> None:
        for _ in range(10):
            await anyio.sleep(0.01)
            hold.wrote(STDOUT, 10)
            hold.wrote(STDERR, 1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(follower)
        assert await hold.drain(105, 10, idle=5)
    assert hold.written == {STDOUT: 105, STDERR: 10}


async def test_drain_gives_up_on_a_follower_that_stalls_or_stops() -> None:
    hold = Passthrough()
    hold.wrote(STDOUT, 3)
    with anyio.fail_after(2):
        assert not await hold.drain(10, 0, idle=0.1)
    stopped = Passthrough()
    stopped.stop()
    with anyio.fail_after(1):
        assert not await stopped.drain(10, 0, idle=60)


async def test_drain_waits_as_long_as_the_follower_makes_progress() -> None:
    hold = Passthrough()

    async def slow_follower() -> None:
        for _ in range(20):  # 0.6 s in all, each step well within the idle timeout
            await anyio.sleep(0.03)
            hold.wrote(STDOUT, 1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_follower)
        assert await hold.drain(20, 0, idle=0.2)
