"""The submitter: admits due jobs through the governor and creates their attempts.

Concurrency is bounded by the governor alone (capacity per node and ``--max-concurrent``),
never by a second semaphore. Every attempt is recorded in the store under its fixed name
*before* the create call, so a create that is repeated after a crash or a lost reply meets
the engine's name conflict and adopts the existing service instead of running twice.
"""

from __future__ import annotations

import time

import anyio
from anyio.abc import TaskGroup, TaskStatus

from covey.backend import StartFailed, covey_labels
from covey.context import Context, Live, demand_of, log
from covey.engine import Unavailable
from covey.errors import EngineError
from covey.states import JobState, Observation, Outcome, Phase
from covey.store import JobRow
from covey.tracker import record_end, stop

REFILL_INTERVAL = 0.1
BATCH = 256


async def create(ctx: Context, live: Live) -> None:
    """Create the attempt's engine object; retried while the engine is unavailable."""
    labels = covey_labels(ctx.store.id, live.attempt, live.job.batch_id, live.job.name)
    labels.update(dict(live.spec.labels))
    delay = 0.5
    while True:
        try:
            engine_id = await ctx.backend.create(live.attempt, live.spec, labels)
            break
        except StartFailed as exc:
            await record_end(
                ctx,
                live,
                Observation(Phase.ENDED, Outcome.FAILED, exc.exit_code, str(exc)),
                "covey",
            )
            live.confirmed.set()
            return
        except Unavailable as exc:
            ctx.counters.api_errors += 1
            log.info("create %s: engine unavailable (%s), retrying", live.attempt.service, exc)
            await anyio.sleep(delay)
            delay = min(delay * 2, 10.0)
        except EngineError as exc:
            ctx.counters.api_errors += 1
            await record_end(
                ctx, live, Observation(Phase.ENDED, Outcome.REJECTED, None, str(exc)), "covey"
            )
            live.confirmed.set()
            return
    live.engine_id = engine_id
    live.since = time.monotonic()
    await ctx.store.attempt_created(live.attempt.id, engine_id)
    if live.stop_reason and not live.ended:  # cancelled while it was being created
        await stop(ctx, live, live.stop_reason)


async def admit(ctx: Context, job: JobRow, tg: TaskGroup) -> bool:
    """Start one job if the governor has room; ``False`` when there is none now."""
    demand = demand_of(job.spec)
    reason = ctx.governor.never_fits(demand)
    if reason is not None:
        await ctx.store.fail_job(job, JobState.REJECTED, f"cannot run: {reason}")
        if ctx.on_settled:
            ctx.on_settled(job.id)
        return True
    if ctx.governor.admit(job.id, demand) is None:
        return False
    attempt = await ctx.store.begin_attempt(job, ctx.backend.mode)
    live = Live(attempt=attempt, job=job, demand=demand)
    ctx.live[attempt.id] = live
    ctx.counters.admissions += 1
    tg.start_soon(create, ctx, live)
    return True


async def run(ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Admit due jobs whenever capacity is released or work arrives."""
    task_status.started()
    async with anyio.create_task_group() as tg:
        while True:
            blocked = await _admit_due(ctx, tg)
            wait = 3600.0
            next_due = await ctx.store.next_due(ctx.scope)
            if next_due is not None:
                wait = max(0.0, next_due - time.time())
            if ctx.options.supervise:
                wait = min(wait, REFILL_INTERVAL)
            if blocked:
                wait = min(wait, 1.0)
            await ctx.work.wait(wait)


async def _admit_due(ctx: Context, tg: TaskGroup) -> bool:
    """Admit what fits; ``True`` when due jobs are left waiting for capacity."""
    if not ctx.governor.nodes:
        try:
            await ctx.refresh_nodes(force=True)
        except EngineError as exc:
            ctx.counters.api_errors += 1
            log.info("reading nodes failed: %s", exc)
            return True
    while True:
        # Read only as many due jobs as could be admitted now: every row read is a spec
        # parsed, and the submitter wakes on every release.
        limit = BATCH
        cap = ctx.governor.max_concurrent
        if cap is not None:
            limit = max(1, min(BATCH, cap - ctx.governor.admitted))
        jobs = await ctx.store.due_jobs(time.time(), limit, ctx.scope)
        skipped = False
        for job in jobs:
            if ctx.live_for_job(job.id) is not None:
                skipped = True
                continue
            if not await admit(ctx, job, tg):
                return True
        if skipped or len(jobs) < limit:
            return False
