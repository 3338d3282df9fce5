"""The store-side commands: submit, ls, show, logs, cancel, retry, wait, prune.

Each opens the store (and the engine only when it must touch it) and prints for a person,
or JSON for scripts.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import anyio
from rich.console import Console
from rich.table import Table

from covey import holders as holding
from covey.backend import Backend
from covey.client import Jobs, pick_backend
from covey.engine import Engine, NotFound
from covey.errors import EngineError, SpecError, StoreError
from covey.reaper import prune as prune_objects
from covey.reaper import remove_with_retry, save_logs
from covey.results import result_of
from covey.states import JobState, Observation, Outcome
from covey.store import (
    DEFAULT_LOG_CAP,
    AttemptEnd,
    AttemptRow,
    BatchRow,
    HolderRow,
    JobRow,
    LogRecord,
    StageRow,
    Store,
    attempt_id,
)

out = Console(highlight=False, soft_wrap=True)
WAIT_POLL = 0.2
SERVED_CHECK = 5.0  # seconds between looks for a process that serves the jobs


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def submit(
    db: Path | None, specs: Jobs, *, key: str | None, as_json: bool, name: str | None
) -> int:
    async with Store.open(db) as store:
        batch_id, job_ids, existed = await store.create_batch(specs, name=name, idempotency_key=key)
        if await _supervisor(store) is None:
            print(
                f"covey: warning: no covey supervise is running on {store.path}: the jobs stay"
                " queued until one is started",
                file=sys.stderr,
            )
    if as_json:
        print(json.dumps({"batch": batch_id, "jobs": job_ids, "existing": existed}))
    else:
        print(batch_id)
    return 0


async def _supervisor(store: Store) -> HolderRow | None:
    """The live supervisor of this store, if one runs."""
    return next(
        (h for h in await store.holders() if h.role == "supervisor" and holding.alive(h)), None
    )


async def _targets(store: Store, refs: Sequence[str]) -> list[str]:
    ids: list[str] = []
    for ref in refs:
        ids += (await store.resolve(ref))[1]
    return ids


async def ls(
    db: Path | None,
    states: Sequence[str],
    batch_id: str | None,
    labels: Sequence[str],
    as_json: bool,
    limit: int,
) -> int:
    valid = {s.value for s in JobState}
    for s in states:
        if s not in valid:
            raise StoreError(f"--state: {s!r} is not a state (one of {', '.join(sorted(valid))})")
    wanted: list[tuple[str, str | None]] = [
        (x.partition("=")[0], x.partition("=")[2] if "=" in x else None) for x in labels
    ]
    async with Store.open(db, readonly=True) as store:
        jobs = await store.jobs(batch_id=batch_id, states=states)
        jobs = [j for j in jobs if _has_labels(j, wanted)][-limit:]
        pulling = await store.pulling_jobs([j.id for j in jobs if j.state is JobState.PENDING])
    if as_json:
        for j in jobs:
            print(json.dumps(_job_json(j) | {"pulling": j.id in pulling}))
        return 0
    prio = any(j.spec.priority for j in jobs)  # a column only where priorities are used
    columns = ["JOB", "BATCH", "NAME", "STATE", "EXIT", "NODE", "ATTEMPTS", "CREATED"]
    table = Table(*columns, *["PRIO"] * prio, box=None)
    for j in jobs:
        table.add_row(
            j.id,
            j.batch_id,
            j.name,
            "pulling" if j.id in pulling else j.state.value,
            "" if j.exit_code is None else str(j.exit_code),
            j.node or "",
            str(j.attempts),
            _when(j.created),
            *[str(j.spec.priority)] * prio,
        )
    out.print(table)
    return 0


def _has_labels(job: JobRow, wanted: Sequence[tuple[str, str | None]]) -> bool:
    labels = dict(job.spec.labels)
    return all(k in labels and (v is None or labels[k] == v) for k, v in wanted)


def _job_json(j: JobRow) -> dict[str, object]:
    return {
        "id": j.id,
        "priority": j.spec.priority,
        "batch": j.batch_id,
        "name": j.name,
        "index": j.spec.index,
        "state": j.state.value,
        "exit_code": j.exit_code,
        "error": j.error,
        "node": j.node,
        "attempts": j.attempts,
        "created": j.created,
        "started": j.started,
        "finished": j.finished,
        "stage": j.stage,
    }


def _stage_json(stage: StageRow, counts: Mapping[str, int]) -> dict[str, object]:
    return {
        "name": stage.name,
        "size": stage.size,
        "states": dict(counts),
        "needs": [{"stage": n, "condition": c, "inputs": i} for n, c, i in stage.needs],
        "items_from": stage.items_from,
        "skipped": stage.skipped,
    }


def _stage_table(stages: Sequence[StageRow], per_stage: Mapping[str, Mapping[str, int]]) -> Table:
    """The stages of a pipeline: their jobs by state, and what each waits for."""
    table = Table("STAGE", "JOBS", "STATES", "WAITS FOR", box=None, title_justify="left")
    for stage in stages:
        counts = per_stage.get(stage.name, {})
        states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        waits = [
            f"{need} ({condition}{', inputs' if inputs else ''})"
            for need, condition, inputs in stage.needs
        ]
        states = stage.instances_note or states
        size = "?" if stage.size is None else str(stage.size)
        table.add_row(stage.name, size, states, "; ".join(waits) or "-")
    return table


async def _show_batch(store: Store, ref: str, ids: Sequence[str], as_json: bool) -> int:
    batch = await store.batch(ref) or await store.batch(
        (await store.jobs_by_id(ids[:1]))[0].batch_id
    )
    assert batch is not None
    counts = await store.counts(batch.id)
    waiting_since, above = await store.queued_since(batch.id)
    stages = await store.stages(batch.id)
    per_stage = await store.stage_counts(batch.id)
    if as_json:
        print(
            json.dumps(
                {
                    "batch": batch.id,
                    "name": batch.name,
                    "total": batch.total,
                    "created": batch.created,
                    "states": counts,
                    "max_concurrent": batch.max_concurrent,
                    "paused": batch.paused,
                    "queued_since": waiting_since,
                    "stages": [_stage_json(s, per_stage.get(s.name, {})) for s in stages],
                    "jobs": ids,
                }
            )
        )
    else:
        out.print(
            f"batch {batch.id} ({batch.name or 'unnamed'}), {batch.total} jobs,"
            f" created {_when(batch.created)}"
        )
        steering = [f"at most {batch.max_concurrent} at once"] * (
            batch.max_concurrent is not None
        ) + ["paused: no admissions"] * batch.paused
        if steering:
            out.print("  " + "; ".join(steering))
        if waiting_since is not None:
            behind = f", behind jobs of priority {above} elsewhere" if above > 0 else ""
            out.print(f"  oldest queued job waiting {time.time() - waiting_since:.0f}s{behind}")
        for state, n in sorted(counts.items()):
            out.print(f"  {state:<10} {n}")
        if stages:
            out.print(_stage_table(stages, per_stage))
    return 0


async def show(db: Path | None, ref: str, as_json: bool) -> int:
    async with Store.open(db, readonly=True) as store:
        kind, ids = await store.resolve(ref)
        if kind == "batch":
            return await _show_batch(store, ref, ids, as_json)
        job = await store.job(ids[0])
        assert job is not None
        attempts = await store.attempts(job.id)
        history = await store.transitions(job.id)
        pin = await store.pin(job.batch_id, job.spec.image)
        stage = None
        if job.stage is not None:
            stage = next((s for s in await store.stages(job.batch_id) if s.name == job.stage), None)
    pulling = bool(attempts) and attempts[-1].pulling is not None and job.state is JobState.PENDING
    if as_json:
        doc = _job_json(job) | {
            "pulling": pulling,
            "image": {
                "name": job.spec.image,
                "digest": pin[0] if pin else None,
                "pinned": bool(pin and pin[0]),
                "note": pin[1] if pin else None,
            },
            "spec": json.loads(job.spec.to_json()),
            "attempts": [
                {
                    "n": a.n,
                    "service": a.service,
                    "mode": a.mode,
                    "image": a.image,
                    "node": a.node,
                    "outcome": a.outcome,
                    "exit_code": a.exit_code,
                    "error": a.error,
                    "created": a.created,
                    "started": a.started,
                    "ended": a.ended,
                }
                for a in attempts
            ],
            "transitions": [
                {
                    "state": t.state,
                    "at": t.at,
                    "source": t.source,
                    "detail": t.detail,
                    "attempt": t.attempt_id,
                }
                for t in history
            ],
        }
        print(json.dumps(doc, indent=2))
        return 0
    out.print(f"job {job.id}  {job.name}  (batch {job.batch_id})")
    out.print(f"  image     {job.spec.image} {' '.join(job.spec.command)}")
    if pin is not None:
        out.print(f"  digest    {pin[0]}" if pin[0] else f"  digest    none: {pin[1]}")
    if stage is not None:
        needs = "; ".join(
            f"{need} ({condition}{', inputs' if inputs else ''})"
            for need, condition, inputs in stage.needs
        )
        out.print(f"  stage     {stage.name}" + (f", needs {needs}" if needs else ""))
    code = "" if job.exit_code is None else f", exit {job.exit_code}"
    state = "pulling" if pulling else job.state.value
    out.print(f"  state     {state}{code}" + (f": {job.error}" if job.error else ""))
    out.print(f"  node      {job.node or '-'}")
    out.print(
        f"  created   {_when(job.created)}   started {_when(job.started)}"
        f"   finished {_when(job.finished)}"
    )
    for a in attempts:
        why = a.error or ("" if a.exit_code is None else f"exit {a.exit_code}")
        out.print(
            f"  attempt {a.n}: {a.service} on {a.node or '-'}: {a.outcome or a.phase}"
            + (f" ({why})" if why else "")
        )
    out.print("  history:")
    for t in history:
        out.print(f"    {_when(t.at)}  {t.state:<10} {t.source:<6} {t.detail or ''}")
    return 0


async def _batch_of(store: Store, ref: str) -> BatchRow:
    """The batch ``ref`` names (its id, a unique prefix, or one of its jobs is refused)."""
    found = await store.batch(ref)
    if found is not None:
        return found
    kind, ids = await store.resolve(ref)
    batch_id = (await store.jobs_by_id(ids[:1]))[0].batch_id if ids else None
    if kind != "batch" or batch_id is None:
        hint = f" (its batch is {batch_id})" if batch_id else ""
        raise StoreError(f"{ref!r} is a job, not a batch{hint}")
    found = await store.batch(batch_id)
    assert found is not None
    return found


def parse_cap(text: str) -> int | None:
    """A batch's cap as ``covey throttle`` takes it: a number of jobs (1 or more), or
    ``none`` (no cap of its own)."""
    if text.strip().lower() == "none":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise SpecError(f"throttle: {text!r} is not a number of jobs (1 or more, or 'none')")
    return n


async def throttle_batch(store: Store, ref: str, cap: int | None) -> str:
    """A batch's own cap on jobs at once, changed while it runs (``None``: no cap of its own).
    Running jobs are left alone; admissions wait until fewer than the cap run. Returns what
    was done, in words."""
    batch = await _batch_of(store, ref)
    await store.steer(batch.id, max_concurrent=cap, paused=None)
    was = "none" if batch.max_concurrent is None else str(batch.max_concurrent)
    now = "no cap of its own" if cap is None else f"at most {cap} job(s) at once"
    return f"batch {batch.id}: {now} (was {was})"


async def throttle(db: Path | None, ref: str, cap: int | None) -> int:
    async with Store.open(db) as store:
        message = await throttle_batch(store, ref, cap)
    print(message)
    return 0


async def pause_batch(store: Store, ref: str, paused: bool) -> str:
    """Stop (or restart) a batch's admissions; its running jobs are left alone."""
    batch = await _batch_of(store, ref)
    await store.steer(batch.id, paused=paused)
    return f"batch {batch.id}: {'paused' if paused else 'resumed'}"


async def pause(db: Path | None, ref: str, paused: bool) -> int:
    async with Store.open(db) as store:
        message = await pause_batch(store, ref, paused)
    print(message)
    return 0


async def logs(db: Path | None, ref: str, follow: bool, attempt_n: int | None) -> int:
    async with Store.open(db, readonly=True) as store:
        _, ids = await store.resolve(ref)
        if len(ids) != 1:
            raise StoreError(f"{ref!r} is a batch: give one job")
        job = await store.job(ids[0])
        assert job is not None
        n = attempt_n or job.attempts
        if n == 0:
            raise StoreError(f"job {job.id} has not started yet")
        attempt = await store.attempt(attempt_id(job.id, n))
        if attempt is None:
            raise StoreError(f"job {job.id} has no attempt {n}")
        written = {"stdout": 0, "stderr": 0}
        if follow and not attempt.logs_saved and attempt.engine_id:
            await _follow_engine(store, attempt.id, written)
            attempt = await store.attempt(attempt.id)
            assert attempt is not None
        records = await store.logs(attempt.id)
    for stream, sink in (("stdout", sys.stdout.buffer), ("stderr", sys.stderr.buffer)):
        rec = records.get(stream)
        if rec is not None:
            _write_rest(stream, sink, rec, written[stream])
    return 0


def _write_rest(stream: str, sink: BinaryIO, rec: LogRecord, written: int) -> None:
    """What of a stored stream is not written yet (``written`` bytes came from the engine),
    saying on stderr what the store does not hold: a cut head (``--log-cap``), or a tail
    the engine could not give."""
    head = rec.size - len(rec.data)  # bytes cut off the front when it was stored
    if written < head:
        done = "" if not written else f" after the {written} followed"
        print(
            f"covey: {stream}: {head - written} bytes{done} are not kept (the store holds the"
            f" last {len(rec.data)} of {rec.size} bytes: --log-cap)",
            file=sys.stderr,
        )
    sink.write(rec.data[max(0, written - head) :])
    sink.flush()
    if not rec.complete:
        print(f"covey: {stream} incomplete: the engine could not give all of it", file=sys.stderr)


async def _follow_engine(store: Store, attempt_id: str, written: dict[str, int]) -> None:
    """Follow the engine's stream until the store says the logs are saved."""
    attempt = await store.attempt(attempt_id)
    assert attempt is not None
    async with Engine() as engine:
        backend = await pick_backend(engine, store.id, "auto")
        async with anyio.create_task_group() as tg:

            async def copy() -> None:
                try:
                    async for kind, data in backend.follow_logs(attempt):
                        name, sink = (
                            ("stderr", sys.stderr.buffer)
                            if kind == 2
                            else ("stdout", sys.stdout.buffer)
                        )
                        sink.write(data)
                        sink.flush()
                        written[name] += len(data)
                except EngineError:
                    return

            tg.start_soon(copy)
            while True:  # a container's stream ends with it; the store has the rest
                current = await store.attempt(attempt_id)
                if current is None or current.logs_saved:
                    break
                await anyio.sleep(0.25)
            tg.cancel_scope.cancel()


BackendOpener = Callable[[Store], AbstractAsyncContextManager[Backend]]
"""Gives a backend for the store's engine while its context lasts (a cancel stops attempts)."""


@contextlib.asynccontextmanager
async def engine_backend(store: Store) -> AsyncIterator[Backend]:
    """The engine of ``DOCKER_HOST``, for as long as the caller needs it."""
    async with Engine() as engine:
        yield await pick_backend(engine, store.id, "auto")


async def cancel_refs(
    store: Store, refs: Sequence[str], backend: BackendOpener = engine_backend
) -> str:
    """Record the request first (no retry or late end can revive the job), then stop what
    runs. An attempt that had already ended on the engine is recorded as it ended: a job
    that exited 0 before the cancel reached it succeeded. Returns what was done, in words;
    the engine is asked only when an attempt of these jobs is in flight."""
    ids: list[str] = []
    batches: list[str] = []  # cancelled whole: a pipeline's later stages too
    for ref in refs:
        kind, found = await store.resolve(ref)
        ids += found
        if kind == "batch" and found:
            batches.append((await store.jobs_by_id(found[:1]))[0].batch_id)
    live = await store.request_cancel(ids, batches=batches)
    running = []
    for job in live:
        attempt = await store.attempt(attempt_id(job.id, job.attempts)) if job.attempts else None
        if attempt is not None and attempt.phase != "ended":
            running.append(attempt)
    if running:
        async with backend(store) as opened:
            seen = {s.attempt: s.observation for s in await opened.observe({})}
            for attempt in running:
                await _cancel_attempt(store, opened, attempt, seen.get(attempt.id))
    jobs = await store.jobs_by_id(ids)
    cancelled = sum(j.state is JobState.CANCELLED for j in jobs)
    if not ids:
        return "nothing to cancel"
    others = len(ids) - cancelled
    return f"cancelled {cancelled} job(s)" + (
        f"; {others} had ended or are ending on their own" if others else ""
    )


async def cancel(db: Path | None, refs: Sequence[str]) -> int:
    async with Store.open(db) as store:
        message = await cancel_refs(store, refs)
    print(message)
    return 0


async def _cancel_attempt(
    store: Store, backend: Backend, attempt: AttemptRow, seen: Observation | None
) -> None:
    if seen is not None and seen.ended:  # ended before the cancel reached it: as it ended
        outcome = seen.outcome or Outcome.LOST
        at = min(seen.at or time.time(), time.time())
        end = AttemptEnd(outcome, seen.exit_code, seen.error, None, at, "covey")
    else:
        await store.set_stop_reason(attempt.id, "cancel")
        # The engine id may not be noted yet (the store notes it lazily): act by name.
        with contextlib.suppress(NotFound):
            await backend.stop(attempt)
        end = AttemptEnd(Outcome.CANCELLED, None, "cancelled", None, time.time(), "covey")
    await save_logs(store, backend, attempt, 10.0, DEFAULT_LOG_CAP)
    await store.finish(attempt, end)
    if await remove_with_retry(backend, attempt):
        store.mark_removed(attempt.id)


async def retry_refs(store: Store, refs: Sequence[str]) -> str:
    """Queue the ended, unsuccessful jobs among ``refs`` again; what was done, in words."""
    done = await store.retry_jobs(await _targets(store, refs))
    return f"queued {len(done)} job(s) again"


async def retry(db: Path | None, refs: Sequence[str]) -> int:
    async with Store.open(db) as store:
        message = await retry_refs(store, refs)
    print(message)
    return 0


async def wait(db: Path | None, refs: Sequence[str], timeout: float | None) -> int:
    """Until every job ended. The store is read again only when another process committed
    (one ``PRAGMA data_version`` per look), and then only the jobs still open."""
    async with Store.open(db, readonly=True) as store:
        ids: list[str] = []
        batches: list[str] = []  # a pipeline's fan-out adds jobs to these while we wait
        for ref in refs:
            kind, found = await store.resolve(ref)
            ids += found
            if kind == "batch" and found:
                batches.append((await store.jobs_by_id(found[:1]))[0].batch_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        open_ids = set(ids)
        version: int | None = None
        warned = False
        next_check = 0.0
        while True:
            seen, version = version, await store.data_version()
            if seen != version:
                open_ids -= await store.terminal_among(sorted(open_ids))
                if not open_ids:
                    open_ids, unresolved = await _batches_open(store, batches, ids)
                    if not open_ids and not unresolved:
                        break
            now = time.monotonic()
            if not warned and now >= next_check:
                next_check = now + SERVED_CHECK
                warned = await _unserved(store, sorted(open_ids))
                if warned:
                    print(
                        f"covey: warning: no covey supervise is running on {store.path}, and"
                        " no other covey process holds these jobs: they wait until one is"
                        " started",
                        file=sys.stderr,
                    )
            if deadline is not None and time.monotonic() > deadline:
                print(f"covey: still not done after {timeout:g}s", file=sys.stderr)
                return 124
            await anyio.sleep(WAIT_POLL)
        jobs = await store.jobs_by_id(ids)
    bad = [j for j in jobs if j.state is not JobState.SUCCEEDED]
    for j in bad:
        print(
            f"covey: job {j.id} ({j.name}) {j.state.value}"
            + (f", exit {j.exit_code}" if j.exit_code is not None else ""),
            file=sys.stderr,
        )
    return 0 if not bad else 1


async def _batches_open(
    store: Store, batches: Sequence[str], ids: list[str]
) -> tuple[set[str], int]:
    """Jobs of ``batches`` not ended yet (added to ``ids``), and fan-outs not made yet."""
    open_ids: set[str] = set()
    unresolved = 0
    known = set(ids)
    for batch_id in batches:
        found, waiting = await store.batch_open(batch_id)
        open_ids.update(found)
        unresolved += waiting
        ids += [j for j in await store.batch_job_ids(batch_id) if j not in known]
        known.update(ids)
    return open_ids, unresolved


async def _unserved(store: Store, job_ids: Sequence[str]) -> bool:
    """No live process will move these jobs: no supervisor, and their batches' foreground
    holders (if any) are gone."""
    if await _supervisor(store) is not None:
        return False
    live = {h.id for h in await store.holders() if holding.alive(h)}
    held = await store.holders_of(job_ids)
    return not any(h in live for h in held)


async def prune(db: Path | None, older_than: float, *, jobs: bool) -> int:
    """Engine objects first (recording what ended unrecorded), then, with ``jobs``, the
    store's own history of jobs that ended longer ago than ``older_than``."""
    async with Store.open(db) as store:
        async with Engine() as engine:
            backend = await pick_backend(engine, store.id, "auto")
            report = await prune_objects(store, backend, older_than=older_than)
        await store.flush()
        for name in report.removed:
            print(name)
        if report.recorded:
            print(
                f"covey: recorded the end of {report.recorded} job(s) whose covey process is gone",
                file=sys.stderr,
            )
        if report.running:
            print(
                f"covey: {len(report.running)} job(s) of covey processes that are gone still"
                " run; `covey supervise` on this store adopts them: "
                + ", ".join(report.running[:5])
                + (" ..." if len(report.running) > 5 else ""),
                file=sys.stderr,
            )
        if jobs:
            deleted = await store.delete_finished(time.time() - older_than)
            before, after = await store.reclaim_space()
            print(
                f"covey: deleted {deleted} job(s) that ended more than {older_than:g}s ago;"
                f" the store went from {before} to {after} bytes",
                file=sys.stderr,
            )
    return 0


__all__ = ["result_of"]
