"""The store's methods for the loops that run jobs: the submitter begins attempts, the
tracker ends them and keeps their logs, and operators cancel and retry."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import cast

from covey.lifecycle import EndDecision
from covey.states import JobState
from covey.store import reads, writes
from covey.store.queries import Queries
from covey.store.reads import Scope
from covey.store.rows import AttemptRow, JobRow, JobSnapshot, attempt_id
from covey.store.writes import AttemptEnd, StreamLog

DEFAULT_LOG_CAP = 1024 * 1024


class _Bytes:
    """Plain bytes as a stream log, capped to their tail (callers that read everything)."""

    __slots__ = ("complete", "data", "size", "truncated")

    def __init__(self, data: bytes, cap: int) -> None:
        self.size = len(data)
        self.data, self.truncated = writes.cap_bytes(data, cap)
        self.complete = True


class Running(Queries):
    """Methods of :class:`~covey.store.handle.Store` for the submitter, the tracker, the
    reaper and operators (they read back through :class:`~covey.store.queries.Queries`)."""

    # -- the submitter ----------------------------------------------------------------

    async def due_jobs(
        self, now: float, limit: int, scope: Scope, held: Sequence[str] = ()
    ) -> list[JobRow]:
        """Due jobs, highest priority first, none of the ``held`` batches."""
        return await reads.due_jobs(self._read, now, limit, scope, held)

    async def next_due(self, scope: Scope) -> float | None:
        return await reads.next_due(self._read, scope)

    async def begin_attempt(self, job: JobRow, mode: str) -> AttemptRow | None:
        """Record the attempt (and its fixed name) before anything is created on the engine.

        ``None`` when the job is no longer due as read (cancelled, or taken meanwhile): the
        submitter reads due jobs ahead, so the row it holds may be stale.
        """
        n = job.attempts + 1
        custom = job.service_base != f"covey-{job.id}"  # --name: the name itself, first time
        service = job.service_base if n == 1 and custom else f"{job.service_base}-{n}"
        attempt = AttemptRow(attempt_id(job.id, n), job.id, n, service, mode, created=time.time())
        begun = await self._txn(lambda tx: writes.begin_attempt(tx, attempt, job.attempts))
        return attempt if begun else None

    def attempt_created(self, attempt: str, engine_id: str, image: str | None = None) -> None:
        """Note the engine's id and the image reference it runs (deferred: reconcile finds
        an unnoted service by its name)."""
        self._later(lambda tx: writes.attempt_created(tx, attempt, engine_id, image))

    def attempt_pulling(self, attempt: str, since: float | None) -> None:
        """Note that its node pulls the image (since when, wall clock), or no longer does."""
        self._later(lambda tx: writes.attempt_pulling(tx, attempt, since))

    async def pin(self, batch_id: str, image: str) -> tuple[str | None, str | None] | None:
        """The batch's pin of an image, ``(digest, note)``; ``None`` if not resolved yet."""
        return await reads.pin(self._read, batch_id, image)

    async def save_pin(
        self, batch_id: str, image: str, digest: str | None, note: str | None
    ) -> tuple[str | None, str | None]:
        """Keep the batch's pin of an image; returns the one kept (the first saved wins)."""
        now = time.time()
        saved: tuple[str | None, str | None] = await self._txn(
            lambda tx: writes.save_pin(tx, batch_id, image, digest, note, now)
        )
        return saved

    async def pulling_jobs(self, job_ids: Sequence[str]) -> set[str]:
        """Of these jobs, those whose node is pulling the image of their attempt now."""
        return await reads.pulling_jobs(self._read, job_ids)

    # -- shared outputs (covey.sharer) ---------------------------------------------------

    def note_output(self, attempt: str, batch_id: str, config_id: str) -> None:
        """Deferred: a shared output not noted is made again (or the job makes its own)."""
        self._later(lambda tx: writes.note_output(tx, attempt, batch_id, config_id))

    async def forget_outputs(self, attempts: Sequence[str]) -> None:
        await self._txn(lambda tx: writes.forget_outputs(tx, attempts))

    # -- the tracker ------------------------------------------------------------------

    def attempt_running(
        self, attempt: str, job_id: str, node: str | None, at: float, source: str
    ) -> None:
        """Note the start (deferred: a crash loses at most this note, and reconcile's first
        listing says it again)."""
        self._later(lambda tx: writes.attempt_running(tx, attempt, job_id, node, at, source))

    async def set_stop_reason(self, attempt: str, reason: str) -> None:
        await self._txn(lambda tx: writes.set_stop_reason(tx, attempt, reason))

    async def finish(self, attempt: AttemptRow, end: AttemptEnd) -> EndDecision | None:
        """Record the end of an attempt and what it means for the job, exactly once;
        ``None`` if it was recorded before."""
        done = await self._txn(lambda tx: writes.finish(tx, attempt, end))
        if done is None:
            return None
        decision, gated = done
        self._gated(gated)
        return cast(EndDecision, decision)

    async def save_logs(
        self,
        attempt: str,
        stdout: bytes | StreamLog,
        stderr: bytes | StreamLog,
        cap: int = DEFAULT_LOG_CAP,
        *,
        snapshot: str | None = None,
    ) -> JobSnapshot | None:
        """Store an attempt's logs (bytes are capped to their tail here; a stream log read
        with its cap applied is stored as it is). With ``snapshot`` (a job id), the job and
        its latest logs are read back once committed: what a result needs."""
        streams = [
            (name, _Bytes(value, cap) if isinstance(value, bytes) else value)
            for name, value in (("stdout", stdout), ("stderr", stderr))
        ]
        self._gated(await self._txn(lambda tx: writes.keep_logs(tx, attempt, streams)))
        return await self.job_with_logs(snapshot) if snapshot else None

    def mark_removed(self, attempt: str) -> None:
        """Deferred: if a crash loses it, reconcile removes again (the engine says not found)."""
        self._later(lambda tx: writes.mark_removed(tx, attempt))

    async def open_attempts(self, scope: Scope | None) -> list[AttemptRow]:
        """Attempts not yet cleaned up (ended or not); ``None``: whoever owns their batch."""
        return await reads.open_attempts(self._read, scope)

    async def open_attempts_all(self) -> list[AttemptRow]:
        return await reads.open_attempts(self._read, None)

    async def fail_job(
        self, job: JobRow, state: JobState, error: str, source: str = "covey"
    ) -> bool:
        """End a job that never got an attempt (e.g. it can never fit on any node)."""
        ended, gated = await self._txn(lambda tx: writes.fail_job(tx, job.id, state, error, source))
        self._gated(gated)
        return bool(ended)

    # -- operators --------------------------------------------------------------------

    async def request_cancel(
        self, job_ids: Iterable[str], *, batches: Sequence[str] = ()
    ) -> list[JobRow]:
        """Mark jobs (and whole ``batches``, fan-outs to come included) cancelled-on-request;
        queued, retrying and waiting ones end at once; returns the ones still in flight (an
        attempt to stop)."""
        ids = list(job_ids)
        asked, gated = await self._txn(
            lambda tx: writes.request_cancel(tx, ids, time.time(), batches)
        )
        self._gated(gated)
        return [j for j in await self.jobs_by_id(asked) if not j.state.terminal]

    async def retry_jobs(self, job_ids: Iterable[str]) -> list[str]:
        ids = list(job_ids)
        done, gated = await self._txn(lambda tx: writes.retry_jobs(tx, ids, time.time()))
        self._gated(gated)
        return list(done)
