"""The state of one dashboard: its store, its guard, the engine once a page needs it, who
waits for a change of the store, and the actions in flight.

The dashboard opens a store of its own (two connections) even inside ``covey supervise``:
its commits (a cancel, a throttle) are then another connection's to the supervisor, which
notices them as it notices any producer's, and the supervisor's commits are another
connection's to the dashboard, whose ``PRAGMA data_version`` they change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from aiohttp import web

from covey.backend import Backend
from covey.client import Mode, pick_backend
from covey.dashboard import views
from covey.dashboard.security import SESSION, Guard
from covey.engine import Engine
from covey.errors import CoveyError
from covey.store import Store

log = logging.getLogger("covey")

POLL = 0.5  # seconds between looks at the store's data_version
ACTION_WAIT = 4.0  # a POST answers after this long at most; the action goes on
TIMELINES_KEPT = 50


class EngineLink:
    """The engine (``DOCKER_HOST``), connected the first time a page needs it: to follow a
    running job's output, or to stop a job being cancelled. A dashboard on a store without a
    supervisor may have no engine at all; then those say why and the rest works."""

    def __init__(self, store_id: str, mode: Mode) -> None:
        self.store_id = store_id
        self.mode: Mode = mode
        self._engine: Engine | None = None
        self._backend: Backend | None = None
        self._lock = asyncio.Lock()

    async def backend(self) -> Backend:
        async with self._lock:
            if self._backend is None:
                engine = Engine()
                await engine.open()
                try:
                    self._backend = await pick_backend(engine, self.store_id, self.mode)
                except BaseException:
                    await engine.close()
                    raise
                self._engine = engine
            return self._backend

    @contextlib.asynccontextmanager
    async def opener(self, store: Store) -> AsyncIterator[Backend]:
        """For :func:`covey.commands.cancel_refs`: the connected backend, left open."""
        yield await self.backend()

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine, self._backend = self._engine, None, None
            await engine.close()


class Dashboard:
    """One dashboard: its store, its guard, the engine when needed, and who waits for a
    change of the store."""

    def __init__(self, store: Store, guard: Guard, *, mode: Mode = "auto") -> None:
        self.store = store
        self.guard = guard
        self.engine = EngineLink(store.id, mode)
        self.version = 0  # bumped on every change of the store seen
        self.closing = False
        self._changed = asyncio.Event()
        self.flashes: dict[str, list[views.Flash]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.timelines: dict[str, tuple[object, str]] = {}  # drawn, by batch (a few)
        self.drawing = asyncio.Lock()  # one timeline drawn at a time (CPU, in a thread)

    # -- changes of the store --------------------------------------------------------------

    def bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def watch(self) -> None:
        """Bump on every commit another connection made (``PRAGMA data_version``)."""
        last: int | None = None
        while not self.closing:
            now: int | None = last
            try:
                now = await self.store.data_version()
            except (sqlite3.Error, CoveyError) as exc:
                log.warning("dashboard: reading the store's version failed: %s", exc)
            if last is not None and now != last:
                self.bump()
            last = now
            await anyio.sleep(POLL)

    async def next_change(self, seen: int, timeout: float) -> int:
        """The version once it is no longer ``seen`` (or after ``timeout``)."""
        with anyio.move_on_after(timeout):
            while self.version == seen and not self.closing:
                await self._changed.wait()
        return self.version

    def close(self) -> None:
        self.closing = True
        self._changed.set()

    # -- messages for the next page a session loads ----------------------------------------

    def flash(self, kind: str, text: str) -> None:
        session = SESSION.get()
        if len(self.flashes) > 1000:
            self.flashes.pop(next(iter(self.flashes)))
        self.flashes.setdefault(session, []).append(views.Flash(kind, text))

    def take_flashes(self) -> list[views.Flash]:
        return self.flashes.pop(SESSION.get(), [])

    # -- actions ---------------------------------------------------------------------------

    async def act(self, what: Callable[[], Awaitable[str]]) -> None:
        """Run an action (as its own task: a browser that leaves does not cut it short)
        and leave its outcome for the page the browser loads next."""

        async def run() -> tuple[str, str]:
            try:
                return "ok", await what()
            except CoveyError as exc:
                return "error", str(exc)
            finally:
                self.bump()  # our own commits are not in our connection's data_version

        task = asyncio.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self._finished)
        done, _ = await asyncio.wait({task}, timeout=ACTION_WAIT)
        if task in done and not task.cancelled() and task.exception() is None:
            kind, text = task.result()
        elif task in done:
            kind, text = "error", f"failed: {task.exception()!r}"
        else:
            kind, text = "ok", "still at work on it: this page shows what it does as it goes"
        self.flash(kind, text)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("dashboard: an action failed", exc_info=task.exception())

    async def settle(self, timeout: float = 10.0) -> None:
        """Let actions in flight finish (a cancel stopping jobs), then stop them."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)
        for task in list(self.tasks):
            task.cancel()


DASH = web.AppKey("covey.dashboard", Dashboard)
