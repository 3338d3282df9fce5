"""The reaper: makes each ended attempt's logs safe, then removes its service.

Order matters and is the reason this is a role of its own: swarm serves a finished
service's logs and frees its reservation only once the task list says it ended, and the
logs are gone once the service is removed. So: wait for the engine's confirmation, release
the governor's booking, read the logs with a timeout (a hanging log stream must never keep
a job from being recorded: the end is already in the store), store them, then remove.
"""

from __future__ import annotations

import time

import anyio
from anyio.abc import TaskStatus

from covey.backend import Backend
from covey.context import Context, Live, log
from covey.engine import NotFound, Unavailable, daemon_log_errors
from covey.errors import EngineError
from covey.states import Outcome
from covey.store import AttemptRow, JobSnapshot, Store

CONFIRM_TIMEOUT = 10.0
LOST_LOG_TIMEOUT = 3.0
PARALLEL = 16


async def remove_with_retry(backend: Backend, attempt: AttemptRow, tries: int = 8) -> bool:
    """Remove an attempt's engine object, retrying while the engine is unavailable."""
    delay = 0.5
    for _ in range(tries):
        try:
            await backend.remove(attempt)
            return True
        except Unavailable:
            await anyio.sleep(delay)
            delay = min(delay * 2, 10.0)
        except NotFound:
            return True
    return False


LOG_READS = 3


async def _read_logs(
    backend: Backend, attempt: AttemptRow, timeout: float, reads: int, container: str | None
) -> tuple[bytes, bytes]:
    """Read the logs; when the engine says part of them is unavailable, try again a little
    later, then keep what there is and say what is missing (in the stored stderr)."""
    problems: list[str] = []
    for n in range(reads):
        with anyio.fail_after(timeout + 1):
            out, err = await backend.logs(attempt, timeout, container)
        out, out_errors = daemon_log_errors(out)
        err, err_errors = daemon_log_errors(err)
        problems = out_errors + err_errors
        if not problems:
            return out, err
        if n + 1 < reads:
            await anyio.sleep(1.0 + n)
    log.warning("logs of %s incomplete: %s", attempt.service, "; ".join(problems))
    note = f"[covey: logs incomplete, the engine said: {'; '.join(problems)}]\n"
    return out, err + note.encode()


async def save_logs(
    store: Store,
    backend: Backend,
    attempt: AttemptRow,
    timeout: float,
    cap: int,
    reads: int = LOG_READS,
    container: str | None = None,
    snapshot: bool = False,
) -> JobSnapshot | None:
    """Read and store the logs; on failure store what is known and say so in the history.

    With ``snapshot``, returns the job and its logs as stored (see ``Store.save_logs``).
    """
    try:
        out, err = await _read_logs(backend, attempt, timeout, reads, container)
    except (EngineError, TimeoutError) as exc:
        current = await store.attempt(attempt.id)
        if current is not None and current.logs_saved:
            return None  # saved first by another process (`covey cancel`, a supervisor)
        log.warning("logs of %s could not be read: %s", attempt.service, exc)
        out, err = b"", f"[covey: logs could not be read: {exc}]\n".encode()
    return await store.save_logs(
        attempt.id, out, err, cap, snapshot=attempt.job_id if snapshot else None
    )


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
        )
    elif not logs_saved:  # never created: nothing to read
        snapshot = await ctx.store.save_logs(
            live.attempt.id,
            b"",
            b"",
            ctx.options.log_cap,
            snapshot=live.job.id if wanted else None,
        )
    # Removed by name even without an engine id: the id is noted lazily, and a create whose
    # reply was lost may still have made the service (a 404 means there is nothing to do).
    if _keep(ctx, live) or await remove_with_retry(ctx.backend, live.attempt):
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


async def prune(store: Store, backend: Backend, *, older_than: float = 0.0) -> list[str]:
    """Remove every object of this store that no open attempt needs; returns their names."""
    open_ids = {a.id for a in await store.open_attempts_all()}
    removed: list[str] = []
    now = time.time()
    for ident, name, attempt_id in await backend.leftovers():
        attempt = await store.attempt(attempt_id) if attempt_id else None
        if attempt is not None and attempt.id in open_ids and attempt.phase != "ended":
            continue
        if attempt is not None and attempt.ended and now - attempt.ended < older_than:
            continue
        if attempt is not None and not attempt.logs_saved and attempt.phase == "ended":
            await save_logs(store, backend, attempt, 10.0, 0)
        if await backend.remove_object(ident):
            removed.append(name)
        if attempt is not None:
            store.mark_removed(attempt.id)
    return removed
