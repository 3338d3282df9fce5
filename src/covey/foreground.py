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
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO

import anyio
from rich.console import Console

from covey import tracker
from covey.client import Client
from covey.context import Context, Live
from covey.errors import CoveyError, EngineError
from covey.report import BatchProgress, summary
from covey.results import JobResult
from covey.spec import JobSpec
from covey.states import JobState

if TYPE_CHECKING:
    from covey.metrics import SupervisorCollector

SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
METRICS_REFRESH = 1.0


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


async def _stream_logs(ctx: Context, live: Live, written: dict[str, int]) -> None:
    """Copy a running attempt's followed logs to our stdout/stderr, counting bytes."""
    outs: dict[int, tuple[str, BinaryIO]] = {
        1: ("stdout", sys.stdout.buffer),
        2: ("stderr", sys.stderr.buffer),
    }
    try:
        async for kind, data in ctx.backend.follow_logs(live.attempt):
            name, out = outs[kind]
            out.write(data)
            out.flush()
            written[name] += len(data)
    except EngineError:
        return


async def _follow_job(client: Client, job_id: str) -> None:
    """Stream the logs of each attempt of ``job_id`` while it runs, then whatever was missed."""
    ctx = client.context
    seen: set[str] = set()
    while True:
        live = ctx.live_for_job(job_id)
        if live is None:
            job = await ctx.store.job(job_id)
            if job is not None and job.state.terminal:
                return
            await anyio.sleep(0.05)
            continue
        if live.attempt.id in seen or live.engine_id is None:
            await anyio.sleep(0.02)
            continue
        seen.add(live.attempt.id)
        written = {"stdout": 0, "stderr": 0}
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stream_logs, ctx, live, written)
            while ctx.live.get(live.attempt.id) is not None:
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        logs = await ctx.store.logs(live.attempt.id)
        for name, out in (("stdout", sys.stdout.buffer), ("stderr", sys.stderr.buffer)):
            record = logs.get(name)
            if record is not None and not record.truncated and len(record.data) > written[name]:
                out.write(record.data[written[name] :])
                out.flush()


async def _on_signal(
    client: Client, job_ids: Sequence[str], got: list[int], scope: anyio.CancelScope
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            got.append(SIGNAL_EXIT.get(signal.Signals(signum), 130))
            ctx = client.context
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
    """``covey run``: one job, logs streamed, exit code passed through."""
    _, (job_id,) = await client.start([spec], service_names=[service_name])
    got: list[int] = []
    result: JobResult | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(_on_signal, client, [job_id], got, tg.cancel_scope)
        if not quiet and not as_json:
            tg.start_soon(_follow_job, client, job_id)
        result = await client.wait(job_id)
        with anyio.move_on_after(5):
            while client.context.live_for_job(job_id) is not None:
                await anyio.sleep(0.02)
        await anyio.sleep(0.05)  # let the log follower print what the store has
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
    return exit_code_of(result)


async def detach(client: Client, spec: JobSpec, *, service_name: str | None) -> str:
    """``covey run -d``: queue the job for ``covey supervise`` and start it now."""
    assert client.store is not None
    batch_id, (job_id,), _ = await client.store.create_batch([spec], service_names=[service_name])
    client._batches.append(batch_id)
    ctx = await client._start()
    ctx.scope = type(ctx.scope)((batch_id,))
    ctx.new_work = True
    ctx.work.set()
    with anyio.fail_after(60):
        while True:
            live = ctx.live_for_job(job_id)
            job = await ctx.store.job(job_id)
            if (live is not None and live.engine_id) or (job is not None and job.state.terminal):
                break
            await anyio.sleep(0.02)
    return job_id


async def run_batch(
    client: Client, specs: Sequence[JobSpec], *, name: str | None, as_json: bool, progress: bool
) -> int:
    """``covey batch``: every job to its end, a progress bar, then a summary or JSON."""
    err = Console(stderr=True)
    started = time.monotonic()
    batch_id, job_ids = await client.start(specs, name=name)
    results: list[JobResult] = []
    got: list[int] = []
    ctx = client.context
    with BatchProgress(len(job_ids), err, enabled=progress and not as_json) as bar:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_on_signal, client, job_ids, got, tg.cancel_scope)

            async def one(job_id: str) -> None:
                result = await client.wait(job_id)
                results.append(result)
                bar.finished(result)

            async def refresh() -> None:
                while True:
                    lives = list(ctx.live.values())
                    running = sum(1 for live in lives if live.phase.value == "running")
                    bar.update(len(results), running, len(job_ids) - len(results) - running)
                    await anyio.sleep(0.2)

            tg.start_soon(refresh)
            async with anyio.create_task_group() as inner:
                for job_id in job_ids:
                    inner.start_soon(one, job_id)
            tg.cancel_scope.cancel()
    if got:
        return got[0]
    wall = time.monotonic() - started
    order = {j: i for i, j in enumerate(job_ids)}
    results.sort(key=lambda r: order[r.id])
    ok = all(r.ok for r in results)
    if as_json:
        doc = {
            "batch": batch_id,
            "total": len(results),
            "succeeded": sum(r.ok for r in results),
            "failed": sum(not r.ok for r in results),
            "wall_seconds": round(wall, 3),
            "jobs": [r.to_json() for r in results],
        }
        print(json.dumps(doc, indent=2))
    else:
        summary(results, wall, err)
    return 0 if ok else 1


async def _refresh_counts(ctx: Context, collector: SupervisorCollector) -> None:
    """Keep the metrics' job counts fresh (a scrape runs in another thread: no store there)."""
    while True:
        with contextlib.suppress(sqlite3.Error):
            collector.counts = await ctx.store.counts()
        await anyio.sleep(METRICS_REFRESH)


async def supervise(client: Client, *, metrics_addr: str | None) -> int:
    """``covey supervise``: the queue's orchestrator until SIGTERM/SIGINT."""
    from covey import supervisor
    from covey.context import Context
    from covey.metrics import serve_metrics
    from covey.store import Scope

    assert client.store is not None
    client.options.supervise = True
    ctx = Context(client.store, client.backend, client.options, Scope(None))
    async with anyio.create_task_group() as tg:
        if metrics_addr:
            tg.start_soon(_refresh_counts, ctx, serve_metrics(ctx, metrics_addr))
        await tg.start(supervisor.run, ctx)
        Console(stderr=True).print(
            f"covey: supervising {client.store.path} on {client.backend.mode} engine",
            highlight=False,
        )
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        tg.cancel_scope.cancel()
    return 0


def fail(error: CoveyError) -> int:
    print(f"covey: {error}", file=sys.stderr)
    return error.exit_code
