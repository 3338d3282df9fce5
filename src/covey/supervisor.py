"""The orchestrator: one task group that owns every loop, after a full reconcile.

At start (and so after any crash) the store is reconciled with the engine before anything
new is admitted, as swarmkit's orchestrators do: attempts that were being created are
created again under their fixed name (the engine refuses a duplicate and covey adopts the
existing service), live ones are adopted and tracked, ended ones are settled (logs, then
removal). Cancellation of the task group is the only way to stop; store writes are
shielded, so a stop never leaves half a transition behind.
"""

from __future__ import annotations

import time

import anyio
from anyio.abc import TaskStatus

from covey import adoption, agent, reaper, schedules, sharer, submitter, tracker, watcher
from covey.context import Context, log
from covey.errors import CoveyError, EngineError
from covey.retrying import retry


async def reconcile(ctx: Context) -> int:
    """Adopt what the store says is in flight; returns how many attempts were picked up."""
    await retry(
        lambda: ctx.refresh_nodes(force=True),
        what="reading the nodes",
        give_up_after=ctx.options.engine_timeout,
    )
    taken = await adoption.adopt(ctx, await ctx.store.open_attempts(ctx.scope))
    if not taken.count:
        return 0
    async with anyio.create_task_group() as tg:  # each create retries on its own
        for live in taken.to_create:
            tg.start_soon(submitter.create, ctx, live)
    for live in taken.to_stop:
        if not live.ended:
            await tracker.stop(ctx, live, live.stop_reason or "cancel")
    try:
        await tracker.poll_once(ctx)
    except EngineError as exc:  # the poll loop lists again in a moment
        log.info("first listing after reconcile failed: %s", exc)
    return taken.count


async def prune_kept(
    ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """``--keep-failed DURATION`` in a supervisor: remove kept services once they are old enough."""
    task_status.started()
    keep = ctx.options.keep_failed or 0.0
    while True:
        await anyio.sleep(min(max(keep / 4, 1.0), 30.0))
        try:
            await reaper.prune(ctx.store, ctx.backend, older_than=keep)
        except EngineError as exc:
            log.info("pruning kept services failed: %s", exc)


RETAIN_INTERVAL = 3600.0


async def retain(
    ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """``--retain DURATION``: hourly, delete jobs that ended longer ago (see covey prune)."""
    task_status.started()
    # a kept service (--keep-failed) keeps its job's history at least as long
    keep = max(ctx.options.retain or 0.0, ctx.options.keep_failed or 0.0)
    while True:
        try:
            deleted = await ctx.store.delete_finished(time.time() - keep)
            if deleted:
                before, after = await ctx.store.reclaim_space()
                log.info(
                    "retention: deleted %d job(s); store %d -> %d bytes", deleted, before, after
                )
        except CoveyError as exc:
            log.warning("retention failed: %s", exc)
        await anyio.sleep(RETAIN_INTERVAL)


async def run(ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Reconcile, then run submitter, tracker, reaper and sharer until cancelled."""
    # closed on the way out (no ResourceWarning)
    with ctx.to_reaper, ctx.reaper_inbox, ctx.to_sharer, ctx.sharer_inbox:
        async with anyio.create_task_group() as tg:
            await tg.start(sharer.run, ctx)
            await tg.start(reaper.run, ctx)
            await reconcile(ctx)
            await tg.start(tracker.poll_loop, ctx)
            if ctx.options.use_events:
                await tg.start(tracker.event_loop, ctx)
                await tg.start(watcher.run, ctx)
                await tg.start(agent.run, ctx)
            await tg.start(submitter.run, ctx)
            if ctx.options.supervise and ctx.options.keep_failed is not None:
                await tg.start(prune_kept, ctx)
            if ctx.options.supervise and ctx.options.retain is not None:
                await tg.start(retain, ctx)
            if ctx.options.supervise:
                await tg.start(schedules.run, ctx)
            task_status.started()
