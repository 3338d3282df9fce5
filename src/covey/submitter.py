"""The submitter: admits due jobs through the governor and creates their attempts.

Concurrency is bounded by the governor alone (capacity per node and ``--max-concurrent``),
never by a second semaphore. Every attempt is recorded in the store under its fixed name
*before* the create call, so a create that is repeated after a crash or a lost reply meets
the engine's name conflict and adopts the existing service instead of running twice.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque

import anyio
from anyio.abc import TaskGroup, TaskStatus

from covey import adoption, sharer
from covey.backend import StartFailed, covey_labels
from covey.context import Context, Live, demand_of, log
from covey.credentials import CredentialsError
from covey.errors import EngineError, SpecError
from covey.inputs import InputFile
from covey.retrying import retry
from covey.spec import JobSpec
from covey.states import JobState, Observation, Outcome, Phase
from covey.store import JobRow, attempt_id
from covey.tracker import record_end, stop

REFILL_INTERVAL = 0.1
OUTSIDE_INTERVAL = 0.25  # a foreground orchestrator looks for other processes' commits
OUTSIDE_SLACK = 1.0  # seconds of overlap between two looks (clocks, commit timing)
ADOPT_INTERVAL = 1.0  # a supervisor looks for work of holders that are gone
BATCH = 256
STEER_INTERVAL = 1.0  # a throttle or pause takes effect within this long


async def create(ctx: Context, live: Live) -> None:
    """Create the attempt's engine object; retried while the engine is unavailable."""
    try:
        await _create(ctx, live)
    finally:
        live.created.set()


async def _create(ctx: Context, live: Live) -> None:
    """Create, retrying only while the engine is unavailable, up to ``--engine-timeout``.

    A refusal (no such network or secret, a spec the engine rejects) is final at once: the
    attempt ends ``rejected`` with the engine's message. So does a create that is still
    unavailable at the deadline, or that is no longer wanted (cancelled meanwhile); a
    service whose create reply was lost is removed by name when the attempt is settled.
    """
    labels = covey_labels(ctx.store.id, live.attempt, live.job.batch_id, live.job.name)
    labels.update(dict(live.spec.labels))

    def unavailable(exc: BaseException) -> None:
        ctx.counters.api_errors += 1
        log.info("create %s: engine unavailable (%s), retrying", live.attempt.service, exc)

    # a pipeline job's inputs: what the jobs it needs printed (read once, at its first create)
    if live.job.stage is not None:
        await sharer.before_reading(ctx, live.job.batch_id)
    inputs = [InputFile(*file) for file in await ctx.store.inputs_for(live.job)]
    try:
        spec, auth = await _image(ctx, live)
    except (SpecError, CredentialsError) as exc:  # nothing was created: no node can pull it
        await record_end(
            ctx, live, Observation(Phase.ENDED, Outcome.REJECTED, None, str(exc)), "covey"
        )
        live.confirmed.set()
        return
    try:
        engine_id = await retry(
            lambda: ctx.backend.create(live.attempt, spec, labels, inputs, auth=auth),
            what=f"create {live.attempt.service}",
            give_up_after=ctx.options.engine_timeout,
            stop=lambda: live.stop_reason is not None,
            on_retry=unavailable,
        )
    except StartFailed as exc:
        live.engine_id = exc.engine_id  # the reaper reads its logs, then removes it
        ctx.store.attempt_created(live.attempt.id, exc.engine_id)
        await record_end(
            ctx,
            live,
            Observation(Phase.ENDED, Outcome.FAILED, exc.exit_code, str(exc)),
            "covey",
        )
        live.confirmed.set()
        return
    except EngineError as exc:  # refused, or given up on
        ctx.counters.api_errors += 1
        await record_end(
            ctx, live, Observation(Phase.ENDED, Outcome.REJECTED, None, str(exc)), "covey"
        )
        live.confirmed.set()
        return
    live.engine_id = engine_id
    live.since = time.monotonic()
    ctx.store.attempt_created(live.attempt.id, engine_id, spec.image)
    if live.stop_reason and not live.ended:  # cancelled while it was being created
        await stop(ctx, live, live.stop_reason)


async def _image(ctx: Context, live: Live) -> tuple[JobSpec, str | None]:
    """The spec as this attempt runs it, and the registry credentials it sends: in swarm
    mode its image pinned to the batch's digest (covey.images), so every node and every
    retry runs one program. A container runs the image as its one engine has it."""
    if ctx.backend.mode != "swarm":
        return live.spec, None
    pin = await ctx.pins.pin(live.job.batch_id, live.spec)
    return live.spec.with_changes(image=pin.reference), await ctx.pins.auth(live.spec)


async def admit(ctx: Context, job: JobRow, tg: TaskGroup) -> bool:
    """Start one job if the governor has room; ``False`` when there is none now."""
    demand = demand_of(job.spec)
    reason = ctx.governor.never_fits(demand)
    if reason is not None:
        await ctx.store.fail_job(job, JobState.REJECTED, f"cannot run: {reason}")
        if ctx.on_settled:
            ctx.on_settled(job.id, None)
        return True
    if ctx.governor.admit(job.id, demand) is None:
        return False
    claim = attempt_id(job.id, job.attempts + 1)
    ctx.claimed.add(claim)  # begun but not live yet: not an orphan to adopt
    try:
        attempt = await ctx.store.begin_attempt(job, ctx.backend.mode)
    finally:
        ctx.claimed.discard(claim)
    if attempt is None:  # cancelled (or taken) since it was read
        ctx.governor.release(job.id)
        if ctx.on_settled:
            ctx.on_settled(job.id, None)
        return True
    live = Live(attempt=attempt, job=job, demand=demand)
    ctx.live[attempt.id] = live
    ctx.counters.admissions += 1
    tg.start_soon(create, ctx, live)
    return True


class _Outside:
    """Notices commits of other processes with one cheap pragma (``PRAGMA data_version``)
    instead of reading the queue: producers (`covey submit`, `covey retry`), `covey cancel`
    from another shell, and holders of work that went away."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.checked = 0.0  # monotonic time of the last look
        self.wall = 0.0  # the same, on the wall clock (what the store's rows carry)
        self.adopted = 0.0  # monotonic time of the last look for orphans
        self.changed_since_adopt = True

    async def look(self, ctx: Context, tg: TaskGroup) -> None:
        now = time.monotonic()
        interval = REFILL_INTERVAL if ctx.options.supervise else OUTSIDE_INTERVAL
        if now - self.checked < interval:
            return
        since, self.wall = self.wall, time.time()
        self.checked = now
        seen, self.version = self.version, await ctx.store.data_version()
        changed = seen != self.version
        if ctx.options.supervise:
            if changed:
                ctx.new_work = True
                self.changed_since_adopt = True
            if now - self.adopted >= ADOPT_INTERVAL:
                self.adopted = now
                await self._take_over(ctx, tg)
        elif changed and seen is not None:
            ctx.new_work = True  # e.g. `covey retry` of one of our jobs from another shell
            if ctx.on_outside_change is not None:
                await ctx.on_outside_change(since - OUTSIDE_SLACK)

    async def _take_over(self, ctx: Context, tg: TaskGroup) -> None:
        """A supervisor adopts the work of holders that are gone (see covey.adoption)."""
        if await ctx.store.release_dead_holders():
            ctx.new_work = True  # their queued jobs are the queue's now
            self.changed_since_adopt = True
        if not self.changed_since_adopt:
            return
        self.changed_since_adopt = False
        taken = await adoption.adopt(ctx, await adoption.orphans(ctx))
        if taken.count:
            log.info("adopted %d attempt(s) of processes that are gone", taken.count)
            ctx.look.set()
        for live in taken.to_create:
            tg.start_soon(create, ctx, live)
        for live in taken.to_stop:
            tg.start_soon(stop, ctx, live, live.stop_reason or "cancel")


async def run(ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Admit due jobs whenever capacity is released or work arrives."""
    task_status.started()
    due: deque[JobRow] = deque()  # read ahead, oldest first
    quiet_until: float | None = None  # nothing is due before this (None: read the store)
    outside = _Outside()
    async with anyio.create_task_group() as tg:
        while True:
            await outside.look(ctx, tg)
            blocked = False
            now = time.time()
            if time.monotonic() - ctx.steered_at >= STEER_INTERVAL:
                # once a second: the batches' steering (a throttle, a pause), and the queue
                # read again in priority order (a batch of higher priority queued meanwhile)
                due.clear()
                steering = await ctx.store.steering(ctx.scope)
                if steering != ctx.steering:  # resumed or throttled up: admit again now
                    ctx.steering, ctx.new_work = steering, True
                ctx.steered_at = time.monotonic()
            if due or ctx.new_work or quiet_until is None or now >= quiet_until:
                ctx.new_work = False
                blocked = await _admit_due(ctx, tg, due)
                quiet_until = None
                if not due and not blocked:  # all admitted: until when is nothing due?
                    next_due = await ctx.store.next_due(ctx.scope)
                    # a retry whose last attempt is still being settled: look again soon
                    quiet_until = math.inf if next_due is None else max(next_due, now + 0.05)
            wait = 3600.0 if quiet_until is None else min(3600.0, quiet_until - time.time())
            wait = min(wait, REFILL_INTERVAL if ctx.options.supervise else OUTSIDE_INTERVAL)
            if blocked:
                wait = min(wait, 1.0)
            await ctx.work.wait(wait)


def _held(ctx: Context) -> set[str]:
    """Batches whose jobs wait now: paused, or as many running as their own cap allows."""
    held = {b for b, (_, paused) in ctx.steering.items() if paused}
    capped = {b: cap for b, (cap, paused) in ctx.steering.items() if cap is not None}
    if capped:
        running = Counter(
            live.job.batch_id
            for live in ctx.live.values()
            if not live.ended and live.job.batch_id in capped
        )
        held |= {b for b, cap in capped.items() if running[b] >= cap}
    return held


async def _admit_due(ctx: Context, tg: TaskGroup, due: deque[JobRow]) -> bool:
    """Admit what fits; ``True`` when due jobs are left waiting for capacity (the governor's,
    or their batch's own: paused, or at its cap).

    Due jobs are read ahead, ``BATCH`` at a time: the submitter wakes on every release, and
    one read per wake was two store round trips per job. A row read ahead may go stale
    (cancelled meanwhile); ``begin_attempt`` checks it again in its transaction.
    """
    if not ctx.governor.nodes:
        try:
            await ctx.refresh_nodes(force=True)
        except EngineError as exc:
            ctx.counters.api_errors += 1
            log.info("reading nodes failed: %s", exc)
            return True
    held = _held(ctx)
    while True:
        more = True  # rows left from an earlier read: read again once they are admitted
        if not due:
            jobs = await ctx.store.due_jobs(time.time(), BATCH, ctx.scope, sorted(held))
            # a retrying job whose last attempt is still being settled is not due yet
            due.extend(job for job in jobs if ctx.live_for_job(job.id) is None)
            more = len(jobs) == BATCH and len(due) == len(jobs)
        while due:
            if due[0].batch_id in held:  # paused or at its own cap: read again later
                due.popleft()
                continue
            if not await admit(ctx, due[0], tg):
                return True
            job = due.popleft()
            if job.batch_id in ctx.steering:
                held = _held(ctx)
        if not more:
            # jobs of held batches wait too: look again when capacity or steering changes
            return bool(held)
