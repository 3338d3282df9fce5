"""The tracker: follows every live attempt to its end.

Docker's event stream is only a hint (no task events; containers on other nodes are
invisible; slow subscribers are dropped), so the truth is one batched ``GET /tasks`` per
round for all of this store's services. Events wake the poll early and, for a zero exit,
record the end at once (the lowest exit→recorded latency). Whenever the stream drops the
tracker polls at once and resubscribes with backoff; polling never stops. Deadlines and
tasks the engine never schedules are policed here too.
"""

from __future__ import annotations

import time

import anyio
from anyio.abc import TaskStatus

from covey.backend import event_observation
from covey.context import Context, Live, log
from covey.engine import ATTEMPT_LABEL, Unavailable
from covey.errors import EngineError
from covey.records import EngineEvent
from covey.retrying import Backoff
from covey.states import JobState, Observation, Outcome, Phase
from covey.store import AttemptEnd, EndDecision

CONFIRM_INTERVAL = 0.25
BUSY_INTERVAL = 1.0
BUSY_LIVES = 16  # above this many live attempts the busy interval grows with their number
EVENT_DEBOUNCE = 0.03
MISSING_GRACE = 10.0


def conclude(ctx: Context, live: Live, obs: Observation, source: str) -> AttemptEnd:
    """Mark the attempt ended (in memory); what the end means for the job is decided by the
    store, from the job as it is when the end is recorded (a cancel may have come since)."""
    live.ended = True
    live.phase = Phase.ENDED
    outcome = obs.outcome or Outcome.LOST
    error = obs.error
    exit_code = obs.exit_code
    if live.stop_reason == "timeout":
        outcome, exit_code = Outcome.TIMED_OUT, None
        error = f"deadline of {live.spec.timeout:g}s reached"
    elif live.stop_reason == "cancel":
        outcome, exit_code, error = Outcome.CANCELLED, None, "cancelled"
    node_id = obs.node_id or live.node_id
    live.end = Observation(Phase.ENDED, outcome, exit_code, error, node_id)
    now = time.time()
    # the engine's time of the end when it has one (an end found late is recorded when it
    # happened); covey's own stops end now
    at = now if live.stop_reason or obs.at is None else min(obs.at, now)
    return AttemptEnd(outcome, exit_code, error, ctx.node_name(node_id), at, source, live.engine_id)


def noted(ctx: Context, live: Live, end: AttemptEnd, decision: EndDecision) -> None:
    """An end was recorded just now: counters, the submitter's cue, the debug line."""
    if decision.state is JobState.RETRYING:
        ctx.new_work = True  # due again after its backoff: the submitter must read it
    if end.source == "event":
        ctx.counters.recorded_from_event += 1
    else:
        ctx.counters.recorded_from_poll += 1
    log.debug(
        "job %s attempt %s %s -> %s (%s)",
        live.job.id,
        live.attempt.n,
        end.outcome.value,
        decision.state.value,
        end.source,
    )


async def record_end(ctx: Context, live: Live, obs: Observation, source: str) -> None:
    """Record an attempt's end once and hand the attempt to the reaper."""
    if live.ended:
        return
    end = conclude(ctx, live, obs, source)
    decision = await ctx.store.finish(live.attempt, end)
    if decision is not None:
        noted(ctx, live, end, decision)
    await ctx.to_reaper.send(live)


async def apply(ctx: Context, live: Live, obs: Observation, source: str) -> None:
    """Fold one observation of an attempt into the store and the governor."""
    if obs.node_id:
        live.node_id = obs.node_id
        ctx.governor.place(live.job.id, obs.node_id)
    if obs.phase is Phase.ENDED:
        if source == "poll" or ctx.backend.mode == "container":
            live.confirmed.set()
        await record_end(ctx, live, obs, source)
        return
    if obs.phase is Phase.RUNNING and live.phase is Phase.PENDING and not live.ended:
        live.phase = Phase.RUNNING
        live.started = time.monotonic()
        ctx.store.attempt_running(
            live.attempt.id, live.job.id, ctx.node_name(obs.node_id), time.time(), source
        )
        log.debug("job %s attempt %s running (%s)", live.job.id, live.attempt.n, source)
    elif obs.phase is Phase.PENDING:
        live.pending_reason = obs.error or live.pending_reason
        live.scheduled = live.scheduled or obs.scheduled
        was_pulling = live.pull_since is not None
        live.pulling(obs.pulling, time.monotonic())
        if obs.pulling != was_pulling:  # `covey ls` says "pulling" while it lasts
            ctx.store.attempt_pulling(live.attempt.id, time.time() if obs.pulling else None)


def ended_here(ctx: Context, live: Live, container: str | None) -> None:
    """A zero exit seen in a ``die`` event of this engine: the container, with its complete
    logs, is local. Unless the job reserves CPU or memory (whose release must wait until the
    manager has taken in the end, or the next job would be refused for lack of resources),
    the reaper need not wait for a listing: that saves most of the listings of a batch.

    ``container`` is ``None`` for a container on another node (covey.watcher): its logs
    come through the manager, which serves them once it has taken in the end, so the
    reaper waits for the listing that says so (one listing for all the ends of a round)."""
    live.container = container
    if container is None or (live.reserves and ctx.backend.mode == "swarm"):
        ctx.look.set()  # the reaper waits for the listing
        return
    live.confirmed.set()
    # Room for the next job at once: its admission's write then shares this end's commit.
    ctx.release(live.job.id)


async def poll_once(ctx: Context) -> None:
    """One listing of every task (or container) of this store; the truth for every attempt."""
    await ctx.refresh_nodes()
    nodes = {n.id: n for n in ctx.governor.nodes}
    seen = {s.attempt: s for s in await ctx.backend.observe(nodes)}
    ctx.counters.polls += 1
    now = time.monotonic()
    for live in list(ctx.live.values()):
        if live.stop_reason and not live.ended:
            continue
        found = seen.get(live.attempt.id)
        if found is None:
            if live.ended:
                live.confirmed.set()  # already gone from the engine: nothing left to confirm
            elif live.engine_id and now - live.since > MISSING_GRACE:
                await record_end(
                    ctx,
                    live,
                    Observation(
                        Phase.ENDED,
                        Outcome.LOST,
                        None,
                        "its service disappeared (removed outside covey)",
                    ),
                    "poll",
                )
            continue
        live.engine_id = live.engine_id or found.engine_id
        await apply(ctx, live, found.observation, "poll")
    await police(ctx)


async def police(ctx: Context) -> None:
    """Deadlines, never-scheduled tasks, and operators' cancel requests.

    Cancel requests are read every round in every orchestrator, not only ``covey supervise``:
    ``covey cancel`` from another terminal must reach a foreground ``covey run``/``batch`` too.
    """
    now = time.monotonic()
    cancelled = await ctx.store.cancel_requested(
        [live.job.id for live in ctx.live.values() if not live.ended]
    )
    for live in list(ctx.live.values()):
        if live.ended:
            continue
        if live.job.id in cancelled:
            await stop(ctx, live, "cancel")
        elif live.phase is Phase.RUNNING and live.spec.timeout is not None and live.started:
            if now - live.started >= live.spec.timeout:
                await stop(ctx, live, "timeout")
        elif live.phase is Phase.PENDING and live.engine_id:
            why = _stuck(ctx, live, now)
            if why is not None:
                live.confirmed.set()  # it never ran: no end to wait for, removing it ends it
                await record_end(
                    ctx, live, Observation(Phase.ENDED, Outcome.REJECTED, None, why), "covey"
                )


def _stuck(ctx: Context, live: Live, now: float) -> str | None:
    """Why a pending attempt is given up, or ``None``.

    Until the engine places the task on a node, the pending timeout (a task no node can
    take); while its node pulls the image, the pull timeout (a large image on a slow link
    is progress); once placed and not pulling (accepted, starting) the node is at work.
    """
    if live.pull_since is not None and now - live.pull_since >= ctx.options.pull_timeout:
        return f"its image was still being pulled after {ctx.options.pull_timeout:g}s"
    if live.scheduled or live.pull_since is not None:
        return None
    limit = live.spec.pending_timeout or ctx.options.pending_timeout
    if now - live.since >= limit:
        reason = live.pending_reason or "the engine did not schedule it"
        return f"still pending after {limit:g}s: {reason}"
    return None


async def stop(ctx: Context, live: Live, reason: str) -> None:
    """Covey ends a running attempt itself (deadline or cancel); the reaper removes it."""
    live.stop_reason = reason
    await ctx.store.set_stop_reason(live.attempt.id, reason)
    if live.engine_id is None:
        return  # still being created: submitter.create stops it once it exists
    try:
        await ctx.backend.stop(live.attempt)
    except EngineError as exc:
        log.warning("stopping %s: %s", live.attempt.service, exc)
    await record_end(ctx, live, Observation(Phase.ENDED, Outcome.LOST), "covey")


def _confirming(ctx: Context) -> bool:
    return any(live.ended and not live.confirmed.is_set() for live in ctx.live.values())


def _interval(ctx: Context) -> float:
    lives = list(ctx.live.values())
    if any(
        (live.ended and not live.confirmed.is_set()) or (live.died and not live.ended)
        for live in lives
    ):
        return CONFIRM_INTERVAL
    if not lives:
        return max(ctx.options.poll_interval, 2.0)
    if any(live.spec.timeout is not None or live.phase is Phase.PENDING for live in lives):
        busy = BUSY_INTERVAL
        if ctx.counters.events_up:
            # Each listing parses every live task: with many in flight, list less often (up
            # to the poll interval). Starts and zero exits still arrive at once as events.
            busy *= max(1.0, len(lives) / BUSY_LIVES)
        return min(busy, ctx.options.poll_interval)
    return ctx.options.poll_interval


async def poll_loop(
    ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Poll forever: at once when woken, else on a short or long interval."""
    task_status.started()
    while True:
        woke = await ctx.look.wait(_interval(ctx))
        if woke:  # let a burst of events share one listing; after a die, let it catch up
            await anyio.sleep(CONFIRM_INTERVAL if _confirming(ctx) else EVENT_DEBOUNCE)
        if not ctx.live and not woke:
            await _idle_refresh(ctx)
            continue
        try:
            await poll_once(ctx)
            await ctx.store.flush()  # the deferred notes (running, created, removed)
        except Unavailable as exc:
            ctx.counters.api_errors += 1
            log.info("engine unavailable, polling again: %s", exc)
            await anyio.sleep(1.0)
        except EngineError as exc:
            ctx.counters.api_errors += 1
            log.warning("task listing failed: %s", exc)
            await anyio.sleep(1.0)


async def _idle_refresh(ctx: Context) -> None:
    await ctx.store.flush()
    try:
        await ctx.refresh_nodes()
    except EngineError:
        ctx.counters.api_errors += 1


async def on_event(ctx: Context, event: EngineEvent, killed: set[str], *, local: bool) -> None:
    """One container event of this store, from this engine (``local``) or another node's
    (covey.watcher); ``killed`` are the containers of that engine sent a signal so far."""
    if event.action == "kill":
        killed.add(event.actor_id)
        return
    hint = event_observation(event, killed)
    if event.action == "die":
        killed.discard(event.actor_id)
    if hint is None:  # a non-zero or signalled exit: only the task list can say why
        dying = ctx.live.get(event.attributes.get(ATTEMPT_LABEL, ""))
        if dying is not None and event.action == "die":
            dying.died = True  # the listing lags the event: look again soon
        ctx.look.set()
        return
    live = ctx.live.get(hint[0])
    if live is not None and not live.ended and not live.stop_reason:
        if hint[1].phase is Phase.ENDED:
            ended_here(ctx, live, event.actor_id if local else None)
        with anyio.CancelScope(shield=True):
            await apply(ctx, live, hint[1], "event")


async def event_loop(
    ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Follow the event stream; resubscribe with backoff whenever it drops (never giving up:
    the stream is a hint, and polling goes on without it)."""
    task_status.started()
    backoff = Backoff()
    while True:
        # Containers sent a signal on this subscription (a drain, `docker stop`, covey's own
        # stop): a job that traps SIGTERM then exits 0, and only the task list can say
        # whether that was its success (`complete`) or its stop (`shutdown`).
        killed: set[str] = set()
        try:
            async for event in ctx.engine.events(ctx.backend.event_filters()):
                ctx.counters.events_up = True
                backoff.reset()
                await on_event(ctx, event, killed, local=True)
        except EngineError as exc:
            log.info("event stream dropped (%s); polling and resubscribing", exc)
        ctx.counters.events_up = False
        ctx.counters.event_reconnects += 1
        ctx.look.set()
        await backoff.sleep()
