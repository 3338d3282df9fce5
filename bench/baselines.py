"""The approaches covey is measured against, each a few lines of plain API calls.

Each takes a :class:`bench.api.Docker` pointed at the counting proxy and returns wall time,
completion times (seconds from its start, when the approach learnt the job's outcome) and how
many jobs succeeded. Labels ``bench.run`` / ``bench.approach`` go on every service and
container so the harness can attribute die events and clean up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from bench.api import FINAL_TASK_STATES, ApiError, Docker, service_body
from bench.harness import APPROACH_LABEL, RUN_LABEL

CEILING_POLL = 0.25
REPLICATED_MAX_CONCURRENT = 16


def _labels(run_id: str, approach: str) -> dict[str, str]:
    return {RUN_LABEL: run_id, APPROACH_LABEL: approach}


def _result(
    approach: str, n: int, t0: float, t_end: float, done: Sequence[tuple[float, bool]]
) -> dict[str, Any]:
    return {
        "approach": approach,
        "n": n,
        "wall_s": t_end - t0,
        "completions": sorted(t for t, _ in done),
        "succeeded": sum(1 for _, ok in done if ok),
        "failed": sum(1 for _, ok in done if not ok),
    }


def _final(tasks: list[dict[str, Any]]) -> tuple[bool, bool]:
    """(finished, succeeded) for a one-replica service's task list."""
    if not tasks:
        return False, False
    states = [t["Status"]["State"] for t in tasks]
    if all(s in FINAL_TASK_STATES for s in states):
        return True, any(s == "complete" for s in states)
    return False, False


async def sequential(docker: Docker, run_id: str, n: int, command: list[str]) -> dict[str, Any]:
    """The seed approach: for each job in turn create, poll once a second until done, remove."""
    approach = "sequential"
    labels = _labels(run_id, approach)
    done: list[tuple[float, bool]] = []
    t0 = time.monotonic()
    for i in range(n):
        created = await docker.post(
            "services/create", service_body(f"bench-{run_id}-seq-{i}", command, labels)
        )
        sid = created["ID"]
        while True:
            await asyncio.sleep(1.0)
            finished, ok = _final(await docker.get("tasks", filters={"service": [sid]}))
            if finished:
                done.append((time.monotonic() - t0, ok))
                break
        await docker.delete(f"services/{sid}")
    return _result(approach, n, t0, time.monotonic(), done)


async def naive(docker: Docker, run_id: str, n: int, command: list[str]) -> dict[str, Any]:
    """Create every service at once; each one polled on its own once a second, then removed."""
    approach = "naive"
    labels = _labels(run_id, approach)
    done: list[tuple[float, bool]] = []
    t0 = time.monotonic()

    async def one(i: int) -> None:
        created = await docker.post(
            "services/create", service_body(f"bench-{run_id}-naive-{i}", command, labels)
        )
        sid = created["ID"]
        while True:
            await asyncio.sleep(1.0)
            finished, ok = _final(await docker.get("tasks", filters={"service": [sid]}))
            if finished:
                done.append((time.monotonic() - t0, ok))
                break
        await docker.delete(f"services/{sid}")

    await asyncio.gather(*(one(i) for i in range(n)))
    return _result(approach, n, t0, time.monotonic(), done)


async def ceiling(
    docker: Docker, run_id: str, n: int, command: list[str], approach: str = "ceiling"
) -> dict[str, Any]:
    """The engine's ceiling: all services created at once, one batched task listing per round
    (the ``label`` filter matches the services' labels), removal as soon as a task is final."""
    labels = _labels(run_id, approach)
    group = f"{RUN_LABEL}={run_id}"
    done: list[tuple[float, bool]] = []
    t0 = time.monotonic()
    pending: set[str] = set()
    removals: list[asyncio.Task[Any]] = []

    async def create(i: int) -> None:
        body = service_body(f"bench-{run_id}-{approach}-{i}", command, labels)
        pending.add((await docker.post("services/create", body))["ID"])

    creating = asyncio.gather(*(create(i) for i in range(n)))
    while not creating.done() or pending:
        await asyncio.sleep(CEILING_POLL)
        tasks = await docker.get(
            "tasks", filters={"label": [group, f"{APPROACH_LABEL}={approach}"]}
        )
        by_service: dict[str, list[dict[str, Any]]] = {}
        for t in tasks:
            by_service.setdefault(t["ServiceID"], []).append(t)
        now = time.monotonic() - t0
        for sid in list(pending):
            finished, ok = _final(by_service.get(sid, []))
            if finished:
                pending.discard(sid)
                done.append((now, ok))
                removals.append(asyncio.create_task(docker.delete(f"services/{sid}")))
    await creating
    await asyncio.gather(*removals)
    return _result(approach, n, t0, time.monotonic(), done)


async def replicated_job(docker: Docker, run_id: str, n: int, command: list[str]) -> dict[str, Any]:
    """Swarm's native job mode: one service, ``TotalCompletions=n``, ``MaxConcurrent=16``.

    Only for jobs that succeed (in 20.10 a failed job task is recreated forever). Removing
    the service leaves its containers behind (moby 42789/44312): the harness removes them
    afterwards, outside the measured time and the request count.
    """
    approach = "replicated-job"
    labels = _labels(run_id, approach)
    mode = {
        "ReplicatedJob": {
            "MaxConcurrent": min(REPLICATED_MAX_CONCURRENT, n),
            "TotalCompletions": n,
        }
    }
    seen: dict[str, float] = {}
    failed: set[str] = set()
    t0 = time.monotonic()
    created = await docker.post(
        "services/create", service_body(f"bench-{run_id}-rjob", command, labels, mode=mode)
    )
    sid = created["ID"]
    while len(seen) < n:
        await asyncio.sleep(CEILING_POLL)
        now = time.monotonic() - t0
        for t in await docker.get("tasks", filters={"service": [sid]}):
            state = t["Status"]["State"]
            if state == "complete" and t["ID"] not in seen:
                seen[t["ID"]] = now
            elif state in ("failed", "rejected"):
                failed.add(t["ID"])
        if len(failed) > n:
            break  # the engine recreates failed job tasks forever: give up
    with contextlib.suppress(ApiError):
        await docker.delete(f"services/{sid}")
    done = [(t, True) for t in seen.values()][:n]
    result = _result(approach, n, t0, time.monotonic(), done)
    result["failed"] = len(failed)
    result["notes"] = (
        f"MaxConcurrent={min(REPLICATED_MAX_CONCURRENT, n)}; leftover containers removed "
        "after the measurement (not counted)"
    )
    return result


APPROACHES = {
    "ceiling": ceiling,
    "naive": naive,
    "sequential": sequential,
    "replicated-job": replicated_job,
}
