"""The dashboard's live streams (server-sent events): ``/events`` says when the store
changed; ``/job/ID/follow`` carries a running attempt's output from the engine until the
store has its logs. The output travels as JSON text and is put into the page as text."""

from __future__ import annotations

import codecs
import json
from collections.abc import Awaitable, Callable

import anyio
from aiohttp import web

from covey.capture import STDERR
from covey.dashboard.board import DASH, POLL, Dashboard
from covey.errors import EngineError
from covey.store import AttemptRow, attempt_id

KEEPALIVE = 15.0  # a comment on an idle event stream (finds clients that left)


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, event: str, data: object) -> None:
    await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())


async def events(request: web.Request) -> web.StreamResponse:
    """``change`` whenever the store changed (at most every :data:`POLL` seconds)."""
    dash = request.app[DASH]
    response = await _sse(request)
    seen = dash.version
    try:
        await response.write(b"retry: 2000\n\n")
        while True:
            now = await dash.next_change(seen, KEEPALIVE)
            if dash.closing:
                break
            if now != seen:
                seen = now
                await _send(response, "change", now)
            else:
                await response.write(b": idle\n\n")
    except ConnectionError:  # the page was closed
        pass
    return response


async def follow(request: web.Request) -> web.StreamResponse:
    """A running attempt's output as the engine gives it (``log`` events, text, each
    stream apart), then ``done`` once the store has the logs: the page shows those."""
    dash = request.app[DASH]
    job_id = request.match_info["id"]
    try:
        n = int(request.query.get("attempt", "0"))
    except ValueError:
        n = 0
    attempt = await dash.store.attempt(attempt_id(job_id, n))
    response = await _sse(request)
    lock = anyio.Lock()

    async def emit(event: str, data: object) -> None:
        async with lock:
            await _send(response, event, data)

    try:
        await emit("reset", {})  # a reconnect starts over: the engine sends it all again
        if attempt is not None and not attempt.logs_saved:
            await _follow_until_saved(dash, attempt, emit)
        await emit("done", {})
    except* ConnectionError:  # the page was closed (also from inside the task group)
        pass
    return response


async def _follow_until_saved(
    dash: Dashboard, attempt: AttemptRow, emit: Callable[[str, object], Awaitable[None]]
) -> None:
    async def pump() -> None:
        try:
            backend = await dash.engine.backend()
        except EngineError as exc:
            await emit("note", {"text": f"cannot follow it live: {exc}; its logs show once saved"})
            return
        decoders = {
            stream: codecs.getincrementaldecoder("utf-8")(errors="replace")
            for stream in ("stdout", "stderr")
        }
        try:
            async for kind, data in backend.follow_logs(attempt):
                stream = "stderr" if kind == STDERR else "stdout"
                text = decoders[stream].decode(data)
                if text:
                    await emit("log", {"stream": stream, "text": text})
        except EngineError as exc:
            await emit("note", {"text": f"the engine's stream stopped: {exc}"})
            return
        await emit("note", {"text": "its output ended; waiting for covey to save it"})

    async with anyio.create_task_group() as tg:
        tg.start_soon(pump)
        seen = dash.version
        idle = 0.0
        while not dash.closing:
            current = await dash.store.attempt(attempt.id)
            if current is None or current.logs_saved:
                break
            now = await dash.next_change(seen, POLL * 4)
            idle = 0.0 if now != seen else idle + POLL * 4
            seen = now
            if idle >= KEEPALIVE:  # finds a page that was closed while nothing happened
                idle = 0.0
                await emit("ping", {})
        tg.cancel_scope.cancel()
