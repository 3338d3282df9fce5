"""Taking over attempts this orchestrator did not begin, or began before a restart.

The store, not a process, owns work: an attempt begun by a supervisor that was killed, by
a ``covey batch`` killed with -9, or by ``covey run -d`` (which hands its job over on
purpose) is adopted by the next orchestrator that serves its batch: at start (reconcile),
and while a supervisor runs, whenever a holder of work is found gone (see
:mod:`covey.holders`). Adopting is the same in every case: the attempt joins ``live`` as
the store describes it, and the engine's task list, the truth, says the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from covey.context import Context, Live, demand_of
from covey.states import Observation, Outcome, Phase
from covey.store import AttemptRow


@dataclass
class Adopted:
    """What the caller must still do: create attempts whose create may never have happened,
    and stop attempts someone asked to stop before the takeover."""

    to_create: list[Live] = field(default_factory=list)
    to_stop: list[Live] = field(default_factory=list)
    count: int = 0


async def adopt(ctx: Context, attempts: list[AttemptRow]) -> Adopted:
    """Put ``attempts`` (not ours yet) into ``ctx.live``; ended ones go to the reaper."""
    done = Adopted()
    fresh = [a for a in attempts if a.id not in ctx.live and a.id not in ctx.claimed]
    if not fresh:
        return done
    jobs = {j.id: j for j in await ctx.store.jobs_by_id([a.job_id for a in fresh])}
    for attempt in fresh:
        job = jobs.get(attempt.job_id)
        if job is None or attempt.id in ctx.live:
            continue
        live = Live(
            attempt=attempt, job=job, demand=demand_of(job.spec), engine_id=attempt.engine_id
        )
        ctx.live[attempt.id] = live
        done.count += 1
        if attempt.engine_id is not None or attempt.phase == "ended":
            live.created.set()  # else the caller creates it again (or adopts it by name)
        if attempt.phase == "ended":
            live.ended = True
            live.phase = Phase.ENDED
            live.end = Observation(Phase.ENDED, attempt.outcome or Outcome.LOST, attempt.exit_code)
            live.confirmed.set()
            await ctx.to_reaper.send(live)
            continue
        ctx.governor.hold(job.id, live.demand, None)
        if attempt.phase == "running":
            live.phase = Phase.RUNNING
            # the deadline counts from the real start, not from this adoption
            ran_for = max(0.0, time.time() - (attempt.started or time.time()))
            live.started = time.monotonic() - ran_for
        if attempt.stop_reason:
            live.stop_reason = attempt.stop_reason
            done.to_stop.append(live)
        if attempt.engine_id is None:
            done.to_create.append(live)
    return done


async def orphans(ctx: Context) -> list[AttemptRow]:
    """Open attempts in this orchestrator's scope that it does not track: after the work of
    a holder that is gone was handed to the queue, or a producer that ran its job itself."""
    await ctx.store.flush()  # our own removal notes first: those attempts are not orphans
    return [
        a
        for a in await ctx.store.open_attempts(ctx.scope)
        if a.id not in ctx.live and a.id not in ctx.claimed
    ]
