"""Schedules: a batch file submitted by the supervisor at each fire time of a cron expression.

``covey schedule add NIGHTLY --cron "0 2 * * *" --tz Europe/Berlin -f nightly.yaml`` stores
the schedule; ``covey supervise`` fires it. Cron expressions are read by ``cronsim`` (the
parser of healthchecks.io: typed, small, the usual five fields with ``L``, ``#`` and
``@daily``-style names), in the schedule's time zone, so ``0 2 * * *`` is 02:00 on the wall
clock of that zone in summer and in winter; on the night the clocks go forward a time that
does not exist fires at the first minute after the gap, and on the night they go back a
fixed time that exists twice fires once, the first time (cron's own rules, as cronsim
implements them; an expression with a wildcard hour fires in both).

Exactly once per fire time: the batch is submitted under the idempotency key
``schedule:NAME:<fire time>``, so a supervisor killed between the submit and the note that
the schedule has fired submits nothing new when it starts again (the store returns the batch
made before), and only then moves on to the next fire time.

Missed fire times (no supervisor ran then): the most recent one is fired once when a
supervisor is back, the older ones are skipped and counted in the log — a nightly job that
missed three nights runs once, not three times in a row.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
from anyio.abc import TaskStatus
from cronsim import CronSim, CronSimError

from covey.context import Context, log
from covey.errors import CoveyError, SpecError
from covey.store import ScheduleRow as Schedule

CHECK_INTERVAL = 1.0  # how often the supervisor looks for due schedules
MAX_SKIPPED = 100_000  # fire times counted as missed before giving up counting


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SpecError(f"--tz: {name!r} is not a time zone (e.g. UTC, Europe/Berlin)") from None


def next_after(cron: str, tz: str, after: float) -> float:
    """The first fire time strictly after ``after`` (UNIX seconds)."""
    start = datetime.fromtimestamp(after, UTC).astimezone(zone(tz))
    try:
        return next(iter(CronSim(cron, start))).timestamp()
    except CronSimError as exc:
        raise SpecError(f"--cron: {cron!r} is not a cron expression: {exc}") from None


def check(cron: str, tz: str) -> None:
    """A clear error now for an expression or zone the supervisor could not use later."""
    next_after(cron, tz, time.time())


def due(schedule: Schedule, now: float) -> tuple[float, int] | None:
    """The fire time to fire now, and how many earlier ones were missed; ``None``: none due.

    Policy (see the module's docstring): the latest fire time at or before ``now`` fires,
    the ones before it since ``next_fire`` are skipped.
    """
    if schedule.paused or schedule.next_fire > now:
        return None
    fire, skipped = schedule.next_fire, 0
    while skipped < MAX_SKIPPED:
        later = next_after(schedule.cron, schedule.tz, fire)
        if later > now:
            break
        fire, skipped = later, skipped + 1
    return fire, skipped


def key(name: str, fire: float) -> str:
    """The idempotency key of one fire time of one schedule."""
    return f"schedule:{name}:{fire:.0f}"


async def fire_due(ctx: Context, now: float) -> list[str]:
    """Submit every due schedule's batch once; the batch ids submitted."""
    from covey.batchfile import load_batch

    made: list[str] = []
    for schedule in await ctx.store.schedules():
        found = due(schedule, now)
        if found is None:
            continue
        fire, skipped = found
        if skipped:
            log.warning(
                "schedule %s: %d fire time(s) missed while no supervisor ran; firing the"
                " latest (%s) once",
                schedule.name,
                skipped,
                _when(fire, schedule.tz),
            )
        batch_id: str | None = None
        error: str | None = None
        try:
            pipeline = load_batch(Path(schedule.file))
            batch_id, _, existed = await ctx.store.create_batch(
                pipeline,
                name=f"{schedule.name}@{_when(fire, schedule.tz)}",
                idempotency_key=key(schedule.name, fire),
            )
            if not existed:
                made.append(batch_id)
                ctx.new_work = True
                ctx.work.set()
        except CoveyError as exc:  # the file is gone or wrong: this fire time fails, once
            error = str(exc)
            log.warning("schedule %s at %s: %s", schedule.name, _when(fire, schedule.tz), error)
        upcoming = next_after(schedule.cron, schedule.tz, max(fire, now))
        await ctx.store.schedule_fired(schedule.name, fire, upcoming, batch_id, error)
    return made


def _when(at: float, tz: str) -> str:
    return datetime.fromtimestamp(at, UTC).astimezone(zone(tz)).isoformat(timespec="minutes")


async def run(ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """The supervisor fires due schedules, looking once a second."""
    task_status.started()
    while True:
        try:
            await fire_due(ctx, time.time())
        except CoveyError as exc:
            log.warning("schedules: %s", exc)
        await anyio.sleep(CHECK_INTERVAL)


# -- the commands (covey schedule ...) -------------------------------------------------------


async def add(db: Path | None, name: str, cron: str, tz: str, file: Path) -> int:
    """Store a schedule; its batch file (an absolute path) is checked now and read again at
    each fire time."""
    from covey.batchfile import load_batch
    from covey.spec import validate_name
    from covey.store import Store

    validate_name(name, what="NAME")
    load_batch(file)  # a mistake is reported now, with its line, not at 2 a.m.
    first = next_after(cron, tz, time.time())
    async with Store.open(db) as store:
        if not await store.schedule_add(name, cron, tz, str(file), first):
            raise SpecError(f"a schedule named {name!r} exists (covey schedule rm {name})")
    print(f"schedule {name}: next at {_when(first, tz)}")
    return 0


async def listing(db: Path | None, as_json: bool) -> int:
    import json

    from covey.store import Store

    async with Store.open(db, readonly=True) as store:
        found = await store.schedules()
    if as_json:
        for s in found:
            print(
                json.dumps(
                    {
                        "name": s.name,
                        "cron": s.cron,
                        "tz": s.tz,
                        "file": s.file,
                        "paused": s.paused,
                        "next_fire": s.next_fire,
                        "last_fire": s.last_fire,
                        "last_batch": s.last_batch,
                        "last_error": s.last_error,
                    }
                )
            )
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("NAME", "CRON", "TZ", "NEXT", "LAST", "LAST BATCH", "FILE", box=None)
    for s in found:
        last = _when(s.last_fire, s.tz) if s.last_fire else "-"
        if s.last_error:
            last += f" (failed: {s.last_error})"
        nxt = "paused" if s.paused else _when(s.next_fire, s.tz)
        table.add_row(s.name, s.cron, s.tz, nxt, last, s.last_batch or "-", s.file)
    Console(soft_wrap=True).print(table)
    return 0


async def remove(db: Path | None, name: str) -> int:
    from covey.store import Store

    async with Store.open(db) as store:
        if not await store.schedule_remove(name):
            raise SpecError(f"no schedule named {name!r}")
    print(f"schedule {name}: removed")
    return 0


async def pause(db: Path | None, name: str, paused: bool) -> int:
    """Pause; or resume from the next fire time after now (none of those missed while paused
    is fired)."""
    from covey.store import Store

    async with Store.open(db) as store:
        found = {s.name: s for s in await store.schedules()}.get(name)
        if found is None:
            raise SpecError(f"no schedule named {name!r}")
        upcoming = None if paused else next_after(found.cron, found.tz, time.time())
        await store.schedule_pause(name, paused, upcoming)
    what = "paused" if paused else f"resumed, next at {_when(upcoming or 0.0, found.tz)}"
    print(f"schedule {name}: {what}")
    return 0
