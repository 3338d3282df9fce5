"""The store's methods for steering batches (covey throttle, pause, resume) and for
schedules (covey.schedules)."""

from __future__ import annotations

import time

from covey.store import reads, writes
from covey.store.facade import Facade
from covey.store.reads import Scope
from covey.store.rows import ScheduleRow


class Steering(Facade):
    """Methods of :class:`~covey.store.handle.Store` for steering and schedules."""

    # -- steering -----------------------------------------------------------------------

    async def queued_since(self, batch_id: str) -> tuple[float | None, int]:
        """(when its longest-waiting queued job was queued, the top priority due elsewhere)."""
        return await reads.queued_since(self._read, batch_id)

    async def steering(self, scope: Scope) -> dict[str, tuple[int | None, bool]]:
        """Batches (in scope) with a cap of their own or paused: id -> (cap, paused)."""
        return await reads.steering(self._read, scope)

    async def steer(
        self, batch_id: str, *, max_concurrent: int | bool | None = False, paused: bool | None
    ) -> None:
        """Set a batch's own cap (``None``: none) or pause it; its orchestrator reads it
        within a second (covey throttle, pause, resume)."""
        await self._txn(
            lambda tx: writes.steer(tx, batch_id, max_concurrent=max_concurrent, paused=paused)
        )

    # -- schedules (covey.schedules) ----------------------------------------------------

    async def schedules(self) -> list[ScheduleRow]:
        return await reads.schedules(self._read)

    async def schedule_add(
        self, name: str, cron: str, tz: str, file: str, next_fire: float
    ) -> bool:
        """``False`` when a schedule of that name exists."""
        now = time.time()
        added: bool = await self._txn(
            lambda tx: writes.schedule_add(tx, name, cron, tz, file, now, next_fire)
        )
        return added

    async def schedule_remove(self, name: str) -> bool:
        removed: bool = await self._txn(lambda tx: writes.schedule_remove(tx, name))
        return removed

    async def schedule_pause(self, name: str, paused: bool, next_fire: float | None) -> bool:
        done: bool = await self._txn(lambda tx: writes.schedule_pause(tx, name, paused, next_fire))
        return done

    async def schedule_fired(
        self, name: str, fire: float, upcoming: float, batch_id: str | None, error: str | None
    ) -> None:
        await self._txn(lambda tx: writes.schedule_fired(tx, name, fire, upcoming, batch_id, error))
