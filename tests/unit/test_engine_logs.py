"""Engine log reads against a fake engine on a unix socket: streamed with the cap applied while
reading, an idle timeout rather than a total one, and a read that breaks keeps what it got."""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
from aiohttp import web

from covey.capture import Captured
from covey.engine import Engine

Body = Callable[[web.StreamResponse], Coroutine[Any, Any, None]]


def frame(kind: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", kind, len(data)) + data


@contextlib.asynccontextmanager
async def fake_engine(path: Path, body: Body) -> AsyncIterator[str]:
    """Answers ``_ping``, and any ``.../logs`` with a chunked stream written by ``body``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/_ping"):
            return web.Response(text="OK")
        response = web.StreamResponse()
        response.content_type = "application/vnd.docker.multiplexed-stream"
        response.enable_chunked_encoding()
        await response.prepare(request)
        await body(response)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, str(path)).start()
    try:
        yield f"unix://{path}"
    finally:
        await runner.cleanup()


async def test_a_log_is_read_whole_with_both_streams_apart(tmp_path: Path) -> None:
    async def body(response: web.StreamResponse) -> None:
        await response.write(frame(1, b"\xff\x00out\n") + frame(2, b"err"))
        await response.write(frame(1, b"no newline"))

    async with fake_engine(tmp_path / "e.sock", body) as host, Engine(host) as engine:
        read = await engine.container_logs("c1", timeout=5)
    assert read.complete
    assert read.stdout == Captured(b"\xff\x00out\nno newline", 16, False, True)
    assert read.stderr == Captured(b"err", 3, False, True)


async def test_the_cap_is_applied_while_reading_in_bounded_memory(tmp_path: Path) -> None:
    chunk = frame(1, b"y" * 65_000) + frame(2, b"e" * 535)
    rounds = 600  # 39 MB of stdout

    async def body(response: web.StreamResponse) -> None:
        for _ in range(rounds):
            await response.write(chunk)
        await response.write(frame(1, b"THE END"))

    async with fake_engine(tmp_path / "e.sock", body) as host, Engine(host) as engine:
        tracemalloc.start()
        try:
            read = await engine.service_logs("s1", timeout=5, cap=100_000)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert read.stdout.size == rounds * 65_000 + 7
    assert read.stdout.data.endswith(b"y" * 1000 + b"THE END")
    assert len(read.stdout.data) == 100_000 and read.stdout.truncated
    assert read.stderr.size == rounds * 535 and len(read.stderr.data) == 100_000
    assert read.complete
    assert peak < 3_000_000, f"peak {peak} bytes for a {rounds * 65_535} byte log"


async def test_a_long_read_goes_on_while_bytes_flow(tmp_path: Path) -> None:
    async def body(response: web.StreamResponse) -> None:
        for i in range(15):  # 0.75 s in all, never 0.3 s without a byte
            await response.write(frame(1, b"%d\n" % i))
            await anyio.sleep(0.05)

    async with fake_engine(tmp_path / "e.sock", body) as host, Engine(host) as engine:
        read = await engine.container_logs("c1", timeout=0.3)
    assert read.complete
    assert read.stdout.data == b"".join(b"%d\n" % i for i in range(15))


async def test_a_stalled_read_keeps_what_it_got_and_says_it_is_incomplete(tmp_path: Path) -> None:
    read_over = anyio.Event()

    async def body(response: web.StreamResponse) -> None:
        await response.write(frame(1, b"before the stall\n") + frame(2, b"err"))
        with anyio.move_on_after(5):
            await read_over.wait()

    async with fake_engine(tmp_path / "e.sock", body) as host, Engine(host) as engine:
        with anyio.fail_after(3):
            read = await engine.container_logs("c1", timeout=0.3)
        read_over.set()
    assert not read.complete
    assert read.problem is not None and "broke after 20 bytes" in read.problem
    assert read.stdout == Captured(b"before the stall\n", 17, False, complete=False)
    assert read.stderr == Captured(b"err", 3, False, complete=False)


async def test_a_connection_cut_midway_keeps_what_was_read(tmp_path: Path) -> None:
    async def body(response: web.StreamResponse) -> None:
        await response.write(frame(1, b"first\n") + frame(1, b"second")[:10])
        await response.drain()
        await anyio.sleep(0.1)
        transport = response._req.transport if response._req else None
        assert transport is not None
        transport.abort()

    async with fake_engine(tmp_path / "e.sock", body) as host, Engine(host) as engine:
        read = await engine.container_logs("c1", timeout=5)
    assert not read.complete
    assert read.stdout.data == b"first\nse"
    assert not read.stdout.complete and not read.stderr.complete
