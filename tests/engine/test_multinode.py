"""covey on a real 3-node swarm (scripts/cluster.sh): spread, per-node capacity, placement,
and jobs that survive a killed node, a partition and a drain.

Node-loss tests need the manager to notice the loss; the cluster runs with a short dispatcher
heartbeat so that takes seconds, not the default 12-16 s.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from covey import Client, JobSpec, JobState, Options, Resources
from covey.store import Store

pytestmark = pytest.mark.cluster

NANO = 1_000_000_000
LOST_WITHIN = 30.0


def docker(host: str, *args: str) -> str:
    return subprocess.run(
        ["docker", "-H", host, *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def node_state(host: str, hostname: str) -> str:
    out = docker(host, "node", "ls", "--format", "{{.Hostname}} {{.Status}}")
    for line in out.splitlines():
        name, _, status = line.partition(" ")
        if name == hostname:
            return status.strip().lower()
    return "unknown"


def job(image: str, command: str, **kw: object) -> JobSpec:
    """A job of ``image`` (the cluster's registry image: workers have no local test image)."""
    return JobSpec(image=image, command=("sh", "-c", command), **kw)  # type: ignore[arg-type]


async def wait_running_on(
    store: Store, job_ids: list[str], hostname: str, timeout: float = 60
) -> list[str]:
    """Job ids (of ``job_ids``) running on ``hostname``, once there is at least one."""
    with anyio.fail_after(timeout):
        while True:
            jobs = await store.jobs_by_id(job_ids)
            there = [j.id for j in jobs if j.state is JobState.RUNNING and j.node == hostname]
            if there:
                return there
            await anyio.sleep(0.2)


def no_covey_services(host: str) -> bool:
    return docker(host, "service", "ls", "-q", "--filter", "label=covey.managed").strip() == ""


async def test_results_and_logs_come_back_from_every_node(cluster, tmp_path: Path) -> None:
    specs = [
        job(cluster.image, f"echo out-{i}; echo err-{i} >&2; sleep 0.3; exit {i % 3}")
        for i in range(18)
    ]
    async with Client(cluster.docker_host, db=tmp_path / "db") as c:
        results = [r async for r in c.map(specs)]
    nodes = Counter(r.node for r in results)
    assert len(nodes) >= 2, nodes
    assert set(nodes) <= {n.hostname for n in cluster.nodes}
    for r in results:
        i = int(r.stdout.decode().strip().removeprefix("out-"))
        assert r.stderr == f"err-{i}\n".encode()
        assert r.exit_code == i % 3
        assert r.state is (JobState.SUCCEEDED if i % 3 == 0 else JobState.FAILED)
    assert no_covey_services(cluster.docker_host)


async def test_governor_holds_each_node_to_its_own_capacity(cluster, tmp_path: Path) -> None:
    cpus = {
        n.hostname: int(docker(n.docker_host, "info", "--format", "{{.NCPU}}"))
        for n in cluster.nodes
    }
    total = sum(cpus.values())
    specs = [
        job(cluster.image, "sleep 1.5", resources=Resources(reserve_nano_cpus=NANO))
        for _ in range(total * 2)
    ]
    peak: Counter[str] = Counter()
    blocked = 0
    ids = {n.node_id: n.hostname for n in cluster.nodes}

    async def watch(done: anyio.Event) -> None:
        nonlocal blocked
        while not done.is_set():
            out = await anyio.to_thread.run_sync(
                lambda: docker(
                    cluster.docker_host,
                    "node",
                    "ps",
                    *ids,
                    "--filter",
                    "desired-state=running",
                    "--format",
                    "{{json .}}",
                )
            )
            now: Counter[str] = Counter()
            tasks = {}  # `docker node ps` with several nodes repeats tasks: keep one per id
            for line in out.splitlines():
                task = json.loads(line)
                tasks[task["ID"]] = task
            for task in tasks.values():
                if task["CurrentState"].startswith("Running"):
                    now[task["Node"]] += 1
                if "no suitable node" in task.get("Error", ""):
                    blocked += 1
            for node, n in now.items():
                peak[node] = max(peak[node], n)
            await anyio.sleep(0.3)

    done = anyio.Event()
    async with (
        Client(cluster.docker_host, db=tmp_path / "db") as c,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(watch, done)
        results = [r async for r in c.map(specs)]
        done.set()
    assert all(r.ok for r in results)
    for node, n in peak.items():
        assert n <= cpus[node], (node, n, cpus)
    assert blocked == 0


async def test_constraints_place_jobs_only_on_matching_nodes(cluster, tmp_path: Path) -> None:
    w1, w2 = cluster.workers[0].hostname, cluster.workers[1].hostname
    specs = [job(cluster.image, "true", constraints=(f"node.hostname=={w2}",)) for _ in range(4)]
    specs += [
        job(cluster.image, "true", constraints=(f"node.labels.covey.node=={w1}",)) for _ in range(4)
    ]
    async with Client(cluster.docker_host, db=tmp_path / "db") as c:
        results = [r async for r in c.map(specs)]
    by_name = {r.id: r for r in results}
    assert all(r.ok for r in results)
    assert sorted(r.node for r in by_name.values()) == sorted([w2] * 4 + [w1] * 4)


async def _node_loss(cluster, tmp_path: Path, fault: str) -> None:
    """Jobs on a worker that dies or is cut off end as lost within 30 s and succeed elsewhere."""
    victim = cluster.workers[0]
    specs = [job(cluster.image, "sleep 6; echo done") for _ in range(6)]
    async with Client(
        cluster.docker_host, db=tmp_path / "db", options=Options(poll_interval=1.0)
    ) as c:
        assert c.store is not None
        _, ids = await c.start(specs)
        on_victim = await wait_running_on(c.store, ids, victim.hostname)
        await anyio.to_thread.run_sync(getattr(cluster, fault), victim)
        with anyio.fail_after(60):
            while node_state(cluster.docker_host, victim.hostname) != "down":
                await anyio.sleep(0.2)
        down_at = time.time()
        results = {}
        with anyio.fail_after(240):
            for job_id in ids:
                results[job_id] = await c.wait(job_id)
        assert all(r.ok and r.stdout == b"done\n" for r in results.values()), results
        for job_id in on_victim:
            attempts = await c.store.attempts(job_id)
            first = attempts[0]
            assert first.outcome == "lost", first
            assert first.error is not None and victim.hostname in first.error
            assert first.ended is not None and first.ended - down_at <= LOST_WITHIN
            assert results[job_id].attempts >= 2
            assert results[job_id].node != victim.hostname
        before = {j.id: (j.state, j.exit_code, j.attempts) for j in await c.store.jobs_by_id(ids)}
        history = {j: len(await c.store.transitions(j)) for j in ids}
        # the node comes back: nothing covey recorded may change
        await anyio.to_thread.run_sync(cluster.repair)
        await anyio.sleep(5)
        after = {j.id: (j.state, j.exit_code, j.attempts) for j in await c.store.jobs_by_id(ids)}
        assert after == before
        assert {j: len(await c.store.transitions(j)) for j in ids} == history


async def test_jobs_on_a_killed_node_are_lost_and_retried(cluster, tmp_path: Path) -> None:
    await _node_loss(cluster, tmp_path, "kill_node")


async def test_jobs_behind_a_partition_are_lost_and_retried(cluster, tmp_path: Path) -> None:
    await _node_loss(cluster, tmp_path, "cut")


async def test_a_drained_node_is_reported_and_its_job_retried(cluster, tmp_path: Path) -> None:
    victim = cluster.workers[1]
    specs = [job(cluster.image, "sleep 5; echo done") for _ in range(6)]
    async with Client(cluster.docker_host, db=tmp_path / "db") as c:
        assert c.store is not None
        _, ids = await c.start(specs)
        on_victim = await wait_running_on(c.store, ids, victim.hostname)
        await anyio.to_thread.run_sync(cluster.drain, victim)
        with anyio.fail_after(180):
            results = {job_id: await c.wait(job_id) for job_id in ids}
        assert all(r.ok for r in results.values()), results
        for job_id in on_victim:
            first = (await c.store.attempts(job_id))[0]
            assert first.outcome == "lost"
            assert first.error is not None and "drained" in first.error
            assert results[job_id].node != victim.hostname


async def test_pipeline_inputs_cross_nodes_through_the_swarm(cluster, tmp_path: Path) -> None:
    """The map runs on one node, the reduce is held to another: its inputs (the map's
    stdout) can only have come through swarm configs, not a shared disk."""
    from covey import Pipeline

    map_node, reduce_node = cluster.nodes[1].hostname, cluster.nodes[2].hostname
    numbers = [7, 11, 13, 17, 19, 23, 29, 31]
    p = Pipeline()
    p.add(
        "map",
        [
            job(
                cluster.image,
                f"echo {n}",
                constraints=(f"node.hostname=={map_node}",),
                name=f"map-{i}",
            )
            for i, n in enumerate(numbers)
        ],
    )
    p.add(
        "reduce",
        job(
            cluster.image,
            "cat /covey/inputs/map/[0-9]* | awk '{s += $1} END {print s}';"
            ' grep -c \'"state": "succeeded"\' /covey/inputs/map/index.json',
            constraints=(f"node.hostname=={reduce_node}",),
        ),
        needs=["map"],
        inputs=["map"],
    )
    async with Client(cluster.docker_host, db=tmp_path / "db") as c:
        results = {r.name: r async for r in c.run_batch(p)}
    assert {results[f"map-{i}"].node for i in range(len(numbers))} == {map_node}
    reduce = results["reduce"]
    assert reduce.node == reduce_node
    assert reduce.stdout == f"{sum(numbers)}\n{len(numbers)}\n".encode(), reduce
    assert no_covey_services(cluster.docker_host)
    configs = docker(cluster.docker_host, "config", "ls", "-q", "--filter", "label=covey.managed")
    assert configs.strip() == ""
