"""The audit after the soak: the store's record against the jobs' own side effects.

Every job appends ``NAME SERVICE CONTAINER`` to a bind-mounted file as its first act, so the
file says which attempt (the service covey made for it) ran, and in which container, whatever
covey recorded. The store is only read (``mode=ro``).
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINAL = frozenset({"succeeded", "failed", "timed_out", "rejected", "lost", "cancelled"})
LOST_RETRIES = 3  # covey's default retry.lost_retries
FAIL_EXIT = 3  # what the soak's failing jobs exit with
KINDS = {"ok": ("succeeded", 0), "flaky": ("succeeded", 0), "fail": ("failed", FAIL_EXIT)}
RETRIED_KINDS = frozenset({"flaky", "fail"})  # the ones with retry: {attempts: 2}


@dataclass(frozen=True, slots=True)
class Cancel:
    """One ``covey cancel JOB`` the soak ran: wall-clock times around it, and its result."""

    job_id: str
    started: float
    returned: float
    code: int
    output: str


@dataclass(slots=True)
class Verdict:
    violations: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    states: Counter[str] = field(default_factory=Counter)

    def bad(self, what: str) -> None:
        self.violations.append(what)


Row = dict[str, Any]


def read_store(db: Path) -> tuple[list[Row], dict[str, list[Row]], dict[str, list[Row]]]:
    """Jobs; attempts and transitions by job id (in order)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        jobs = [dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY batch_id, seq")]
        attempts: dict[str, list[Row]] = defaultdict(list)
        for r in conn.execute("SELECT * FROM attempts ORDER BY job_id, n"):
            attempts[r["job_id"]].append(dict(r))
        transitions: dict[str, list[Row]] = defaultdict(list)
        for r in conn.execute("SELECT * FROM transitions ORDER BY id"):
            transitions[r["job_id"]].append(dict(r))
    return jobs, attempts, transitions


def read_runs(path: Path, verdict: Verdict) -> dict[str, list[tuple[str, str]]]:
    """Side-effect lines by service name: ``[(job name, container), ...]``."""
    runs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    text = path.read_text() if path.exists() else ""
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if len(parts) != 3:
            verdict.bad(f"runs.log:{number}: malformed side-effect line {line!r}")
            continue
        name, service, container = parts
        runs[service].append((name, container))
    verdict.counts["side-effect lines"] = sum(len(v) for v in runs.values())
    return runs


def audit(db: Path, runs_log: Path, kinds: Mapping[str, str], cancels: Sequence[Cancel]) -> Verdict:
    """Check every job of the store; ``kinds`` maps each job name the soak submitted to its kind."""
    verdict = Verdict()
    jobs, attempts, transitions = read_store(db)
    runs = read_runs(runs_log, verdict)
    by_job: dict[str, list[Cancel]] = defaultdict(list)
    for c in cancels:
        by_job[c.job_id].append(c)
    names = Counter(j["name"] for j in jobs)
    if sorted(names) != sorted(kinds) or max(names.values(), default=1) != 1:
        verdict.bad(f"the store holds jobs {dict(names)}, the soak submitted {len(kinds)}")
    known_services: set[str] = set()
    for job in jobs:
        verdict.states[job["state"]] += 1
        job_attempts = attempts.get(job["id"], [])
        known_services.update(a["service"] for a in job_attempts)
        kind = kinds.get(job["name"], "?")
        _check_job(verdict, job, kind, job_attempts, transitions.get(job["id"], []), runs)
        _check_cancels(verdict, job, kind, job_attempts, by_job.get(job["id"], []))
    for service in sorted(set(runs) - known_services):
        verdict.bad(f"containers ran for service {service}, which is no attempt: {runs[service]}")
    verdict.counts["jobs"] = len(jobs)
    return verdict


def _check_job(
    verdict: Verdict,
    job: Row,
    kind: str,
    job_attempts: list[Row],
    history: list[Row],
    runs: Mapping[str, list[tuple[str, str]]],
) -> None:
    name = f"job {job['name']} ({job['id']})"
    if job["state"] not in TERMINAL:
        verdict.bad(
            f"{name} is {job['state']}, not terminal (cancel_requested={job['cancel_requested']})"
        )
    finals = [t["state"] for t in history if t["state"] in TERMINAL]
    if finals != [job["state"]]:
        verdict.bad(f"{name}: terminal transitions {finals}, job state {job['state']}")
    elif history[-1]["state"] not in TERMINAL:
        later = [(t["state"], t["source"]) for t in history[history.index(_last_final(history)) :]]
        verdict.bad(f"{name}: transitions after its terminal one: {later}")
    if [a["n"] for a in job_attempts] != list(range(1, job["attempts"] + 1)):
        verdict.bad(
            f"{name}: attempts {[a['n'] for a in job_attempts]}, job says {job['attempts']}"
        )
    ran: list[Row] = []
    for a in job_attempts:
        verdict.counts["attempts"] += 1
        lines = runs.get(a["service"], [])
        if (a["phase"], a["removed"], a["logs_saved"]) != ("ended", 1, 1):
            verdict.bad(
                f"{name}: attempt {a['n']} left phase={a['phase']} removed={a['removed']}"
                f" logs_saved={a['logs_saved']}"
            )
        if any(n != job["name"] for n, _ in lines):
            verdict.bad(f"{name}: service {a['service']} ran another job's command: {lines}")
        if len(lines) > 1:
            verdict.bad(
                f"{name}: attempt {a['n']} ({a['service']}) ran {len(lines)} times: {lines}"
            )
            verdict.counts["duplicates"] += len(lines) - 1
        ran_for_sure = a["outcome"] == "succeeded" or (
            a["outcome"] == "failed" and a["exit_code"] == FAIL_EXIT
        )
        if ran_for_sure and not lines:
            verdict.bad(f"{name}: attempt {a['n']} recorded {a['outcome']} but left no side effect")
        if a["outcome"] == "lost":
            verdict.counts["lost attempts"] += 1
            verdict.counts["lost attempts that had run"] += bool(lines)
        if lines:
            ran.append(a)
    _check_reruns(verdict, name, kind, job_attempts, ran)
    _check_end(verdict, name, job, kind, job_attempts)


def _last_final(history: list[Row]) -> Row:
    return [t for t in history if t["state"] in TERMINAL][-1]


def _check_reruns(
    verdict: Verdict, name: str, kind: str, job_attempts: list[Row], ran: list[Row]
) -> None:
    """A job ran again only after a run the engine lost, or a failure its policy retries."""
    for before in ran[:-1]:
        if before["outcome"] == "lost":
            verdict.counts["re-runs after a lost attempt"] += 1
        elif before["outcome"] == "failed" and kind in RETRIED_KINDS:
            verdict.counts["re-runs after a failure"] += 1
        else:
            verdict.counts["duplicates"] += 1
            verdict.bad(
                f"{name}: attempt {before['n']} ran and ended {before['outcome']}"
                f" (exit {before['exit_code']}), yet the job ran again"
            )
    lost = sum(a["outcome"] == "lost" for a in job_attempts)
    retried = sum(a["outcome"] == "failed" for a in job_attempts[:-1])
    if len(ran) > 1 + lost + retried:
        verdict.bad(f"{name}: {len(ran)} runs > 1 + {lost} lost + {retried} retried failures")


def _check_end(verdict: Verdict, name: str, job: Row, kind: str, job_attempts: list[Row]) -> None:
    want = KINDS.get(kind)
    if want is None:
        verdict.bad(f"{name} is no job the soak submitted")
        return
    got = (job["state"], job["exit_code"])
    if job["cancel_requested"]:
        if job["state"] not in {"cancelled", want[0], "failed"}:
            verdict.bad(f"{name}: cancelled on request, yet it ended {got}")
        return
    if job["state"] == "cancelled":
        verdict.bad(f"{name} ended cancelled, but nobody cancelled it")
    elif job["state"] == "lost" and job["losses"] > LOST_RETRIES:
        verdict.counts["jobs given up after losses"] += 1
    elif got != want:
        detail = [(a["n"], a["outcome"], a["exit_code"], a["error"]) for a in job_attempts]
        verdict.bad(f"{name} ({kind}) ended {got}, expected {want}; attempts {detail}")
    elif kind == "fail" and sum(a["outcome"] == "failed" for a in job_attempts) != 2:
        verdict.bad(f"{name}: a failing job with attempts: 2 ran {job['attempts']} attempt(s)")


def _check_cancels(
    verdict: Verdict, job: Row, kind: str, job_attempts: list[Row], cancels: list[Cancel]
) -> None:
    if not cancels:
        return
    verdict.counts["cancelled on request"] += job["state"] == "cancelled"
    first = min(c.returned for c in cancels)
    late = [a["n"] for a in job_attempts if a["created"] > first]
    if late:
        verdict.bad(
            f"job {job['name']} ({job['id']}, {kind}): attempt(s) {late} created after"
            f" `covey cancel` had returned at {first:.3f}"
        )
    for c in cancels:
        if c.code != 0:
            verdict.bad(f"covey cancel {c.job_id} exited {c.code}: {c.output.strip()}")
