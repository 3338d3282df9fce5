"""The async Python API: ``async with covey.Client() as c: result = await c.run(spec)``.

A :class:`Client` opens the engine and the store, decides swarm or container mode, and runs
one orchestrator (submitter, tracker, reaper) in a background task group for the jobs it
is given. ``submit`` only queues work for a ``covey supervise`` process.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Literal

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from covey import supervisor
from covey.backend import Backend, ContainerBackend, SwarmBackend
from covey.context import Context, Options
from covey.engine import Engine
from covey.errors import EngineError, SpecError, StoreError
from covey.flags import image_problem
from covey.holders import HEARTBEAT
from covey.images import Pin, resolve_all
from covey.pipeline import Pipeline, validate
from covey.results import JobResult, result_from
from covey.retrying import retry
from covey.spec import JobSpec
from covey.store import JobSnapshot, Scope, Store

log = logging.getLogger("covey")
UNHOLD_PATIENCE = 10.0  # a locked store must not keep an exiting process: the supervisor
# finds a holder that is gone anyway
Mode = Literal["auto", "swarm", "container"]
SETTLE_GRACE = 10.0
BATCH_LOOK = 1.0  # a batch waited for asks the store this often when no news came


async def pick_backend(engine: Engine, store_id: str, mode: Mode) -> Backend:
    """Swarm when the engine is a swarm manager (or asked for), else container mode."""
    info = await engine.info()
    if mode == "swarm" and not info.swarm_manager:
        raise EngineError(
            f"--mode swarm: the engine {info.name or ''} is not a swarm manager "
            "(run `docker swarm init`, or use --mode container)"
        )
    if mode == "swarm" or (mode == "auto" and info.swarm_manager):
        return SwarmBackend(engine, store_id)
    return ContainerBackend(engine, store_id)


Jobs = Sequence[JobSpec] | Pipeline
"""What a batch is made of: independent jobs, or a :class:`~covey.pipeline.Pipeline`."""


def _specs(jobs: Jobs) -> list[JobSpec]:
    """Every spec of a batch (a fan-out's template included)."""
    if isinstance(jobs, Pipeline):
        return [spec for stage in jobs.stages for spec in stage.specs]
    return list(jobs)


def _check(jobs: Jobs) -> None:
    """The docker reference grammar and the pipeline's graph, before anything is stored."""
    if isinstance(jobs, Pipeline):
        validate(jobs)
    specs = _specs(jobs)
    if not specs:
        raise SpecError("no jobs to run")
    for n, spec in enumerate(specs):
        problem = image_problem(spec.image)
        if problem is not None:
            raise SpecError(
                f"jobs[{n}].image: {spec.image!r} is not a valid image reference: {problem}"
            )


async def _heartbeat(store: Store, holder: str) -> None:
    """Say now and then that this process still holds its batches (see covey.holders)."""
    while True:
        await anyio.sleep(HEARTBEAT)
        try:
            await store.heartbeat(holder)
        except StoreError as exc:  # a store locked past our patience: say so, keep running
            log.warning("could not note that this process still holds its jobs: %s", exc)


class Client:
    """Run jobs on the engine named by ``docker_host`` (default: ``DOCKER_HOST``)."""

    def __init__(
        self,
        docker_host: str | None = None,
        *,
        db: str | Path | None = None,
        mode: Mode = "auto",
        options: Options | None = None,
    ) -> None:
        self.docker_host = docker_host
        self.db = db
        self.mode = mode
        self.options = options or Options()
        self._stack = AsyncExitStack()
        self._batches: list[str] = []
        self._done: dict[str, anyio.Event] = {}
        # map()s waiting for settled jobs: (job id, the job and its logs as the reaper left them)
        self._listeners: list[Callable[[tuple[str, JobSnapshot | None]], None]] = []
        self._ctx: Context | None = None
        self._tg: TaskGroup | None = None
        self._holder: str | None = None  # this process, as the owner of its batches
        self.engine: Engine | None = None
        self.store: Store | None = None

    async def __aenter__(self) -> Client:
        try:
            # a supervisor waits out another process's long write lock; a command gives up
            patience = None if self.options.supervise else 60.0
            self.store = await self._stack.enter_async_context(
                Store.open(self.db, lock_patience=patience)
            )
            if self.options.supervise:
                # started while dockerd restarts (a service manager restarting it after a
                # crash, say): wait for the engine, as a running supervisor does
                self.engine, self.backend = await retry(
                    self._connect,
                    what="the Docker engine",
                    give_up_after=self.options.engine_timeout,
                    on_retry=lambda exc: log.warning("waiting for the Docker engine: %s", exc),
                )
            else:
                self.engine, self.backend = await self._connect()
            # Entered here, not at the first start(): a task group entered inside the caller's
            # own cancel scope (``with fail_after(): await c.run()``) and left in __aexit__
            # corrupts anyio's cancel-scope stack.
            self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _connect(self) -> tuple[Engine, Backend]:
        """The engine and the backend it calls for; nothing left open if either fails."""
        assert self.store is not None
        engine = Engine(self.docker_host)
        await engine.open()
        try:
            backend = await pick_backend(engine, self.store.id, self.mode)
        except BaseException:
            await engine.close()
            raise
        self._stack.push_async_callback(engine.close)
        return engine, backend

    async def __aexit__(self, *exc: object) -> None:
        if self._ctx is not None and exc[0] is None:
            # let attempts that already ended finish their clean-up (logs, removal), and the
            # sharer remove the outputs its batches shared (covey.sharer)
            ctx = self._ctx
            with anyio.move_on_after(SETTLE_GRACE):
                while ctx.sharing or any(live.ended for live in ctx.live.values()):
                    await anyio.sleep(0.05)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        try:
            if self._holder is not None and self.store is not None:
                # what is left unfinished goes to the queue: a supervisor adopts it
                with anyio.CancelScope(shield=True), anyio.move_on_after(UNHOLD_PATIENCE):
                    await self.store.unhold(self._holder)
        finally:
            await self._stack.aclose()

    @property
    def has_started(self) -> bool:
        """Whether this client runs an orchestrator yet (its first batch was started)."""
        return self._ctx is not None

    @property
    def batches(self) -> list[str]:
        """The batches this client has started, in order."""
        return list(self._batches)

    @property
    def context(self) -> Context:
        if self._ctx is None:
            raise RuntimeError("the client has not started any job")
        return self._ctx

    async def _start(self) -> Context:
        if self._ctx is None:
            assert self.store is not None
            holder, _ = await self.store.hold("run")
            self._holder = holder.id
            self._ctx = Context(
                self.store,
                self.backend,
                self.options,
                Scope(()),
                on_settled=self._settled,
                on_outside_change=self._outside_change,
            )
            assert self._tg is not None
            await self._tg.start(supervisor.run, self._ctx)
            self._tg.start_soon(_heartbeat, self.store, holder.id)
        return self._ctx

    async def _outside_change(self, since: float) -> None:
        """Another process committed (``covey cancel`` from another shell, a prune): jobs
        of ours it ended without an attempt of ours in flight are settled here, or
        ``wait``/``map`` would wait for a reaper that has nothing to reap."""
        ctx = self.context
        for job_id in await ctx.store.ended_since(ctx.scope, since):
            if ctx.live_for_job(job_id) is None:
                self._settled(job_id, None)

    def _settled(self, job_id: str, snapshot: JobSnapshot | None) -> None:
        event = self._done.get(job_id)
        if event is not None:
            event.set()
        for listener in self._listeners:
            listener((job_id, snapshot))

    async def start(
        self,
        specs: Jobs,
        *,
        name: str | None = None,
        service_names: Sequence[str | None] | None = None,
    ) -> tuple[str, list[str]]:
        """Queue a batch for this client's orchestrator and return at once: its id and the
        ids of the jobs known now (a fan-out over another job's output adds more later)."""
        _check(specs)
        ctx = await self._start()
        pins = await self._pins(specs)
        batch_id, job_ids, _ = await ctx.store.create_batch(
            specs,
            name=name,
            owner="run",
            holder=self._holder,
            service_names=service_names,
            pins=[(p.image, p.digest, p.note) for p in pins],
        )
        self._batches.append(batch_id)
        ctx.scope = Scope(tuple(self._batches))
        ctx.new_work = True
        ctx.work.set()
        return batch_id, job_ids

    async def _pins(self, specs: Jobs) -> list[Pin]:
        """Every image of the batch pinned before it is stored (swarm mode): an image no
        node can pull fails here, with nothing stored or created (covey.images)."""
        if self.backend.mode != "swarm":
            return []
        assert self.engine is not None
        specs = _specs(specs)
        if all(not s.resolve_image or "@" in s.image for s in specs):
            return await resolve_all(self.engine, specs, 1)  # no registry to ask
        ctx = self.context
        if not ctx.governor.nodes:
            await ctx.refresh_nodes(force=True)
        return await resolve_all(self.engine, specs, len(ctx.governor.nodes))

    async def wait(self, job_id: str) -> JobResult:
        """The job's result once it ended for good and its logs are safe."""
        ctx = await self._start()
        event = self._done.setdefault(job_id, anyio.Event())
        while True:
            found = await ctx.store.job_with_logs(job_id)
            if found is None:
                raise SpecError(f"no job {job_id}")
            if found.job.state.terminal and ctx.live_for_job(job_id) is None:
                self._done.pop(job_id, None)
                return result_from(found.job, found.logs)
            await event.wait()
            self._done[job_id] = event = anyio.Event()

    async def run(self, spec: JobSpec) -> JobResult:
        """Run one job to its end."""
        _, (job_id,) = await self.start([spec])
        return await self.wait(job_id)

    async def map(self, specs: Sequence[JobSpec]) -> AsyncIterator[JobResult]:
        """Run many jobs; yield results as they finish.

        One loop over the ids of settled jobs, not a task and an event per job: with 10,000
        jobs that is the difference between about 6 and 25 KB of memory per job.
        """
        send, receive = anyio.create_memory_object_stream[tuple[str, JobSnapshot | None]](math.inf)
        self._listeners.append(send.send_nowait)
        try:
            _, job_ids = await self.start(list(specs))
            ctx = self.context
            pending = set(job_ids)
            while pending:
                job_id, snapshot = await receive.receive()
                if job_id not in pending or ctx.live_for_job(job_id) is not None:
                    continue  # not ours, or an attempt ended and a retry follows
                if snapshot is None:  # settled without logs read just now (e.g. rejected)
                    snapshot = await ctx.store.job_with_logs(job_id)
                    if snapshot is None:
                        raise SpecError(f"no job {job_id}")
                if not snapshot.job.state.terminal:
                    continue
                pending.discard(job_id)
                yield result_from(snapshot.job, snapshot.logs)
        finally:
            self._listeners.remove(send.send_nowait)  # before closing: no send after close
            send.close()
            receive.close()

    async def run_batch(self, jobs: Jobs, *, name: str | None = None) -> AsyncIterator[JobResult]:
        """Run a batch (a :class:`~covey.pipeline.Pipeline` or independent jobs) here, and
        yield each job's result as it ends for good: skipped ones too, and the instances of
        a fan-out decided at run time. Ends when every job of the batch has ended."""
        send, receive = anyio.create_memory_object_stream[tuple[str, JobSnapshot | None]](math.inf)
        self._listeners.append(send.send_nowait)
        try:
            batch_id, job_ids = await self.start(jobs, name=name)
            async for result in self._batch_results(batch_id, job_ids, receive):
                yield result
        finally:
            self._listeners.remove(send.send_nowait)
            send.close()
            receive.close()

    async def _batch_results(
        self,
        batch_id: str,
        job_ids: Sequence[str],
        receive: MemoryObjectReceiveStream[tuple[str, JobSnapshot | None]],
    ) -> AsyncIterator[JobResult]:
        """Results of one batch as its jobs settle. News comes from the orchestrator (ends,
        skips, fan-outs); what it cannot tell (a cancel from another shell) comes from the
        store, which is also asked before the batch is called finished."""
        ctx = self.context
        store = ctx.store
        pending = set(job_ids)
        yielded: set[str] = set()
        while True:
            if not pending:
                open_ids, unresolved = await store.batch_open(batch_id)
                settling = {v.job.id for v in ctx.live.values() if v.job.batch_id == batch_id}
                pending = {j for j in [*open_ids, *settling] if j not in yielded}
                if not pending and not unresolved:
                    for job_id in await store.batch_job_ids(batch_id):
                        if job_id not in yielded:  # ended without news reaching us
                            found = await store.job_with_logs(job_id)
                            if found is not None:
                                yielded.add(job_id)
                                yield result_from(found.job, found.logs)
                    return
            with anyio.move_on_after(BATCH_LOOK):
                job_id, snapshot = await receive.receive()
                if job_id in yielded or ctx.live_for_job(job_id) is not None:
                    continue
                if snapshot is None or snapshot.job.batch_id != batch_id:
                    snapshot = await store.job_with_logs(job_id)
                if snapshot is None or snapshot.job.batch_id != batch_id:
                    continue
                if not snapshot.job.state.terminal:
                    pending.add(job_id)  # a new instance of a fan-out
                    continue
                pending.discard(job_id)
                yielded.add(job_id)
                yield result_from(snapshot.job, snapshot.logs)
                continue
            pending.clear()  # nothing heard for a while: ask the store

    async def submit(
        self,
        specs: Jobs,
        *,
        idempotency_key: str | None = None,
        name: str | None = None,
    ) -> tuple[str, list[str]]:
        """Queue jobs (or a pipeline) for ``covey supervise``; returns (batch id, the ids of
        the jobs known now) at once."""
        assert self.store is not None
        _check(specs)
        batch_id, job_ids, _ = await self.store.create_batch(
            specs, name=name, idempotency_key=idempotency_key
        )
        return batch_id, job_ids
