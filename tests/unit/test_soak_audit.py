"""The soak's audit catches what it is there to catch (on a hand-made store)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from soak.checks import Cancel, audit

SCHEMA = """
CREATE TABLE jobs (id TEXT, batch_id TEXT, seq INTEGER, name TEXT, state TEXT, exit_code INTEGER,
    attempts INTEGER, losses INTEGER, cancel_requested INTEGER);
CREATE TABLE attempts (id TEXT, job_id TEXT, n INTEGER, service TEXT, phase TEXT, outcome TEXT,
    exit_code INTEGER, error TEXT, created REAL, removed INTEGER, logs_saved INTEGER);
CREATE TABLE transitions (id INTEGER PRIMARY KEY, job_id TEXT, attempt_id TEXT, state TEXT,
    source TEXT);
"""


class Store:
    def __init__(self, tmp: Path) -> None:
        self.db = tmp / "covey.db"
        self.runs = tmp / "runs.log"
        self.runs.write_text("")
        self.kinds: dict[str, str] = {}
        with closing(sqlite3.connect(self.db)) as conn:
            conn.executescript(SCHEMA)

    def _exec(self, sql: str, *args: Any) -> None:
        with closing(sqlite3.connect(self.db)) as conn, conn:
            conn.execute(sql, args)

    def job(
        self,
        name: str,
        state: str,
        exit_code: int | None,
        outcomes: list[tuple[str, int | None]],
        *,
        ran: list[int] | None = None,
        cancel_requested: int = 0,
        finals: int = 1,
    ) -> str:
        """A job whose attempts ended with ``outcomes``; ``ran``: side-effect lines per attempt."""
        kind = name.split("-", maxsplit=1)[0]
        self.kinds[name] = kind
        job_id = f"id{name}"
        self._exec(
            "INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?)",
            *(job_id, "b", len(self.kinds), name, state, exit_code, len(outcomes), 0),
            cancel_requested,
        )
        ran = ran if ran is not None else [1] * len(outcomes)
        for n, ((outcome, code), lines) in enumerate(zip(outcomes, ran, strict=True), 1):
            service = f"covey-{job_id}-{n}"
            self._exec(
                "INSERT INTO attempts VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                *(f"{job_id}-{n}", job_id, n, service, "ended", outcome, code, None, 100.0 + n),
                *(1, 1),
            )
            with self.runs.open("a") as f:
                f.writelines(f"{name} {service} c{n}{i}\n" for i in range(lines))
        for _ in range(finals):
            self._exec("INSERT INTO transitions VALUES (NULL,?,?,?,?)", job_id, None, state, "t")
        return job_id

    def audit(self, cancels: list[Cancel] | None = None) -> list[str]:
        return audit(self.db, self.runs, self.kinds, cancels or []).violations


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


def test_a_clean_run_passes(store: Store) -> None:
    store.job("ok-1", "succeeded", 0, [("succeeded", 0)])
    store.job("ok-2", "succeeded", 0, [("lost", None), ("succeeded", 0)])  # lost, then re-run
    store.job("fail-3", "failed", 3, [("failed", 3), ("failed", 3)])
    store.job("flaky-4", "succeeded", 0, [("failed", 3), ("succeeded", 0)])
    store.job("ok-5", "cancelled", None, [("cancelled", None)], ran=[0], cancel_requested=1)
    verdict = audit(store.db, store.runs, store.kinds, [])
    assert verdict.violations == []
    assert verdict.counts["re-runs after a lost attempt"] == 1
    assert verdict.counts["re-runs after a failure"] == 2
    assert verdict.counts["duplicates"] == 0


@pytest.mark.parametrize(
    ("args", "kwargs", "found"),
    [
        (("succeeded", 0, [("succeeded", 0)]), {"ran": [2]}, "ran 2 times"),
        (("succeeded", 0, [("succeeded", 0), ("succeeded", 0)]), {}, "yet the job ran again"),
        (("succeeded", 0, [("succeeded", 0)]), {"ran": [0]}, "left no side effect"),
        (("running", None, [("succeeded", 0)]), {}, "not terminal"),
        (("succeeded", 0, [("succeeded", 0)]), {"finals": 2}, "terminal transitions"),
        (("failed", 137, [("failed", 137)]), {}, "expected ('succeeded', 0)"),
        (("cancelled", None, [("cancelled", None)]), {"ran": [0]}, "nobody cancelled it"),
    ],
)
def test_violations_are_found(
    store: Store, args: tuple[Any, ...], kwargs: dict[str, Any], found: str
) -> None:
    store.job("ok-1", *args, **kwargs)
    violations = store.audit()
    assert any(found in v for v in violations), violations


def test_a_run_of_no_attempt_and_a_rerun_after_cancel_are_found(store: Store) -> None:
    job = store.job("flaky-1", "cancelled", None, [("failed", 3), ("cancelled", None)])
    with store.runs.open("a") as f:
        f.write("flaky-1 covey-unknown-1 c9\n")
    violations = store.audit([Cancel(job, 100.5, 101.5, 0, "cancelled 1 job(s)")])
    assert any("which is no attempt" in v for v in violations), violations
    assert any("created after `covey cancel`" in v for v in violations), violations
