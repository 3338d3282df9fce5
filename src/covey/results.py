"""Typed results handed to programs and printed by the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from covey.states import JobState
from covey.store import JobRow, LogRecord, Store


@dataclass(frozen=True, slots=True)
class JobResult:
    """Where a job ended, with its logs: what ``Client.run`` and ``Client.map`` return."""

    id: str
    batch: str
    name: str
    index: int | None
    state: JobState
    exit_code: int | None
    error: str | None
    node: str | None
    attempts: int
    created: float
    started: float | None
    finished: float | None
    stdout: bytes = b""
    stderr: bytes = b""
    # the stored logs keep only the tail of a stream (the log cap)
    logs_truncated: bool = False
    # false when ``stdout``/``stderr`` are not all the job wrote: cut by the cap, or the
    # engine could not give all of it; a result never looks whole when it is not
    logs_complete: bool = True
    stage: str | None = None  # its stage, in a pipeline

    @property
    def ok(self) -> bool:
        return self.state is JobState.SUCCEEDED

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started

    def to_json(self, *, logs: bool = False) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["duration"] = self.duration
        stdout, stderr = data.pop("stdout"), data.pop("stderr")
        if logs:
            data["stdout"] = stdout.decode(errors="replace")
            data["stderr"] = stderr.decode(errors="replace")
        return data


async def result_of(store: Store, job: JobRow, *, logs: bool = True) -> JobResult:
    """Build a result from the store (logs of the job's latest attempt)."""
    records = await store.logs(f"{job.id}-{job.attempts}") if logs and job.attempts else {}
    return result_from(job, records)


def result_from(job: JobRow, records: Mapping[str, LogRecord]) -> JobResult:
    """A result from a job row and its latest attempt's logs (``Store.job_with_logs``)."""
    stdout = records["stdout"].data if "stdout" in records else b""
    stderr = records["stderr"].data if "stderr" in records else b""
    truncated = any(r.truncated for r in records.values())
    read_whole = all(r.complete for r in records.values())
    return JobResult(
        id=job.id,
        batch=job.batch_id,
        name=job.name,
        index=job.spec.index,
        state=job.state,
        exit_code=job.exit_code,
        error=job.error,
        node=job.node,
        attempts=job.attempts,
        created=job.created,
        started=job.started,
        finished=job.finished,
        stdout=stdout,
        stderr=stderr,
        logs_truncated=truncated,
        logs_complete=read_whole and not truncated,
        stage=job.stage,
    )
