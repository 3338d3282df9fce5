"""A counting HTTP proxy between a unix socket and the engine's socket.

Every approach under test talks to the engine through it, so "Docker API requests per job"
is counted the same way for all of them. Responses are piped through untouched (streams such
as ``/events`` included); only the client's side is parsed, request by request on keep-alive
connections, to count ``METHOD /path`` (ids replaced by ``{id}``).

Run as its own process so its CPU is neither the benchmark's nor covey's::

    python -m bench.proxy --listen /tmp/p.sock --upstream /path/docker.sock

It prints ``ready`` once it listens. ``GET /__bench/counts`` returns the counts since the last
``POST /__bench/reset``, ``GET /__bench/log`` every request since then as ``[time, key, path]``
(wall clock when its head arrived; the pipeline benchmark times its stages with it); these
three are answered by the proxy and not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

CONTROL = "/__bench/"
_VERSION = re.compile(r"^/v\d+\.\d+")
_COLLECTIONS = {
    "services",
    "containers",
    "tasks",
    "nodes",
    "images",
    "secrets",
    "networks",
    "configs",
    "volumes",
}
_VERBS = {"create", "json", "prune"}


def request_key(method: str, target: str) -> str:
    """``POST /v1.41/services/abc/update?x=1`` -> ``POST /services/{id}/update``."""
    path = _VERSION.sub("", target.split("?", 1)[0])
    parts = path.strip("/").split("/")
    out: list[str] = []
    for i, part in enumerate(parts):
        if i > 0 and parts[i - 1] in _COLLECTIONS and part not in _VERBS:
            out.append("{id}")
        else:
            out.append(part)
    return f"{method} /{'/'.join(out)}"


class Proxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.counts: Counter[str] = Counter()
        self.log: list[tuple[float, str, str]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_writer: asyncio.StreamWriter | None = None
        pump: asyncio.Task[None] | None = None
        try:
            while True:
                head = await read_head(reader)
                if head is None:
                    return
                method, target = _request_line(head)
                if target.startswith(CONTROL):
                    await self._control(method, target, writer)
                    return
                if up_writer is None:
                    up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
                    pump = asyncio.create_task(pipe(up_reader, writer))
                key = request_key(method, target)
                self.counts[key] += 1
                self.log.append((time.time(), key, _VERSION.sub("", target.split("?", 1)[0])))
                up_writer.write(head)
                await forward_body(head, reader, up_writer)
                await up_writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            # the client is gone: whatever the engine still sends has no reader
            if up_writer is not None:
                up_writer.close()
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump
            writer.close()

    async def _control(self, method: str, target: str, writer: asyncio.StreamWriter) -> None:
        if target.startswith(CONTROL + "reset") and method == "POST":
            self.counts.clear()
            self.log.clear()
            body = b"{}"
        elif target.startswith(CONTROL + "log"):
            body = json.dumps(self.log).encode()
        else:
            body = json.dumps(dict(self.counts)).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    """One request head (up to the blank line); ``None`` when the client closed cleanly.
    Shared with the soak's event-cutting proxy (soak/proxy.py)."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None


def _request_line(head: bytes) -> tuple[str, str]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    method, target, _ = [*line.split(" "), "", ""][:3]
    return method, target


def header(head: bytes, name: str) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.decode("latin-1").partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


async def forward_body(
    head: bytes, reader: asyncio.StreamReader, out: asyncio.StreamWriter
) -> None:
    length = header(head, "content-length")
    if length is not None:
        remaining = int(length)
        while remaining > 0:
            chunk = await reader.read(min(remaining, 65536))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", remaining)
            out.write(chunk)
            remaining -= len(chunk)
        return
    if (header(head, "transfer-encoding") or "").lower() == "chunked":
        while True:
            size_line = await reader.readuntil(b"\r\n")
            out.write(size_line)
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                out.write(await reader.readuntil(b"\r\n"))  # no trailers from our clients
                return
            out.write(await reader.readexactly(size + 2))


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:  # the other side went away (ConnectionError, or a socket torn down)
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(listen: str, upstream: str) -> None:
    proxy = Proxy(upstream)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(listen)
    server = await asyncio.start_unix_server(proxy.handle, path=listen, limit=1 << 20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(listen)


class ProxyProcess:
    """The proxy as a child process of the benchmark, and a tiny client for its counters."""

    def __init__(self, upstream: str, listen: str | Path) -> None:
        self.upstream = upstream
        self.listen = str(listen)
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> ProxyProcess:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.proxy",
                "--listen",
                self.listen,
                "--upstream",
                self.upstream,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise RuntimeError("the counting proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.listen}"

    async def _control(self, method: str, what: str) -> Any:
        connector = aiohttp.UnixConnector(path=self.listen)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(method, f"http://proxy{CONTROL}{what}") as resp,
        ):
            return await resp.json()

    async def reset(self) -> None:
        await self._control("POST", "reset")

    async def counts(self) -> dict[str, int]:
        data: dict[str, int] = await self._control("GET", "counts")
        return data

    async def request_log(self) -> list[tuple[float, str, str]]:
        """Every request since the last reset: (wall time its head arrived, key, path)."""
        return [(float(t), str(k), str(p)) for t, k, p in await self._control("GET", "log")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.upstream))


if __name__ == "__main__":
    main()
