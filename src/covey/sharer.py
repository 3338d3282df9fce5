"""Shares a pipeline job's output ahead of the jobs that will read it (swarm mode).

A reduce over 1,000 map instances reads 1,000 files, and in swarm mode each one travels as a
swarm config, which costs the engine about 2 ms to create (covey.inputs): two seconds at the
reduce's start if they were all made then. Made as each map instance is done instead — in
the time the map stage takes anyway — they cost the reduce nothing: its service names
configs that exist. When the batch is over (every job of it done), they are removed.

Best effort by design: a share that fails, or is not noted before a reader is created, only
means that reader makes its own copy of that file, as it would without a sharer. What a
crash leaves behind carries this store's labels and is removed by ``covey prune`` once its
batch is over.
"""

from __future__ import annotations

import logging
from collections import Counter

import anyio
from anyio.abc import TaskStatus

from covey.backend import SwarmBackend
from covey.context import Cleanup, Context, Share
from covey.engine import InUse, Unavailable
from covey.errors import EngineError, StoreError
from covey.inputs import MAX_CONFIG
from covey.retrying import GaveUp, retry

log = logging.getLogger("covey")

# how long a reader's create waits for shares of its batch still being made: as long as
# making them itself would take (the same engine calls), so a generous bound
SHARE_WAIT = 30.0
AT_ONCE = 8  # config creates in flight (the engine's cost per config is lowest about here)
CLEANUP_PATIENCE = 60.0  # a config is "in use" until the last reader's service is removed


async def run(ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Share and clean up as the gate asks (``Context.to_sharer``), a few at a time."""
    backend = ctx.backend
    task_status.started()
    if not isinstance(backend, SwarmBackend):  # container mode copies files in one archive
        async for item in ctx.sharer_inbox:
            ctx.sharing -= 1
            if isinstance(item, Share):
                ctx.shares_in_flight.pop(item.batch_id, None)
        return
    worker = _Sharer(ctx, backend)
    async with anyio.create_task_group() as tg:
        async for item in ctx.sharer_inbox:
            if isinstance(item, Share):
                worker.busy[item.batch_id] += 1
                tg.start_soon(worker.share, item)
            else:
                tg.start_soon(worker.cleanup, item)


class _Sharer:
    def __init__(self, ctx: Context, backend: SwarmBackend) -> None:
        self.ctx = ctx
        self.backend = backend
        self.limiter = anyio.CapacityLimiter(AT_ONCE)
        self.busy: Counter[str] = Counter()  # shares in flight per batch: a cleanup waits

    async def share(self, item: Share) -> None:
        ctx = self.ctx
        try:
            async with self.limiter:
                out = (await ctx.store.logs(item.attempt_id)).get("stdout")
                if out is None or out.truncated or len(out.data) > MAX_CONFIG:
                    return  # its reader makes its own (or is refused, naming the file)
                ident = await self.backend.share_output(item.attempt_id, item.batch_id, out.data)
                ctx.store.note_output(item.attempt_id, item.batch_id, ident)
                ctx.shares_unnoted.add(item.batch_id)  # deferred: a reader commits it first
        except (EngineError, StoreError) as exc:
            log.info("sharing the output of %s: %s (its readers copy it)", item.attempt_id, exc)
        finally:
            self.busy[item.batch_id] -= 1
            ctx.sharing -= 1
            ctx.shares_in_flight[item.batch_id] -= 1
            if not ctx.shares_in_flight[item.batch_id]:
                del ctx.shares_in_flight[item.batch_id]

    async def cleanup(self, item: Cleanup) -> None:
        ctx = self.ctx
        try:
            while self.busy[item.batch_id] > 0:
                await anyio.sleep(0.05)
            del self.busy[item.batch_id]
            await ctx.store.flush()  # the notes of the last shares
            outputs = await ctx.store.outputs_of(item.batch_id)
            for attempt_id, config_id in outputs:
                await _remove(self.backend, attempt_id, config_id)
            await ctx.store.forget_outputs([a for a, _ in outputs])
        except (EngineError, StoreError, GaveUp) as exc:
            log.warning(
                "shared outputs of batch %s: %s (left for `covey prune`)", item.batch_id, exc
            )
        finally:
            ctx.sharing -= 1


async def _remove(backend: SwarmBackend, attempt_id: str, config_id: str) -> None:
    """Remove one shared output, waiting while a reader's service still names it."""
    await retry(
        lambda: backend.remove_shared(config_id),
        what=f"remove the shared output of {attempt_id}",
        give_up_after=CLEANUP_PATIENCE,
        retry_on=(InUse, Unavailable),
    )


async def before_reading(ctx: Context, batch_id: str) -> None:
    """Before a job of ``batch_id`` reads its inputs: let the shares of its batch still in
    flight finish (a few ms each, more on a busy engine; at most :data:`SHARE_WAIT`) and
    their notes be committed,
    so that it names them instead of making copies. The job that becomes due when the last
    map instance is done would otherwise always copy that instance's output."""
    if ctx.shares_in_flight.get(batch_id):
        with anyio.move_on_after(SHARE_WAIT):
            while ctx.shares_in_flight.get(batch_id):
                await anyio.sleep(0.005)
    if batch_id in ctx.shares_unnoted:  # the notes of shares just made: committed now
        ctx.shares_unnoted.discard(batch_id)
        await ctx.store.flush()
