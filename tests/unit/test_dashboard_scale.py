"""The dashboard stays responsive with 100,000 jobs in the store: every page reads one page
of rows (or one GROUP BY over a batch), never the whole table."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from covey.dashboard import Address, Dashboard, Guard, make_app
from covey.spec import JobSpec
from covey.store import Store

JOBS = 100_000
STATES = ("succeeded",) * 6 + ("failed", "running", "queued", "cancelled")
LIMIT = 2.0  # seconds per request: generous, CI is loaded (measured: well under 0.3 s)


def fill(path: Path, batch: str, n: int) -> None:
    """``n`` jobs of one batch written as the schema expects, in one transaction."""
    spec = JobSpec(image="busybox", command=("true",)).to_json()
    t0 = time.time() - 3600
    rows = []
    for i in range(n):
        state = STATES[i % len(STATES)]
        ended = state in ("succeeded", "failed", "cancelled")
        code = {"succeeded": 0, "failed": 1}.get(state)
        at = t0 + i * 0.01
        rows.append(
            (f"{i:012x}", batch, i, f"job-{i}", f"covey-{i:012x}", spec, state, at, at, 1, 1,
             0, code, "node-1", at, at + 1 if ended else None)
        )  # fmt: skip
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "INSERT INTO batches(id, name, created, total, owner) VALUES (?, ?, ?, ?, 'queue')",
            (batch, "big.yaml", t0, n),
        )
        conn.executemany(
            "INSERT INTO jobs(id, batch_id, seq, name, service_base, spec, state, created,"
            " updated, attempts, runs, losses, exit_code, node, started, finished)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.commit()


@pytest.mark.timeout(120)
async def test_pages_answer_quickly_with_100000_jobs(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    async with Store.open(path):
        pass  # the schema, as covey makes it
    batch = "b" * 12
    fill(path, batch, JOBS)
    timings: dict[str, float] = {}
    async with Store.open(path) as store:
        dash = Dashboard(store, Guard(Address("127.0.0.1", 0), None))
        async with TestClient(TestServer(make_app(dash), host="127.0.0.1")) as client:
            for url in (
                "/",
                f"/batch/{batch}",
                f"/batch/{batch}?state=failed&page=50",
                f"/batch/{batch}?state=failed&page=50&fragment=jobs",
                f"/batch/{batch}?name=9999&fragment=jobs",
                f"/batch/{batch}?page=2000",
                f"/job/{JOBS - 1:012x}",
            ):
                started = time.perf_counter()
                response = await client.get(url)
                body = await response.text()
                timings[url] = time.perf_counter() - started
                assert response.status == 200, (url, body[:300])
            failed = await (await client.get(f"/batch/{batch}?state=failed&page=50")).text()
    # page 50 of the failed ones: the 2,451st to 2,500th failed job (every 10th, from 6)
    assert "job-24506" in failed and "job-24996" in failed and "job-25006" not in failed
    assert "page 50 of 200" in failed
    print("\n".join(f"{seconds * 1000:8.1f} ms  GET {url}" for url, seconds in timings.items()))
    slow = {url: s for url, s in timings.items() if s > LIMIT}
    assert not slow, slow
