"""A unix-socket proxy in front of the engine whose event streams can be cut on demand.

The supervisor's ``DOCKER_HOST`` points here, so the soak can drop its ``GET /events``
connection the way a network fault would, without a test hook in covey. Bytes are piped
through untouched; only the client's side is parsed (request heads, and bodies by
``Content-Length`` or chunked encoding) to spot ``/events`` requests on keep-alive
connections. It runs on an event loop of its own in a daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

from bench.proxy import forward_body, pipe, read_head

_Pair = tuple[asyncio.StreamWriter, asyncio.StreamWriter]


class EventCutter:
    """``with EventCutter(listen, upstream) as p: ... p.cut()``."""

    def __init__(self, listen: Path, upstream: Path) -> None:
        self.listen = listen
        self.upstream = upstream
        self.events_requests: list[float] = []  # time.monotonic() of each GET /events
        self._streams: set[_Pair] = set()
        self._clients: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-proxy", daemon=True)

    @property
    def docker_host(self) -> str:
        return f"unix://{self.listen}"

    def __enter__(self) -> EventCutter:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the event-cutting proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def open_streams(self) -> int:
        return len(self._streams)

    def cut(self) -> int:
        """Abort every open ``/events`` connection (both sides); returns how many there were."""
        return asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    async def _cut(self) -> int:
        pairs = list(self._streams)
        for client, upstream in pairs:
            client.transport.abort()
            upstream.transport.abort()
        return len(pairs)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self.listen.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self._handle, path=str(self.listen))
        self._ready.set()
        async with server:
            await self._stop.wait()
        # whatever is still connected is cut, and its handler finished, before the loop
        # closes (no socket or task is left for the garbage collector to complain about)
        for writer in list(self._clients):
            writer.transport.abort()
        handlers = [t for t in self._handlers if not t.done()]
        if handlers:
            await asyncio.wait(handlers, timeout=5)
        self.listen.unlink(missing_ok=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        self._clients.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        pump: asyncio.Task[None] | None = None
        pair: _Pair | None = None
        try:
            while (head := await read_head(reader)) is not None:
                if up_writer is None:
                    up_reader, up_writer = await asyncio.open_unix_connection(str(self.upstream))
                    pump = asyncio.create_task(pipe(up_reader, writer))
                if _path(head).endswith("/events"):
                    self.events_requests.append(time.monotonic())
                    pair = (writer, up_writer)
                    self._streams.add(pair)
                up_writer.write(head)
                await forward_body(head, reader, up_writer)
                await up_writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the engine is down, or a side hung up: the client sees a closed connection
        finally:
            if pair is not None:
                self._streams.discard(pair)
            if up_writer is not None:
                up_writer.close()
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump
            writer.close()
            self._clients.discard(writer)


def _path(head: bytes) -> str:
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    return parts[1].split("?", 1)[0] if len(parts) > 1 else ""
