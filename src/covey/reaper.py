"""The reaper: makes each ended attempt's logs safe, then removes its service.

Order matters and is the reason this is a role of its own: swarm serves a finished
service's logs and frees its reservation only once the task list says it ended, and the
logs are gone once the service is removed. So: wait for the engine's confirmation, release
the governor's booking, read the logs with a timeout (a hanging log stream must never keep
a job from being recorded: the end is already in the store), store them, then remove.

Logs are read as a stream with the cap applied while reading (covey.capture), so a job
printing 300 MB costs the cap in memory, not 300 MB; and a ``covey run`` copying the output
through is given the time to finish before the service, and with it the stream, is gone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import anyio
from anyio.abc import TaskStatus

from covey.backend import OUTPUT_PREFIX, Backend, Seen
from covey.capture import Captured, LogRead, Passthrough
from covey.context import Context, Live, log
from covey.engine import NotFound, daemon_log_errors
from covey.errors import EngineError
from covey.retrying import GIVE_UP_AFTER, retry
from covey.states import Outcome
from covey.store import DEFAULT_LOG_CAP, AttemptEnd, AttemptRow, JobSnapshot, Store

CONFIRM_TIMEOUT = 10.0
LOST_LOG_TIMEOUT = 3.0
PARALLEL = 16


async def remove_with_retry(
    backend: Backend, attempt: AttemptRow, *, give_up_after: float = GIVE_UP_AFTER
) -> bool:
    """Remove an attempt's engine object, retrying while the engine is unavailable.

    ``False`` when it is still there: refused, or the engine was unavailable until
    ``give_up_after`` (``--engine-timeout``). It keeps this store's labels, so the next
    reconcile or ``covey prune`` removes it; the reason is logged.
    """
    try:
        await retry(
            lambda: backend.remove(attempt),
            what=f"remove {attempt.service}",
            give_up_after=give_up_after,
        )
    except NotFound:
        return True
    except EngineError as exc:
        log.warning("%s (left for `covey prune`)", exc)
        return False
    return True


LOG_READS = 3


def _without_daemon_errors(stream: Captured) -> tuple[Captured, list[str]]:
    """The stream without the engine's own complaints (see ``daemon_log_errors``)."""
    data, errors = daemon_log_errors(stream.data)
    if not errors:
        return stream, []
    return replace(stream, data=data, size=stream.size - (len(stream.data) - len(data))), errors


async def read_logs(
    backend: Backend,
    attempt: AttemptRow,
    timeout: float,
    cap: int,
    reads: int = LOG_READS,
    container: str | None = None,
) -> tuple[LogRead, LogRead]:
    """Read the logs: (as read, as to be stored).

    When the engine says part of them is unavailable, or the read broke midway, try again a
    little later; then keep what there is, marked incomplete, and say what is missing in the
    stored stderr. The first value keeps the engine's own counts (a follower's target).
    """
    problems: list[str] = []
    for n in range(reads):
        read = await backend.logs(attempt, timeout, container, cap=cap)
        out, out_errors = _without_daemon_errors(read.stdout)
        err, err_errors = _without_daemon_errors(read.stderr)
        problems = out_errors + err_errors + ([read.problem] if read.problem else [])
        if not problems:
            return read, LogRead(out, err)
        if n + 1 < reads:
            await anyio.sleep(1.0 + n)
    log.warning("logs of %s incomplete: %s", attempt.service, "; ".join(problems))
    note = f"[covey: logs incomplete, the engine said: {'; '.join(problems)}]\n".encode()
    out = replace(out, complete=False)
    err = replace(err, data=err.data + note, size=err.size + len(note), complete=False)
    return read, LogRead(out, err, "; ".join(problems))


async def save_logs(
    store: Store,
    backend: Backend,
    attempt: AttemptRow,
    timeout: float,
    cap: int,
    reads: int = LOG_READS,
    container: str | None = None,
    snapshot: bool = False,
    passthrough: Passthrough | None = None,
) -> JobSnapshot | None:
    """Read and store the logs (the tail of ``cap`` bytes per stream, 0: all); on failure
    store what is known and say so.

    ``timeout`` bounds each wait for more bytes, not the whole read. With ``passthrough``, it
    then waits (as long as the follower makes progress) until the follower has written as
    many bytes as the engine has. With ``snapshot``, returns the job and its logs as stored
    (see ``Store.save_logs``).
    """
    read: LogRead | None = None
    try:
        read, kept = await read_logs(backend, attempt, timeout, cap, reads, container)
    except EngineError as exc:
        current = await store.attempt(attempt.id)
        if current is not None and current.logs_saved:
            return None  # saved first by another process (`covey cancel`, a supervisor)
        log.warning("logs of %s could not be read: %s", attempt.service, exc)
        note = f"[covey: logs could not be read: {exc}]\n".encode()
        incomplete = Captured(b"", 0, truncated=False, complete=False)
        kept = LogRead(incomplete, Captured(note, len(note), False, complete=False), str(exc))
    stored = await store.save_logs(
        attempt.id, kept.stdout, kept.stderr, snapshot=attempt.job_id if snapshot else None
    )
    if (
        passthrough is not None
        and read is not None
        and not await passthrough.drain(read.stdout.size, read.stderr.size, idle=timeout)
    ):  # said by `covey run` itself, on its stderr: only noted here
        log.info("the output of %s was not all passed through", attempt.service)
    return stored


async def settle(ctx: Context, live: Live) -> None:
    """Confirmation, capacity release, logs, removal: the end of an attempt's life."""
    if not live.created.is_set():
        await live.created.wait()  # its end may be known before the create call has returned
    logs_saved = live.attempt.logs_saved  # by us before a restart (the adopted row says so)
    snapshot: JobSnapshot | None = None
    lost = live.end is not None and live.end.outcome is Outcome.LOST
    if not live.stop_reason and not lost and not live.confirmed.is_set():
        with anyio.move_on_after(CONFIRM_TIMEOUT):
            await live.confirmed.wait()
    if not live.stop_reason:
        ctx.release(live.job.id)
    # Saved by `covey cancel` in another process meanwhile: then the read fails and save_logs
    # finds them in the store.
    wanted = ctx.on_settled is not None
    if not logs_saved and live.engine_id:
        timeout = LOST_LOG_TIMEOUT if lost else ctx.options.log_timeout
        reads = 1 if lost else LOG_READS  # a lost attempt's node is gone: no use waiting
        snapshot = await save_logs(
            ctx.store,
            ctx.backend,
            live.attempt,
            timeout,
            ctx.options.log_cap,
            reads,
            live.container,
            snapshot=wanted,
            # a follower is not waited for after a cancel: that covey process is exiting
            passthrough=live.passthrough if live.stop_reason != "cancel" else None,
        )
    elif not logs_saved:  # never created: nothing to read
        snapshot = await ctx.store.save_logs(
            live.attempt.id,
            Captured.empty(),
            Captured.empty(),
            snapshot=live.job.id if wanted else None,
        )
    # Removed by name even without an engine id: the id is noted lazily, and a create whose
    # reply was lost may still have made the service (a 404 means there is nothing to do).
    if _keep(ctx, live) or await remove_with_retry(
        ctx.backend, live.attempt, give_up_after=ctx.options.engine_timeout
    ):
        ctx.store.mark_removed(live.attempt.id)
    ctx.release(live.job.id)
    ctx.live.pop(live.attempt.id, None)
    if not ctx.live:  # nothing left in flight: commit the deferred notes now, not next round
        await ctx.store.flush()
    if ctx.on_settled:
        ctx.on_settled(live.job.id, snapshot)


def _keep(ctx: Context, live: Live) -> bool:
    if ctx.options.keep:
        return True
    outcome = live.end.outcome if live.end else None
    return ctx.options.keep_failed is not None and outcome is not Outcome.SUCCEEDED


async def run(ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Settle ended attempts as they arrive, several at once."""
    limiter = anyio.CapacityLimiter(PARALLEL)

    async def one(live: Live) -> None:
        # Not shielded: a stop must be quick. Every step is idempotent and its store write is
        # shielded, so an attempt cut off here is settled by the next reconcile.
        if live.confirmed.is_set() and not live.stop_reason:
            ctx.release(live.job.id)  # its capacity is free at once, not after other jobs' removals
        async with limiter:
            await settle(ctx, live)

    task_status.started()
    async with anyio.create_task_group() as tg:
        async for live in ctx.reaper_inbox:
            tg.start_soon(one, live)


@dataclass
class PruneReport:
    removed: list[str] = field(default_factory=list)  # names of the objects removed
    recorded: int = 0  # ends recorded for covey processes that are gone
    running: list[str] = field(default_factory=list)  # orphans still running (left alone)


async def _prune_output(
    store: Store,
    backend: Backend,
    ident: str,
    name: str,
    attempt_id: str | None,
    report: PruneReport,
) -> None:
    """Remove a shared output (covey.sharer) once no job of its batch can still read it."""
    job = await store.job(attempt_id.rpartition("-")[0]) if attempt_id else None
    if job is not None and not await store.batch_finished(job.batch_id):
        return
    if await backend.remove_object(ident):
        report.removed.append(name)
    if attempt_id:
        await store.forget_outputs([attempt_id])


async def prune(store: Store, backend: Backend, *, older_than: float = 0.0) -> PruneReport:
    """Remove every object of this store that no job needs any more.

    Nothing is removed before its end is recorded and its logs are safe: an attempt that
    ended on the engine while the process that ran it was gone (kill -9 of a ``covey
    batch``) is recorded here first, from the engine's task list. Attempts a live covey
    process looks after (a foreground run, or the supervisor) are left to it; running
    attempts of processes that are gone are left running for a supervisor to adopt.
    """
    report = PruneReport()
    leftovers = await backend.leftovers()
    if not leftovers:
        return report
    minded = await store.minded_attempts()
    seen: dict[str, Seen] | None = None
    now = time.time()
    for ident, name, attempt_id in leftovers:
        if ident.startswith(OUTPUT_PREFIX):  # a job's output shared with its readers
            await _prune_output(store, backend, ident, name, attempt_id, report)
            continue
        attempt = await store.attempt(attempt_id) if attempt_id else None
        if attempt is not None and attempt.id in minded:
            continue  # its process is alive: it records, reads and removes it itself
        if attempt is not None and attempt.phase != "ended" and not attempt.removed:
            if seen is None:
                seen = {s.attempt: s for s in await backend.observe({})}
            found = seen.get(attempt.id)
            if found is None or not found.observation.ended:
                report.running.append(name)
                continue
            attempt = await _record_gone(store, backend, attempt, found, now, report)
        if attempt is not None and attempt.ended and now - attempt.ended < older_than:
            continue
        if attempt is not None and not attempt.logs_saved and attempt.phase == "ended":
            await save_logs(store, backend, attempt, 10.0, DEFAULT_LOG_CAP)
        if await backend.remove_object(ident):
            report.removed.append(name)
        if attempt is not None:
            store.mark_removed(attempt.id)
    return report


async def _record_gone(
    store: Store,
    backend: Backend,
    attempt: AttemptRow,
    found: Seen,
    now: float,
    report: PruneReport,
) -> AttemptRow | None:
    """Record the end of an attempt whose process is gone, as the engine saw it (with the
    engine's time of the end), logs first; the attempt as stored afterwards."""
    obs = found.observation
    at = min(obs.at or now, now)  # when it ended, by the engine's clock
    end = AttemptEnd(obs.outcome or Outcome.LOST, obs.exit_code, obs.error, None, at, "prune")
    await save_logs(store, backend, attempt, 10.0, DEFAULT_LOG_CAP)
    if await store.finish(attempt, end) is not None:
        report.recorded += 1
    return await store.attempt(attempt.id)
