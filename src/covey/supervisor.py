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

from covey import reaper, submitter, tracker
from covey.context import Context, Live, demand_of, log
from covey.errors import EngineError
from covey.states import Observation, Outcome, Phase


async def reconcile(ctx: Context) -> int:
    """Adopt what the store says is in flight; returns how many attempts were picked up."""
    await ctx.refresh_nodes(force=True)
    attempts = await ctx.store.open_attempts(ctx.scope)
    if not attempts:
        return 0
    jobs = {j.id: j for j in await ctx.store.jobs_by_id([a.job_id for a in attempts])}
    to_create: list[Live] = []
    for attempt in attempts:
        job = jobs[attempt.job_id]
        live = Live(
            attempt=attempt, job=job, demand=demand_of(job.spec), engine_id=attempt.engine_id
        )
        ctx.live[attempt.id] = live
        if attempt.engine_id is not None or attempt.phase == "ended":
            live.created.set()  # else submitter.create below creates it again (or adopts it)
        if attempt.phase == "ended":
            live.ended = True
            live.phase = Phase.ENDED
            live.end = Observation(Phase.ENDED, attempt.outcome or Outcome.LOST, attempt.exit_code)
            live.confirmed.set()
            await ctx.to_reaper.send(live)
            continue
        ctx.governor.hold(job.id, live.demand, None)
        if attempt.stop_reason:
            live.stop_reason = attempt.stop_reason
        if attempt.phase == "running":
            live.phase = Phase.RUNNING
            # the deadline counts from the real start, not from this adoption
            ran_for = max(0.0, time.time() - (attempt.started or time.time()))
            live.started = time.monotonic() - ran_for
        if attempt.engine_id is None:
            to_create.append(live)
    for live in to_create:
        await submitter.create(ctx, live)
    for live in list(ctx.live.values()):
        if live.stop_reason and not live.ended:
            await tracker.stop(ctx, live, live.stop_reason)
    await tracker.poll_once(ctx)
    return len(attempts)


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


async def run(ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Reconcile, then run submitter, tracker and reaper until cancelled."""
    with ctx.to_reaper, ctx.reaper_inbox:  # closed on the way out (no ResourceWarning)
        async with anyio.create_task_group() as tg:
            await tg.start(reaper.run, ctx)
            await reconcile(ctx)
            await tg.start(tracker.poll_loop, ctx)
            if ctx.options.use_events:
                await tg.start(tracker.event_loop, ctx)
            await tg.start(submitter.run, ctx)
            if ctx.options.supervise and ctx.options.keep_failed is not None:
                await tg.start(prune_kept, ctx)
            task_status.started()
