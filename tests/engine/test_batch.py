"""The fan-out batch core on a real engine: store, submitter, tracker, governor, reaper.

Mostly through the async API (``covey.Client``), plus ``covey batch`` and ``covey prune`` as
processes. Every check reads the engine itself (its event stream, its task list, its service
list) or covey's store, never covey's in-memory view alone.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiodocker
import anyio
from anyio.streams.text import TextReceiveStream

from covey import Client
from covey.context import Options
from covey.policy import backoff_delay
from covey.results import JobResult
from covey.spec import JobSpec, Resources, RetryPolicy
from covey.states import JobState
from covey.store import Store

IMAGE = "busybox:latest"
CPU = 1_000_000_000
STORE_LABEL = "covey.store"


def sh(script: str, **fields: Any) -> JobSpec:
    return JobSpec(image=IMAGE, command=("sh", "-c", script), **fields)


def docker_env(host: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "COVEY_DB"}
    env["DOCKER_HOST"] = host
    return env


async def docker(host: str, *args: str) -> str:
    done = await anyio.run_process(["docker", *args], env=docker_env(host))
    return done.stdout.decode()


async def covey_services(host: str, store_id: str) -> list[str]:
    """Names of the services that carry this store's label, as ``docker service ls`` says."""
    label = f"label={STORE_LABEL}={store_id}"
    out = await docker(host, "service", "ls", "--filter", label, "--format", "{{.Name}}")
    return sorted(out.split())


async def covey_cli(host: str, *args: str) -> tuple[int, str, str]:
    done = await anyio.run_process(
        [sys.executable, "-m", "covey", *args], env=docker_env(host), check=False
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def store_id_of(db: Path) -> str:
    async with Store.open(db) as store:
        return store.id


async def check_recorded(store: Store, results: Sequence[JobResult]) -> None:
    """Every job ended once in the store, its attempts cleaned up and its logs saved."""
    for result in results:
        history = await store.transitions(result.id)
        finals = [t for t in history if JobState(t.state).terminal]
        assert [t.state for t in finals] == [result.state.value], (result.name, history)
        assert history[-1].state == result.state.value
        for attempt in await store.attempts(result.id):
            assert attempt.phase == "ended", attempt
            assert attempt.removed, attempt
            assert attempt.logs_saved, attempt


@asynccontextmanager
async def container_events(host: str, store_id: str) -> AsyncIterator[list[dict[str, Any]]]:
    """The engine's own start/die events for this store's containers, collected live."""
    seen: list[dict[str, Any]] = []
    filters = ("type=container", "event=start", "event=die", f"label={STORE_LABEL}={store_id}")
    args = ["docker", "events", "--since", f"{time.time() - 1:.3f}", "--format", "{{json .}}"]
    for value in filters:
        args += ["--filter", value]
    async with await anyio.open_process(args, env=docker_env(host)) as proc:
        assert proc.stdout is not None

        async def read() -> None:
            assert proc.stdout is not None
            buffer = ""
            async for chunk in TextReceiveStream(proc.stdout):
                buffer += chunk
                *lines, buffer = buffer.split("\n")
                seen.extend(json.loads(line) for line in lines if line.strip())

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            try:
                yield seen
            finally:
                proc.terminate()


async def wait_for_events(seen: list[dict[str, Any]], action: str, count: int) -> None:
    with anyio.fail_after(20):
        while sum(e["Action"] == action for e in seen) < count:
            await anyio.sleep(0.1)


def max_concurrent(events: Sequence[dict[str, Any]]) -> int:
    running = peak = 0
    for event in sorted(events, key=lambda e: (e["timeNano"], e["Action"] == "start")):
        running += 1 if event["Action"] == "start" else -1
        peak = max(peak, running)
    return peak


# -- 1. a 200-job fan-out ----------------------------------------------------------------------


def fan_code(i: int) -> int:
    return 0 if i % 3 else 1 + i % 5


async def test_200_jobs_reach_a_recorded_end(
    swarm_host: str, tmp_path: Path, record_property: Any
) -> None:
    n = 200
    specs = [
        sh(f"echo out-{i}; echo err-{i} >&2; exit {fan_code(i)}", name=f"fan-{i}", index=i)
        for i in range(n)
    ]
    started = time.monotonic()
    async with Client(swarm_host, db=tmp_path / "covey.db", options=Options()) as client:
        results = [r async for r in client.map(specs)]
        wall = time.monotonic() - started
        assert client.engine is not None and client.store is not None
        requests = client.engine.total_requests
        by_kind = dict(client.engine.requests)
        store_id = client.store.id
        await check_recorded(client.store, results)
        counts = await client.store.counts(results[0].batch)
    by_index = {r.index: r for r in results}
    assert sorted(by_index) == list(range(n))
    for i, result in by_index.items():
        code = fan_code(i)
        assert result.state is (JobState.SUCCEEDED if code == 0 else JobState.FAILED), result
        assert result.exit_code == code, result
        assert (result.stdout, result.stderr) == (f"out-{i}\n".encode(), f"err-{i}\n".encode())
        assert result.attempts == 1
        assert result.node
    failed = sum(1 for i in range(n) if fan_code(i))
    assert counts == {"succeeded": n - failed, "failed": failed}
    assert await covey_services(swarm_host, store_id) == []
    record_property("wall_seconds", round(wall, 2))
    record_property("jobs_per_second", round(n / wall, 2))
    record_property("requests_per_job", round(requests / n, 2))
    print(f"\n200 jobs: {wall:.1f}s wall, {n / wall:.2f} jobs/s, {requests / n:.2f} requests/job")
    print(f"requests: {by_kind}")


# -- 2. reservations: the governor keeps the swarm from piling up pending tasks --------------


async def test_reservations_bound_concurrency_without_pending_tasks(
    swarm_host: str, tmp_path: Path
) -> None:
    n = 12
    specs = [
        JobSpec(image=IMAGE, command=("sleep", "1"), resources=Resources(reserve_nano_cpus=CPU))
        for _ in range(n)
    ]
    unschedulable: list[str] = []
    polls = 0
    async with (
        Client(swarm_host, db=tmp_path / "covey.db") as client,
        aiodocker.Docker(url=swarm_host) as raw,
    ):
        assert client.store is not None
        store_id = client.store.id
        async with container_events(swarm_host, store_id) as events:
            done = anyio.Event()

            async def watch_tasks() -> None:
                nonlocal polls
                while not done.is_set():
                    for task in await raw.tasks.list(
                        filters={"label": f"{STORE_LABEL}={store_id}"}
                    ):
                        status = task.get("Status") or {}
                        if status.get("State") == "pending" and "no suitable node" in (
                            status.get("Err") or ""
                        ):
                            unschedulable.append(f"{task['ID']}: {status.get('Err')}")
                    polls += 1
                    await anyio.sleep(0.1)

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_tasks)
                results = [r async for r in client.map(specs)]
                done.set()
            await wait_for_events(events, "die", n)
    assert all(r.state is JobState.SUCCEEDED for r in results), results
    assert sum(e["Action"] == "start" for e in events) == n
    assert max_concurrent(events) == 2  # both CPUs used, never more
    assert polls > 10
    assert unschedulable == []


# -- 3. the event stream is a hint: tracking survives losing it, or never having it ------------


async def test_jobs_are_tracked_when_the_event_stream_is_cut(
    swarm_host: str, tmp_path: Path
) -> None:
    cut_specs = [sh(f"sleep 0.{i % 10}; exit {i % 2}", name=f"cut-{i}") for i in range(30)]
    poll_specs = [sh(f"sleep 0.{i % 5}; exit {i % 3}", name=f"poll-{i}") for i in range(15)]
    cuts = 0

    async def with_cuts() -> tuple[list[JobResult], int]:
        nonlocal cuts
        async with Client(swarm_host, db=tmp_path / "cut.db") as client:
            assert client.engine is not None and client.store is not None

            async def cutter() -> None:
                nonlocal cuts
                while True:
                    await anyio.sleep(1.5)
                    if client.engine is not None and client.engine.cut_events():
                        cuts += 1

            async with anyio.create_task_group() as tg:
                tg.start_soon(cutter)
                results = [r async for r in client.map(cut_specs)]
                tg.cancel_scope.cancel()
            await check_recorded(client.store, results)
            return results, client.context.counters.event_reconnects

    async def polling_only() -> tuple[list[JobResult], int, int]:
        options = Options(use_events=False, poll_interval=0.5)
        async with Client(swarm_host, db=tmp_path / "poll.db", options=options) as client:
            assert client.engine is not None and client.store is not None
            results = [r async for r in client.map(poll_specs)]
            await check_recorded(client.store, results)
            counters = client.context.counters
            assert not any(key.startswith("GET events") for key in client.engine.requests)
            return results, counters.recorded_from_event, counters.recorded_from_poll

    outcome: dict[str, Any] = {}

    async def run(key: str, fn: Any) -> None:
        outcome[key] = await fn()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "cut", with_cuts)
        tg.start_soon(run, "poll", polling_only)

    cut_results, reconnects = outcome["cut"]
    assert cuts >= 2
    assert reconnects >= cuts
    assert len(cut_results) == 30
    for r in cut_results:
        code = int(r.name.split("-")[1]) % 2
        assert (r.state, r.exit_code) == (
            JobState.SUCCEEDED if code == 0 else JobState.FAILED,
            code,
        ), r

    poll_results, from_event, from_poll = outcome["poll"]
    assert len(poll_results) == 15
    for r in poll_results:
        code = int(r.name.split("-")[1]) % 3
        assert r.exit_code == code, r
        assert r.stdout == b"" and r.state.terminal
    assert (from_event, from_poll) == (0, 15)


# -- 4. retries with backoff, non-retryable codes, deadlines -----------------------------------


async def test_retries_backoff_and_deadlines(swarm_host: str, tmp_path: Path) -> None:
    policy = RetryPolicy(attempts=3, backoff=1.0, on_exit_codes=(75,))
    specs = [
        sh("echo try; exit 75", name="flaky", retry=policy),
        sh("exit 3", name="broken", retry=policy),
        JobSpec(image=IMAGE, command=("sleep", "30"), name="slow", timeout=1.0),
    ]
    async with Client(swarm_host, db=tmp_path / "covey.db") as client:
        assert client.store is not None
        store = client.store
        results = {r.name: r async for r in client.map(specs)}
        await check_recorded(store, list(results.values()))

        flaky = results["flaky"]
        assert (flaky.state, flaky.exit_code, flaky.attempts) == (JobState.FAILED, 75, 3)
        assert flaky.stdout == b"try\n"
        attempts = await store.attempts(flaky.id)
        assert [(a.n, a.exit_code, a.service) for a in attempts] == [
            (n, 75, f"covey-{flaky.id}-{n}") for n in (1, 2, 3)
        ]
        history = await store.transitions(flaky.id)
        states = [t.state for t in history if t.state != "running"]
        assert states == [
            "queued",
            "pending",
            "retrying",
            "pending",
            "retrying",
            "pending",
            "failed",
        ]
        retried = [t for t in history if t.state == "retrying"]
        next_pending = [t for t in history if t.state == "pending"][1:]
        for n, (end, again) in enumerate(zip(retried, next_pending, strict=True), start=1):
            assert again.attempt_id == f"{flaky.id}-{n + 1}"
            assert again.at - end.at >= backoff_delay(policy, n) - 0.01, (n, end, again)
        for attempt in attempts[1:]:
            previous = attempts[attempt.n - 2]
            assert previous.ended is not None
            assert attempt.created - previous.ended >= backoff_delay(policy, previous.n) - 0.01

        broken = results["broken"]
        assert (broken.state, broken.exit_code, broken.attempts) == (JobState.FAILED, 3, 1)
        assert "not retryable" in ((await store.transitions(broken.id))[-1].detail or "")

        slow = results["slow"]
        assert (slow.state, slow.exit_code, slow.attempts) == (JobState.TIMED_OUT, None, 1)
        assert slow.error == "deadline of 1s reached"
        assert slow.started is not None and slow.finished is not None
        assert 1.0 <= slow.finished - slow.started < 10.0
        store_id = store.id
    assert await covey_services(swarm_host, store_id) == []


# -- 5. bad batch files: covey batch refuses them before anything runs -------------------------

VALID = "jobs:\n  - image: busybox:latest\n    command: [echo, ok]\n"
BAD_FILES = {
    "unknown-key": (VALID + "  - image: busybox:latest\n    comand: [echo, hi]\n", 5, "comand"),
    "wrong-type": (VALID + "  - image: busybox:latest\n    timeout: [1, 2]\n", 5, "timeout"),
    "missing-image": (VALID + "  - command: [echo, hi]\n", 4, "missing required key 'image'"),
    "bad-size": (
        VALID + "  - image: busybox:latest\n    deploy:\n      resources:\n        limits:\n"
        "          memory: 12XB\n",
        8,
        "'12XB' is not a size",
    ),
    "empty-matrix": (VALID + "  - image: busybox:latest\n    for_each: []\n", 5, "matrix is empty"),
}


async def test_bad_batch_files_submit_nothing(swarm_host: str, tmp_path: Path) -> None:
    db = tmp_path / "covey.db"
    store_id = await store_id_of(db)
    outcome: dict[str, tuple[int, str, str]] = {}

    async def run(name: str, text: str) -> None:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        outcome[name] = await covey_cli(
            swarm_host, "batch", str(path), "--json", "--no-progress", "--db", str(db)
        )

    async with anyio.create_task_group() as tg:
        for name, (text, _, _) in BAD_FILES.items():
            tg.start_soon(run, name, text)

    for name, (_, line, words) in BAD_FILES.items():
        code, out, err = outcome[name]
        assert code == 125, (name, out, err)
        assert out == ""
        assert err.startswith(f"covey: {tmp_path / name}.yaml:{line}: "), (name, err)
        assert words in err, (name, err)
    async with Store.open(db) as store:
        assert await store.batches() == []
        assert await store.jobs() == []
    assert await covey_services(swarm_host, store_id) == []


# -- 6. --keep-failed keeps failed services for a look; prune removes them, and only them ------

KEEP_FILE = """\
jobs:
  - name: keep
    image: busybox:latest
    command: [sh, -c, "echo job-$COVEY_INDEX; exit $((COVEY_INDEX % 2 * 3))"]
    for_each: {range: [0, 4]}
"""


async def test_keep_failed_then_prune(swarm_host: str, tmp_path: Path) -> None:
    db = tmp_path / "covey.db"
    store_id = await store_id_of(db)
    path = tmp_path / "keep.yaml"
    path.write_text(KEEP_FILE)
    foreign = [f"h8-foreign-{os.getpid()}", f"h8-lookalike-{os.getpid()}"]
    create = ("service", "create", "--detach", "--restart-condition", "none")
    lookalike = ("--label", "covey.managed=1", "--container-label", "covey.managed=1")
    await docker(swarm_host, *create, "--name", foreign[0], IMAGE, "sleep", "300")
    await docker(swarm_host, *create, *lookalike, "--name", foreign[1], IMAGE, "sleep", "300")
    try:
        code, out, err = await covey_cli(
            swarm_host, "batch", str(path), "--json", "--keep-failed", "1h", "--db", str(db)
        )
        assert code == 1, err
        doc = json.loads(out)
        assert set(doc) >= {"batch", "total", "succeeded", "failed", "jobs"}
        assert (doc["total"], doc["succeeded"], doc["failed"]) == (4, 2, 2)
        jobs = {j["name"]: j for j in doc["jobs"]}
        assert sorted(jobs) == ["keep-0", "keep-1", "keep-2", "keep-3"]
        for i in range(4):
            job = jobs[f"keep-{i}"]
            assert job["index"] == i
            assert (job["state"], job["exit_code"]) == (
                ("succeeded", 0) if i % 2 == 0 else ("failed", 3)
            )
            assert job["node"]
        async with Store.open(db) as store:
            batch = await store.batch(doc["batch"])
            assert batch is not None and batch.total == 4
        failed_services = sorted(f"covey-{jobs[f'keep-{i}']['id']}-1" for i in (1, 3))
        assert await covey_services(swarm_host, store_id) == failed_services

        code, out, err = await covey_cli(swarm_host, "prune", "--db", str(db))
        assert code == 0, err
        assert sorted(out.split()) == failed_services
        assert await covey_services(swarm_host, store_id) == []
        names = (await docker(swarm_host, "service", "ls", "--format", "{{.Name}}")).split()
        assert set(foreign) <= set(names)
        code, out, err = await covey_cli(swarm_host, "prune", "--db", str(db))
        assert (code, out) == (0, "")
    finally:
        await docker(swarm_host, "service", "rm", *foreign)
