"""The store's reads: what commands, the dashboard's pages and the timeline ask for."""

from __future__ import annotations

from collections.abc import Sequence

from covey.store import gate, pages, reads
from covey.store.facade import Facade
from covey.store.pages import JobLine
from covey.store.reads import Scope
from covey.store.rows import (
    AttemptRow,
    BatchRow,
    JobRow,
    JobSnapshot,
    LogRecord,
    StageRow,
    Transition,
)
from covey.store.timeline import BatchTimeline, batch_timeline


class Queries(Facade):
    """Read-only methods of :class:`~covey.store.handle.Store`."""

    # -- the web dashboard (covey.dashboard): pages of rows, never a whole table -----

    async def batch_page(self, limit: int, offset: int) -> tuple[list[BatchRow], int]:
        """Newest batches first, one page; and how many batches the store has."""
        return await pages.batch_page(self._read, limit, offset)

    async def batch_counts(self, batch_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Per batch, its jobs per state."""
        return await pages.batch_counts(self._read, batch_ids)

    async def job_lines(
        self,
        batch_id: str,
        *,
        states: Sequence[str] = (),
        name: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[JobLine]:
        """One page of a batch's jobs (no specs read), filtered by state and part of a name."""
        return await pages.job_lines(
            self._read, batch_id, states=states, name=name, limit=limit, offset=offset
        )

    async def count_jobs(
        self, batch_id: str, *, states: Sequence[str] = (), name: str | None = None
    ) -> int:
        return await pages.count_jobs(self._read, batch_id, states=states, name=name)

    # -- reads ------------------------------------------------------------------------

    async def batch(self, batch_id: str) -> BatchRow | None:
        return await reads.batch(self._read, batch_id)

    async def batches(self, limit: int = 50) -> list[BatchRow]:
        return await reads.batches(self._read, limit)

    async def batch_open(self, batch_id: str) -> tuple[list[str], int]:
        return await reads.batch_open(self._read, batch_id)

    async def batch_job_ids(self, batch_id: str) -> list[str]:
        return await reads.batch_job_ids(self._read, batch_id)

    async def inputs_for(self, job: JobRow) -> list[tuple[str, bytes, tuple[str, str] | None]]:
        return await reads.inputs_for(self._read, job)

    async def outputs_of(self, batch_id: str) -> list[tuple[str, str]]:
        return await reads.outputs_of(self._read, batch_id)

    async def batch_finished(self, batch_id: str) -> bool:
        return await gate.finished(self._read, batch_id)

    async def stage_counts(self, batch_id: str) -> dict[str, dict[str, int]]:
        return await reads.stage_counts(self._read, batch_id)

    async def stages(self, batch_id: str) -> list[StageRow]:
        return await reads.stages(self._read, batch_id)

    async def job(self, job_id: str) -> JobRow | None:
        return await reads.job(self._read, job_id)

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        return await reads.cancel_requested(self._read, job_ids)

    async def jobs_by_id(self, ids: Sequence[str]) -> list[JobRow]:
        return await reads.jobs_by_id(self._read, ids)

    async def ended_since(self, scope: Scope, since: float) -> list[str]:
        return await reads.ended_since(self._read, scope, since)

    async def terminal_among(self, ids: Sequence[str]) -> set[str]:
        return await reads.terminal_among(self._read, ids)

    async def jobs(
        self,
        *,
        batch_id: str | None = None,
        states: Sequence[str] = (),
        name: str | None = None,
        limit: int | None = None,
    ) -> list[JobRow]:
        return await reads.jobs(
            self._read, batch_id=batch_id, states=states, name=name, limit=limit
        )

    async def attempts(self, job_id: str) -> list[AttemptRow]:
        return await reads.attempts(self._read, job_id)

    async def attempt(self, ident: str) -> AttemptRow | None:
        return await reads.attempt(self._read, ident)

    async def transitions(self, job_id: str) -> list[Transition]:
        return await reads.transitions(self._read, job_id)

    async def logs(self, attempt: str) -> dict[str, LogRecord]:
        return await reads.logs(self._read, attempt)

    async def job_with_logs(self, job_id: str) -> JobSnapshot | None:
        return await reads.job_with_logs(self._read, job_id)

    async def counts(self, batch_id: str | None = None) -> dict[str, int]:
        return await reads.counts(self._read, batch_id)

    async def resolve(self, ref: str) -> tuple[str, list[str]]:
        return await reads.resolve(self._read, ref, self.path)

    async def timeline(self, batch_id: str) -> BatchTimeline | None:
        """Every attempt of the batch (an id, or a batch's name: its latest) with its times,
        and its jobs' waits (``covey timeline``); ``None``: no such batch."""
        return await batch_timeline(self._read, batch_id)
