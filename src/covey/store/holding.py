"""The store's methods for holders: which live covey process minds which batches."""

from __future__ import annotations

import time
from collections.abc import Sequence

from covey import holders as holding
from covey.store import reads, writes
from covey.store.facade import Facade
from covey.store.rows import HolderRow
from covey.store.writer import Tx


class Holding(Facade):
    """Methods of :class:`~covey.store.handle.Store` for holders."""

    # -- holders ----------------------------------------------------------------------

    async def hold(
        self, role: str, *, exclusive: bool = False
    ) -> tuple[HolderRow, HolderRow | None]:
        """Register this process as a holder; first, hand the work of holders that are gone
        to the queue. Returns ``(ours, None)``; with ``exclusive``, ``(ours, other)`` and
        nothing registered when another live process already holds this role."""
        ours = holding.this_process(role)

        async def txn(tx: Tx) -> HolderRow | None:
            for other in await writes.holders(tx):
                if not holding.alive(other):
                    await writes.release_holder(tx, other.id)
                elif exclusive and other.role == role:
                    return other
            await writes.add_holder(tx, ours)
            return None

        taken: HolderRow | None = await self._txn(txn)
        return ours, taken

    async def release_dead_holders(self) -> int:
        """Hand the batches of holders that no longer exist to the queue; how many."""

        async def txn(tx: Tx) -> int:
            handed = 0
            for other in await writes.holders(tx):
                if not holding.alive(other):
                    handed += await writes.release_holder(tx, other.id)
            return handed

        count: int = await self._txn(txn)
        return count

    async def unhold(self, holder: str) -> int:
        """This process is done: what it still holds goes to the queue."""
        count: int = await self._txn(lambda tx: writes.release_holder(tx, holder))
        return count

    async def heartbeat(self, holder: str) -> bool:
        alive: bool = await self._txn(lambda tx: writes.heartbeat(tx, holder, time.time()))
        return alive

    async def holders(self) -> list[HolderRow]:
        return await writes.holders(self._read)

    async def minded_attempts(self) -> set[str]:
        """Open attempts a live covey process looks after: its own foreground batches, or
        the queue's while a supervisor runs. The others' ends nobody will record."""
        alive = [h for h in await self.holders() if holding.alive(h)]
        ids = {h.id for h in alive}
        supervised = any(h.role == "supervisor" for h in alive)
        return {
            attempt
            for attempt, owner, holder in await reads.open_attempt_owners(self._read)
            if holder in ids or (owner == "queue" and holder is None and supervised)
        }

    async def holders_of(self, job_ids: Sequence[str]) -> set[str]:
        return await reads.holders_of(self._read, job_ids)
