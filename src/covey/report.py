"""What a person sees: a live progress bar for batches and a summary at the end."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from covey.results import JobResult
from covey.states import JobState


class BatchProgress:
    """A rich progress bar with counts per state and throughput (stderr, only on a terminal)."""

    def __init__(self, total: int, console: Console, enabled: bool = True) -> None:
        self.total = total
        self.counts: Counter[str] = Counter()
        self.started = time.monotonic()
        self.enabled = enabled and console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]covey[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task("batch", total=total, detail="")

    def __enter__(self) -> BatchProgress:
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._progress.stop()

    def update(self, done: int, running: int, pending: int, total: int | None = None) -> None:
        """``total``: the batch's size now (a fan-out decided at run time adds to it)."""
        if not self.enabled:
            return
        if total is not None and total != self.total:
            self.total = total
            self._progress.update(self._task, total=total)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        parts = [f"{running} running", f"{pending} waiting"]
        parts += [f"{n} {state}" for state, n in sorted(self.counts.items())]
        parts.append(f"{done / elapsed:.1f} jobs/s")
        self._progress.update(self._task, completed=done, detail=" · ".join(parts))

    def finished(self, result: JobResult) -> None:
        self.counts[result.state.value] += 1


def summary(results: Sequence[JobResult], wall: float, console: Console, slowest: int = 5) -> None:
    """Counts, retries, wall time and the slowest jobs, for a person."""
    by_state = Counter(r.state for r in results)
    retried = sum(1 for r in results if r.attempts > 1)
    ok = by_state[JobState.SUCCEEDED]
    rate = len(results) / wall if wall > 0 else 0.0
    line = (
        f"{len(results)} jobs in {wall:.1f}s ({rate:.1f}/s): {ok} succeeded, "
        f"{by_state[JobState.FAILED]} failed, {by_state[JobState.TIMED_OUT]} timed out"
    )
    others = [
        f"{n} {s.value}"
        for s, n in by_state.items()
        if s not in (JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT)
    ]
    if others:
        line += ", " + ", ".join(others)
    if retried:
        line += f"; {retried} retried"
    console.print(line, highlight=False)
    _cut_logs(results, console)
    timed = sorted((r for r in results if r.duration is not None), key=lambda r: -(r.duration or 0))
    failed = [r for r in results if not r.ok]
    if failed:
        table = Table(
            "job", "name", "state", "exit", "error", title="not succeeded", title_justify="left"
        )
        for r in failed[:20]:
            table.add_row(r.id, r.name, r.state.value, str(r.exit_code), (r.error or "")[:80])
        console.print(table)
    if timed and slowest:
        table = Table("job", "name", "seconds", "node", title="slowest", title_justify="left")
        for r in timed[:slowest]:
            table.add_row(r.id, r.name, f"{r.duration:.2f}", r.node or "")
        console.print(table)


def _cut_logs(results: Sequence[JobResult], console: Console, shown: int = 10) -> None:
    """Name the jobs whose stored logs are not all they wrote: a result must not look whole
    when it is not (``covey logs JOB`` shows what was kept)."""
    for what, cut in (
        ("logs cut to their last --log-cap bytes", [r for r in results if r.logs_truncated]),
        (
            "logs incomplete (the engine could not give all of them)",
            [r for r in results if not r.logs_complete and not r.logs_truncated],
        ),
    ):
        if cut:
            names = ", ".join(r.id for r in cut[:shown]) + (" …" if len(cut) > shown else "")
            console.print(f"{len(cut)} job(s) with {what}: {names}", highlight=False)
