"""The shared paths behind ``covey run``, ``covey batch`` and ``covey supervise``.

Commands in :mod:`covey.cli` only parse flags; everything they do happens here, in one
event loop, through the same :class:`covey.Client` programs use.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, BinaryIO

import anyio
from rich.console import Console

from covey import tracker
from covey.capture import STDERR, STDOUT, Passthrough
from covey.client import Client, Jobs
from covey.context import Context, Live, log
from covey.errors import CoveyError, EngineError
from covey.pipeline import Pipeline
from covey.report import BatchProgress, summary
from covey.results import JobResult
from covey.spec import JobSpec
from covey.states import JobState
from covey.store import Store

if TYPE_CHECKING:
    from covey.metrics import SupervisorCollector

SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
METRICS_REFRESH = 1.0
FOLLOW_GRACE = 5.0  # after the job settled, for the follower to write what the store has
# `covey run` could not pass all of the job's output through: never a clean exit then
PASSTHROUGH_INCOMPLETE = 125
STANDBY_POLL = 1.0
UNHOLD_PATIENCE = 10.0


def exit_code_of(result: JobResult) -> int:
    """``docker run``'s convention: the job's code; 124 deadline; 125 covey/engine failure."""
    if result.state is JobState.SUCCEEDED:
        return 0
    if result.state is JobState.TIMED_OUT:
        return 124
    if result.state is JobState.FAILED and result.exit_code is not None:
        return result.exit_code
    if result.state is JobState.CANCELLED:
        return 130
    return 125


async def _stream_logs(ctx: Context, live: Live, hold: Passthrough) -> None:
    """Copy a running attempt's followed logs to our stdout/stderr as they come, counting
    bytes in ``hold`` (the reaper waits on it before it removes the service).

    The engine ends a container's followed stream when the container stops, at times before
    its last bytes (measured: 12 KB short of 50 MB); then, once the reaper has said how much
    there is, the log is read again and what the stream did not give is written.
    """
    try:
        while live.engine_id is None:  # not created yet; cancelled if it never is
            await anyio.sleep(0.02)
        await _copy(ctx.backend.follow_logs(live.attempt), hold)
        while hold.target is None:  # cancelled when the attempt is settled without a read
            await anyio.sleep(0.02)
        if not hold.caught_up:
            log.info("re-reading the output of %s", live.attempt.service)
            skip = dict(hold.written)
            await _copy(ctx.backend.follow_logs(live.attempt, follow=False), hold, skip)
    except (EngineError, OSError) as exc:  # the stream broke, or our stdout was closed
        log.info("following the output of %s stopped: %s", live.attempt.service, exc)
    finally:
        hold.stop()


async def _copy(
    pieces: AsyncIterator[tuple[int, bytes]], hold: Passthrough, skip: dict[int, int] | None = None
) -> None:
    """Write the pieces to our stdout/stderr, after the first ``skip`` bytes of each stream."""
    outs: dict[int, BinaryIO] = {STDOUT: sys.stdout.buffer, STDERR: sys.stderr.buffer}
    async for stream, piece in pieces:
        data = piece
        if skip and skip[stream]:
            seen = min(skip[stream], len(piece))
            skip[stream] -= seen
            data = piece[seen:]
            if not data:
                hold.busy()
                continue
        out = outs[stream]
        out.write(data)
        out.flush()
        hold.wrote(stream, len(data))


async def _follow_job(client: Client, job_id: str) -> str | None:
    """Stream the output of each attempt of ``job_id`` while it runs, then whatever the
    store has that the stream missed. Returns what of the last attempt's output could not
    be passed through, or ``None`` when every byte was."""
    ctx = client.context
    seen: set[str] = set()
    short: str | None = None
    while True:
        live = ctx.live_for_job(job_id)
        if live is None:
            job = await ctx.store.job(job_id)
            if job is not None and job.state.terminal:
                return short
            await anyio.sleep(0.05)
            continue
        if live.attempt.id in seen:
            await anyio.sleep(0.02)
            continue
        seen.add(live.attempt.id)
        # registered at once, long before the attempt can have ended and be settled
        hold = live.passthrough = Passthrough()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stream_logs, ctx, live, hold)
            while ctx.live.get(live.attempt.id) is not None:
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        short = await _rest_from_store(ctx, live.attempt.id, hold)


async def _rest_from_store(ctx: Context, attempt_id: str, hold: Passthrough) -> str | None:
    """Write what the followed stream missed when the store has all of it; say what is
    still missing (``None``: nothing). The store's sizes count every byte the engine had."""
    records = await ctx.store.logs(attempt_id)
    missing: list[str] = []
    for stream, name, out in (
        (STDOUT, "stdout", sys.stdout.buffer),
        (STDERR, "stderr", sys.stderr.buffer),
    ):
        record = records.get(name)
        if record is None or not record.complete:
            missing.append(f"{name}: the engine could not give all of it")
            continue
        done = hold.written[stream]
        if done < record.size and not record.truncated:
            with contextlib.suppress(OSError):
                out.write(record.data[done:])
                out.flush()
                done = record.size
        if done < record.size:
            missing.append(f"{name}: {done} of {record.size} bytes")
    return "; ".join(missing) or None


async def _on_signal(
    client: Client, job_ids: Sequence[str] | None, got: list[int], scope: anyio.CancelScope
) -> None:
    """SIGINT/SIGTERM: cancel ``job_ids`` (``None``: every job of the client's batches, a
    pipeline's waiting stages too), wait up to 30 s for their attempts to be removed."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            got.append(SIGNAL_EXIT.get(signal.Signals(signum), 130))
            if not client.has_started:
                scope.cancel()
                return
            ctx = client.context
            if job_ids is None:
                await ctx.store.request_cancel((), batches=client.batches)
                job_ids = [j for b in client.batches for j in await ctx.store.batch_job_ids(b)]
            else:
                await ctx.store.request_cancel(job_ids)
            for job_id in job_ids:
                live = ctx.live_for_job(job_id)
                if live is not None and not live.ended:
                    await tracker.stop(ctx, live, "cancel")
            with anyio.move_on_after(30):
                while any(ctx.live_for_job(j) for j in job_ids):
                    await anyio.sleep(0.05)
            scope.cancel()
            return


async def run_one(
    client: Client,
    spec: JobSpec,
    *,
    service_name: str | None,
    quiet: bool,
    as_json: bool,
) -> int:
    """``covey run``: one job, logs streamed, exit code passed through; 125 (and one line on
    stderr) when not all of the job's output could be passed through."""
    _, (job_id,) = await client.start([spec], service_names=[service_name])
    got: list[int] = []
    result: JobResult | None = None
    follow = not quiet and not as_json
    followed: list[str | None] = []  # what was not passed through, once the follower is done
    async with anyio.create_task_group() as tg:
        tg.start_soon(_on_signal, client, [job_id], got, tg.cancel_scope)
        if follow:

            async def follower() -> None:
                followed.append(await _follow_job(client, job_id))

            tg.start_soon(follower)
        result = await client.wait(job_id)
        with anyio.move_on_after(FOLLOW_GRACE):  # it reads the store's sizes and may write
            while (follow and not followed) or client.context.live_for_job(job_id) is not None:
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    if got:
        return got[0]
    if result is None:  # pragma: no cover - the task group only ends one way without a signal
        return 125
    if as_json:
        print(json.dumps(result.to_json(logs=True), indent=2))
    elif result.state is not JobState.SUCCEEDED and (
        result.state is not JobState.FAILED or result.exit_code in (None, 125, 126, 127)
    ):
        print(
            f"covey: job {result.id} {result.state.value}: {result.error or ''}".rstrip(": "),
            file=sys.stderr,
        )
    cut = not followed or followed[0] is not None
    if follow and cut and result.state is not JobState.CANCELLED:  # cancelled: asked to stop
        why = followed[0] if followed else "the output stream did not finish"
        print(f"covey: job {result.id}: output incomplete ({why})", file=sys.stderr)
        return PASSTHROUGH_INCOMPLETE
    return exit_code_of(result)


async def detach(client: Client, spec: JobSpec, *, service_name: str | None) -> str:
    """``covey run -d``: start the job now, then hand it to ``covey supervise``.

    The job is created by this process (so it starts at once, supervisor or not); when this
    process exits, the client hands what it still holds to the queue, and a supervisor on
    the store adopts the attempt and records its end with the engine's own timestamps.
    """
    _, (job_id,) = await client.start([spec], service_names=[service_name])
    ctx = client.context
    while True:  # a create is retried for --engine-timeout at most, then the job is rejected
        live = ctx.live_for_job(job_id)
        job = await ctx.store.job(job_id)
        if job is not None and job.state.terminal:
            if job.state is not JobState.SUCCEEDED:
                raise CoveyError(f"job {job_id} {job.state.value}: {job.error or ''}".rstrip(": "))
            break
        if live is not None and live.engine_id:
            break
        await anyio.sleep(0.02)
    return job_id


async def run_batch(
    client: Client, jobs: Jobs, *, name: str | None, as_json: bool, progress: bool
) -> int:
    """``covey batch``: every job to its end (a pipeline's stages in turn, skipped ones
    included), a progress bar, then a summary or JSON."""
    err = Console(stderr=True)
    started = time.monotonic()
    results: list[JobResult] = []
    got: list[int] = []
    known = len(jobs.static_specs()) if isinstance(jobs, Pipeline) else len(jobs)
    batch: list[str] = []
    with BatchProgress(known, err, enabled=progress and not as_json) as bar:
        async with anyio.create_task_group() as tg:

            async def collect() -> None:
                async for result in client.run_batch(jobs, name=name):
                    if not batch:
                        batch.append(result.batch)
                    results.append(result)
                    bar.finished(result)
                tg.cancel_scope.cancel()

            async def refresh() -> None:
                while not client.has_started:
                    await anyio.sleep(0.02)
                ctx = client.context
                while True:
                    lives = list(ctx.live.values())
                    running = sum(1 for live in lives if live.phase.value == "running")
                    total = await _batch_total(ctx, batch, known)
                    bar.update(len(results), running, total - len(results) - running, total)
                    await anyio.sleep(0.2)

            # a signal cancels every job of the batch, a pipeline's waiting ones included
            tg.start_soon(_on_signal, client, None, got, tg.cancel_scope)
            tg.start_soon(refresh)
            tg.start_soon(collect)
    if got:
        return got[0]
    wall = time.monotonic() - started
    results.sort(key=lambda r: r.created)
    ok = all(r.ok for r in results)
    if as_json:
        counts = Counter(r.state for r in results)
        skipped = counts[JobState.SKIPPED]
        doc = {
            "batch": results[0].batch if results else None,
            "total": len(results),
            "succeeded": counts[JobState.SUCCEEDED],
            "failed": len(results) - counts[JobState.SUCCEEDED] - skipped,
            "skipped": skipped,
            "wall_seconds": round(wall, 3),
            "jobs": [r.to_json() for r in results],
        }
        print(json.dumps(doc, indent=2))
    else:
        summary(results, wall, err)
    return 0 if ok else 1


async def _batch_total(ctx: Context, batch: list[str], known: int) -> int:
    if not batch:
        return known
    row = await ctx.store.batch(batch[0])
    return row.total if row is not None else known


async def _refresh_counts(ctx: Context, collector: SupervisorCollector) -> None:
    """Keep the metrics' job counts fresh (a scrape runs in another thread: no store there)."""
    while True:
        with contextlib.suppress(sqlite3.Error):
            collector.counts = await ctx.store.counts()
        await anyio.sleep(METRICS_REFRESH)


async def supervise(client: Client, *, metrics_addr: str | None, standby: bool = False) -> int:
    """``covey supervise``: the queue's orchestrator until SIGTERM/SIGINT.

    One supervisor per store: a second one is refused, naming the first, or with
    ``--standby`` waits until the first is gone (killed, crashed, stopped) and takes over.
    """
    from covey import supervisor
    from covey.context import Context
    from covey.metrics import serve_metrics
    from covey.store import Scope

    assert client.store is not None
    store = client.store
    err = Console(stderr=True)
    # before the task group: a refusal is one line and exit 125, not an exception group
    # (a standby waits here; SIGTERM ends it the default way, it holds nothing yet)
    holder = await _become_supervisor(store, standby, err)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_until_signal, tg.cancel_scope)
        try:
            client.options.supervise = True
            ctx = Context(store, client.backend, client.options, Scope(None))
            if metrics_addr:
                tg.start_soon(_refresh_counts, ctx, serve_metrics(ctx, metrics_addr))
            tg.start_soon(_supervisor_heartbeat, store, holder)
            await tg.start(supervisor.run, ctx)
            err.print(
                f"covey: supervising {store.path} on {client.backend.mode} engine",
                highlight=False,
            )
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(UNHOLD_PATIENCE):
                await store.unhold(holder)
    return 0


async def _until_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def _become_supervisor(store: Store, standby: bool, err: Console) -> str:
    """Register as the store's one supervisor; refuse, or stand by, while another lives."""
    from covey.holders import describe

    told = False
    while True:
        ours, other = await store.hold("supervisor", exclusive=True)
        if other is None:
            if told:
                err.print("covey: the active supervisor is gone: taking over", highlight=False)
            return ours.id
        if not standby:
            raise CoveyError(
                f"another covey supervise is running on {store.path} ({describe(other)}):"
                " stop it first, or start this one with --standby to take over when it is gone"
            )
        if not told:
            told = True
            err.print(
                f"covey: standing by: the active supervisor is {describe(other)}",
                highlight=False,
            )
        await anyio.sleep(STANDBY_POLL)


async def _supervisor_heartbeat(store: Store, holder: str) -> None:
    from covey.holders import HEARTBEAT

    while True:
        await anyio.sleep(HEARTBEAT)
        if not await store.heartbeat(holder):
            raise CoveyError(
                f"this supervisor's registration in {store.path} was taken over (was it found"
                " gone while it hung?); stopping so that only one supervisor serves the store"
            )


def fail(error: CoveyError) -> int:
    print(f"covey: {error}", file=sys.stderr)
    return error.exit_code
