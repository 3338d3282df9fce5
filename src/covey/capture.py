"""A job's output as it comes from the engine: split into stdout and stderr as the bytes
arrive, only the tail each stream may keep held, every byte counted.

The engine sends a log as one multiplexed stream (8-byte frame headers, then payloads) that
can be far larger than what covey keeps: a 300 MB log with a 1 MB cap. Read whole and cut
afterwards, it costs memory in proportion to the log; fed here chunk by chunk, memory stays
bounded by the cap. And bytes stay bytes: nothing here decodes.

:class:`Passthrough` is the other half of "nothing lost": ``covey run`` copies the job's
output from the engine's *followed* stream, which may lag the job by megabytes, and the
engine serves that stream only until the service is removed. So the reaper holds the removal
until the follower has written as many bytes per stream as its own full read counted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import anyio

STDOUT, STDERR = 1, 2
_HEADER = struct.Struct(">BxxxL")
HEADER_SIZE = _HEADER.size
# Past the cap, a tail may hold this much more before it is cut back to the cap: cutting
# moves the whole tail, so cutting at every write would cost cap bytes per write.
MIN_SLACK = 64 * 1024


@dataclass(frozen=True)
class Captured:
    """One stream of one attempt as read from the engine.

    ``data`` is all of it, or its last ``cap`` bytes when ``truncated``; ``size`` counts every
    byte the engine sent; ``complete`` is false when the read ended before the engine had
    given all of it (a broken or stalled connection), so ``size`` is then a lower bound.
    """

    data: bytes
    size: int
    truncated: bool
    complete: bool

    @classmethod
    def empty(cls) -> Captured:
        return cls(b"", 0, truncated=False, complete=True)


@dataclass(frozen=True)
class LogRead:
    """Both streams of one read; ``problem`` says why it is incomplete (``None``: it is not)."""

    stdout: Captured
    stderr: Captured
    problem: str | None = None

    @property
    def complete(self) -> bool:
        return self.problem is None


class Tail:
    """The last ``cap`` bytes written (all of them when ``cap`` is 0), and how many there were.

    Holds at most ``cap + max(cap // 2, MIN_SLACK)`` bytes plus the write in hand: the tail is
    cut back to the cap only when the slack is used up, so each byte is moved about twice.
    """

    def __init__(self, cap: int) -> None:
        if cap < 0:
            raise ValueError("cap must be 0 (keep everything) or more")
        self.cap = cap
        self.size = 0
        self._buf = bytearray()
        self._limit = cap + max(cap // 2, MIN_SLACK) if cap else 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.cap and len(data) >= self.cap:
            self._buf[:] = data[-self.cap :]
            return
        self._buf += data
        if self._limit and len(self._buf) > self._limit:
            del self._buf[: len(self._buf) - self.cap]

    def captured(self, *, complete: bool = True) -> Captured:
        cut = self.cap and len(self._buf) > self.cap
        data = bytes(self._buf[-self.cap :] if cut else self._buf)
        return Captured(data, self.size, truncated=self.size > len(data), complete=complete)


class Demux:
    """Splits a multiplexed log stream fed in chunks of any size, frame boundaries or not.

    A frame's payload is handed on as soon as its bytes arrive, not when the frame is whole,
    so a huge frame costs no more memory than a small one. Consecutive pieces of the same
    stream within one chunk are joined: a job printing short lines sends one frame per line.
    """

    def __init__(self) -> None:
        self._head = bytearray()  # a frame header split across chunks
        self._stream = STDOUT
        self._left = 0  # payload bytes of the current frame not yet seen

    @property
    def mid_frame(self) -> bool:
        """Did the stream so far end inside a frame (a read cut short)?"""
        return bool(self._head) or self._left > 0

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        """The payload bytes in ``chunk``, as (STDOUT or STDERR, bytes), in order."""
        view = memoryview(chunk)
        end = len(view)
        pos = 0
        runs: list[tuple[int, list[memoryview]]] = []
        unpack = _HEADER.unpack_from
        while pos < end:
            if not self._left:  # at a frame header: the common case is a whole one
                if self._head or end - pos < HEADER_SIZE:
                    pos = self._split_header(view, pos)
                    continue
                kind, self._left = unpack(view, pos)
                pos += HEADER_SIZE
                # 0 (stdin) and 3 (the engine's own errors, newer APIs) are not stderr
                self._stream = STDERR if kind == STDERR else STDOUT
                continue
            take = min(self._left, end - pos)
            self._left -= take
            if runs and runs[-1][0] == self._stream:
                runs[-1][1].append(view[pos : pos + take])
            else:
                runs.append((self._stream, [view[pos : pos + take]]))
            pos += take
        return [(stream, b"".join(pieces)) for stream, pieces in runs]

    def _split_header(self, view: memoryview, pos: int) -> int:
        """Take part of a header split across chunks; return the new position."""
        take = min(HEADER_SIZE - len(self._head), len(view) - pos)
        self._head += view[pos : pos + take]
        if len(self._head) == HEADER_SIZE:
            kind, self._left = _HEADER.unpack(self._head)
            self._head.clear()
            self._stream = STDERR if kind == STDERR else STDOUT
        return pos + take


class Passthrough:
    """How far a foreground follower has copied an attempt's output, and a hold on its removal.

    The follower calls :meth:`wrote` after each write and :meth:`stop` when it cannot go on
    (its stream broke, its stdout was closed). The reaper calls :meth:`drain` with the sizes
    of its full read before it removes the service.
    """

    def __init__(self) -> None:
        self.written = {STDOUT: 0, STDERR: 0}
        self.stopped = False
        self._target: tuple[int, int] | None = None
        self._progress = anyio.Event()

    def wrote(self, stream: int, n: int) -> None:
        self.written[stream] += n
        if self._target is not None:
            self._progress.set()

    def stop(self) -> None:
        self.stopped = True
        self._progress.set()

    def busy(self) -> None:
        """The follower is at work without writing (reading again what it has written)."""
        if self._target is not None:
            self._progress.set()

    @property
    def target(self) -> tuple[int, int] | None:
        """The sizes the reaper's full read counted, once it waits for them."""
        return self._target

    @property
    def caught_up(self) -> bool:
        if self._target is None:
            return False
        return self.written[STDOUT] >= self._target[0] and self.written[STDERR] >= self._target[1]

    async def drain(self, stdout: int, stderr: int, *, idle: float) -> bool:
        """Wait until the follower has written ``stdout`` and ``stderr`` bytes.

        Bounded by progress, not by a total time: a 300 MB log may take minutes to copy, but
        a follower that has written nothing for ``idle`` seconds is given up on (``False``).
        """
        self._target = (stdout, stderr)
        while not self.caught_up and not self.stopped:
            self._progress = anyio.Event()
            with anyio.move_on_after(idle) as scope:
                await self._progress.wait()
            if scope.cancelled_caught:
                return False
        return self.caught_up
