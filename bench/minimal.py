"""The least any client must do per job, as a floor for covey's CPU per job.

Per job: create the service, learn its end from the container's ``die`` event, read the
container's logs, remove the service: three requests and one event, no store, no tracking,
no retries. It runs in a child process of its own (``python -m bench.minimal ...``), like
covey's, so ``time.process_time`` is the client's own CPU. Two transports:

- ``aiohttp``: the HTTP stack covey uses (aiodocker runs on aiohttp);
- ``raw``: hand-written HTTP/1.1 on asyncio unix sockets, to show what the HTTP library
  itself costs on this machine.

Neither is a usable tool (a lost event loses a job; nothing survives a crash): they answer
"how much of covey's CPU per job would any client pay here?".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

from bench.api import API, Docker, service_body
from bench.harness import APPROACH_LABEL, RUN_LABEL

TRANSPORTS = ("aiohttp", "raw")


class Client(Protocol):
    async def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None
    ) -> Any: ...

    def events(self, filters: Mapping[str, list[str]]) -> AsyncIterator[dict[str, Any]]: ...


class RawDocker:
    """HTTP/1.1 with keep-alive over a unix socket, Content-Length and chunked bodies only."""

    def __init__(self, socket: str) -> None:
        self.socket = socket
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def __aenter__(self) -> RawDocker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for _, writer in self._idle:
            writer.close()

    @staticmethod
    def _head(method: str, path: str, params: Mapping[str, Any] | None, body: bytes) -> bytes:
        query = {
            k: (json.dumps(v) if k == "filters" else str(v)) for k, v in (params or {}).items()
        }
        target = f"/{API}/{path}" + (f"?{urlencode(query)}" if query else "")
        head = f"{method} {target} HTTP/1.1\r\nHost: docker\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        return (head + "\r\n").encode()

    @staticmethod
    async def _status_and_headers(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers

    @staticmethod
    async def _chunk(reader: asyncio.StreamReader) -> bytes:
        size = int((await reader.readline()).split(b";")[0], 16)
        data = await reader.readexactly(size) if size else b""
        await reader.readline()
        return data

    async def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None
    ) -> Any:
        raw_body = json.dumps(body).encode() if body is not None else b""
        reader, writer = (
            self._idle.pop() if self._idle else await asyncio.open_unix_connection(self.socket)
        )
        writer.write(self._head(method, path, params, raw_body) + raw_body)
        status, headers = await self._status_and_headers(reader)
        if "content-length" in headers:
            payload = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            parts = []
            while chunk := await self._chunk(reader):
                parts.append(chunk)
            payload = b"".join(parts)
        else:
            payload = b""
        self._idle.append((reader, writer))
        if status >= 400:
            raise RuntimeError(f"HTTP {status}: {payload[:200]!r}")
        if headers.get("content-type", "").startswith("application/json") and payload:
            return json.loads(payload)
        return payload

    async def events(self, filters: Mapping[str, list[str]]) -> AsyncIterator[dict[str, Any]]:
        reader, writer = await asyncio.open_unix_connection(self.socket)
        try:
            writer.write(self._head("GET", "events", {"filters": filters}, b""))
            status, _ = await self._status_and_headers(reader)
            if status >= 400:
                raise RuntimeError(f"events: HTTP {status}")
            buffer = b""
            while chunk := await self._chunk(reader):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            writer.close()


async def _jobs(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    approach = f"minimal-{args.transport}"
    labels = {RUN_LABEL: args.run_id, APPROACH_LABEL: approach}
    ends: dict[str, asyncio.Future[tuple[str, int]]] = {}
    loop = asyncio.get_running_loop()
    subscribed = asyncio.Event()

    async def follow() -> None:
        stream = client.events(
            {"type": ["container"], "event": ["die"], "label": [f"{APPROACH_LABEL}={approach}"]}
        )
        subscribed.set()
        async for event in stream:
            attributes = event.get("Actor", {}).get("Attributes", {})
            waiter = ends.get(attributes.get("bench.job", ""))
            if waiter is not None and not waiter.done():
                waiter.set_result((event["Actor"]["ID"], int(attributes.get("exitCode", -1))))

    follower = asyncio.create_task(follow())
    await subscribed.wait()
    await asyncio.sleep(1.0)  # the stream opens at its first read: let it, before any create
    slots = asyncio.Semaphore(args.max_concurrent)
    completions: list[float] = []
    codes: list[int] = []
    t0 = time.monotonic()

    async def job(i: int) -> None:
        key = f"{args.run_id}-{i}"
        async with slots:
            ends[key] = loop.create_future()
            body = service_body(f"bench-{args.run_id}-min-{i}", args.command, labels)
            body["TaskTemplate"]["ContainerSpec"]["Labels"]["bench.job"] = key
            created = await client.request("POST", "services/create", body=body)
            container, code = await ends[key]
            completions.append(time.monotonic() - t0)
            codes.append(code)
            await client.request("GET", f"containers/{container}/logs", params={"stdout": 1})
            await client.request("DELETE", f"services/{created['ID']}")

    cpu0 = time.process_time()
    await asyncio.gather(*(job(i) for i in range(args.n)))
    wall = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    follower.cancel()
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "completions": sorted(completions),
        "succeeded": sum(1 for c in codes if c == 0),
    }


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    if args.transport == "raw":
        async with RawDocker(args.socket) as raw:
            return await _jobs(raw, args)
    async with Docker(args.socket) as docker:
        return await _jobs(docker, args)


def child_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--transport", choices=TRANSPORTS, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--max-concurrent", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    Path(args.out).write_text(json.dumps(asyncio.run(_child(args))))


async def run(
    socket: str,
    transport: str,
    run_id: str,
    n: int,
    command: list[str],
    workdir: Path,
    *,
    max_concurrent: int,
) -> dict[str, Any]:
    """Run the minimal client in a child process; its result as the other approaches give it."""
    out = workdir / f"minimal-{transport}.json"
    out.unlink(missing_ok=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.minimal",
        "--socket",
        socket,
        "--transport",
        transport,
        "--n",
        str(n),
        "--run-id",
        run_id,
        "--max-concurrent",
        str(max_concurrent),
        "--out",
        str(out),
        "--",
        *command,
    )
    if await proc.wait() != 0:
        raise RuntimeError(f"the minimal {transport} client failed (exit {proc.returncode})")
    child = json.loads(out.read_text())
    return {
        "approach": f"minimal-{transport}",
        "n": n,
        "wall_s": child["wall_s"],
        "completions": child["completions"],
        "succeeded": child["succeeded"],
        "failed": n - child["succeeded"],
        "client_cpu_ms_per_job": 1000 * child["cpu_s"] / n,
        "minimal": {"transport": transport, "cpu_s": child["cpu_s"]},
    }


if __name__ == "__main__":
    child_main()
