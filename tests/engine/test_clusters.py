"""covey on a real cluster: images from the cluster's registries (private ones too), pinned
to one digest per batch; pulls counted apart from pending; and job ends on every node seen
through the nodes' own event streams (``--node-host``).

The cluster (scripts/cluster.sh) runs two registries on its own network: an open one and one
with basic auth. Only the manager has the local test image; workers pull.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from covey import Client, JobSpec, JobState, Options

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]


def docker(host: str, *args: str, check: bool = True) -> str:
    return subprocess.run(
        ["docker", "-H", host, *args], capture_output=True, text=True, check=check, timeout=120
    ).stdout


def docker_config(tmp_path: Path, cluster) -> Path:
    """A docker CLI configuration holding the private registry's credentials, as
    ``docker login`` would leave it."""
    conf = tmp_path / "docker-config"
    conf.mkdir(exist_ok=True)
    token = base64.b64encode(f"{cluster.registry_user}:{cluster.registry_password}".encode())
    (conf / "config.json").write_text(
        json.dumps({"auths": {cluster.private_registry: {"auth": token.decode()}}})
    )
    return conf


def image_with_marker(cluster, marker: str, tag: str) -> None:
    """An image of the manager's busybox with /marker holding ``marker``, as ``tag``."""
    host = cluster.docker_host
    name = f"covey-marker-{marker}"
    docker(host, "rm", "-f", name, check=False)
    docker(
        host,
        "run",
        "--name",
        name,
        "covey-test/busybox:latest",
        "sh",
        "-c",
        f"echo {marker} > /marker",
    )
    docker(host, "commit", name, tag)
    docker(host, "rm", "-f", name)


def batch_file(path: Path, image: str, commands: list[str], **defaults: object) -> Path:
    jobs = [{"image": image, "command": ["sh", "-c", c]} for c in commands]
    path.write_text(json.dumps({"defaults": defaults, "jobs": jobs}))  # JSON is YAML
    return path


def per_node(cluster, each: int) -> list[str]:
    """Hostnames for ``each`` jobs on every node of the cluster."""
    return [n.hostname for n in cluster.nodes for _ in range(each)]


@contextlib.contextmanager
def slow_link(cluster, node, rate: str) -> Iterator[None]:
    """Traffic to ``node`` through the cluster's hub limited to ``rate`` (tc tbf)."""
    hub = f"/run/netns/covey-{cluster.name}-hub"
    veth = "v-" + node.hostname.removeprefix(f"{cluster.name}-")
    tc = ["nsenter", f"--net={hub}", "tc", "qdisc"]
    subprocess.run(
        [
            *tc,
            "add",
            "dev",
            veth,
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            "32kbit",
            "latency",
            "400ms",
        ],
        check=True,
    )
    try:
        yield
    finally:
        subprocess.run([*tc, "del", "dev", veth, "root"], check=False)


def covey_process(docker_host: str, *args: str) -> subprocess.Popen[str]:
    """``python -m covey ARGS`` in the background (the working tree's package)."""
    env = dict(os.environ, DOCKER_HOST=docker_host, PYTHONPATH=str(REPO / "src"))
    return subprocess.Popen(
        [sys.executable, "-m", "covey", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_private_image_needs_registry_auth_and_then_runs_on_every_node(
    cluster, covey_cli, tmp_path: Path
) -> None:
    env = {"DOCKER_CONFIG": str(docker_config(tmp_path, cluster))}
    db = str(tmp_path / "db")
    # without --with-registry-auth: refused before anything runs, in the registry's words
    started = time.monotonic()
    refused = covey_cli(
        "--db",
        db,
        "run",
        "--constraint",
        "node.role==worker",
        cluster.private_image,
        "true",
        docker_host=cluster.docker_host,
        env=env,
    )
    assert refused.returncode == 125, refused
    assert "no basic auth credentials" in refused.stderr or "unauthorized" in refused.stderr
    assert "--with-registry-auth" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert time.monotonic() - started < 30
    assert (
        docker(cluster.docker_host, "service", "ls", "-q", "--filter", "label=covey.managed") == ""
    )
    # with it (the batch key): every node pulls it
    hosts = per_node(cluster, 2)
    jobs = [
        {
            "image": cluster.private_image,
            "command": ["sh", "-c", "hostname"],
            "deploy": {"placement": {"constraints": [f"node.hostname=={h}"]}},
        }
        for h in hosts
    ]
    path = tmp_path / "private.yaml"
    path.write_text(json.dumps({"defaults": {"registry_auth": True}, "jobs": jobs}))
    ran = covey_cli(
        "--db",
        db,
        "batch",
        "--json",
        str(path),
        docker_host=cluster.docker_host,
        env=env,
        timeout=180,
    )
    assert ran.returncode == 0, ran
    doc = json.loads(ran.stdout)
    assert Counter(j["state"] for j in doc["jobs"]) == {"succeeded": len(hosts)}
    assert {j["node"] for j in doc["jobs"]} == {n.hostname for n in cluster.nodes}


async def test_a_tag_pushed_again_mid_batch_does_not_change_the_batch(
    cluster, covey_cli, tmp_path: Path
) -> None:
    tag = f"{cluster.registry}/covey-test/marker:latest"
    for marker in ("v1", "v2"):
        await anyio.to_thread.run_sync(image_with_marker, cluster, marker, f"covey-marker:{marker}")
    await anyio.to_thread.run_sync(cluster.push, "covey-marker:v1", tag)
    specs = [JobSpec(tag, ("sh", "-c", "cat /marker; sleep 0.5")) for _ in range(30)]
    async with Client(
        cluster.docker_host, db=tmp_path / "db", options=Options(max_concurrent=4)
    ) as c:
        assert c.store is not None
        batch, ids = await c.start(specs)
        with anyio.fail_after(120):
            while sum(j.state.terminal for j in await c.store.jobs_by_id(ids)) < 4:
                await anyio.sleep(0.2)
        await anyio.to_thread.run_sync(
            cluster.push, "covey-marker:v2", tag
        )  # same tag, new program
        with anyio.fail_after(300):
            results = [await c.wait(j) for j in ids]
        assert [r.stdout for r in results] == [b"v1\n"] * 30
        digest, note = await c.store.pin(batch, tag) or (None, None)
        assert digest is not None and digest.startswith("sha256:"), note
        attempts = [a for j in ids for a in await c.store.attempts(j)]
        assert {a.image for a in attempts} == {f"{tag}@{digest}"}
    shown = covey_cli("--db", str(tmp_path / "db"), "show", "--json", ids[-1])
    assert json.loads(shown.stdout)["image"] == {
        "name": tag,
        "digest": digest,
        "pinned": True,
        "note": None,
    }


def test_a_slow_pull_is_pulling_not_pending_and_a_missing_image_fails_at_once(
    cluster, covey_cli, tmp_path: Path
) -> None:
    big = f"{cluster.registry}/covey-test/big:1"
    host = cluster.docker_host
    docker(host, "rm", "-f", "covey-big", check=False)
    docker(
        host,
        "run",
        "--name",
        "covey-big",
        "covey-test/busybox:latest",
        "sh",
        "-c",
        "dd if=/dev/urandom of=/blob bs=1M count=4 2>/dev/null",
    )
    docker(host, "commit", "covey-big", "covey-big:1")
    docker(host, "rm", "-f", "covey-big")
    cluster.push("covey-big:1", big)
    victim = cluster.workers[0]
    db = str(tmp_path / "db")
    with slow_link(cluster, victim, "6mbit"):  # ~6 s for 4 MB: far beyond --pending-timeout
        proc = covey_process(
            host,
            "--db",
            db,
            "run",
            "--pending-timeout",
            "1s",
            "--constraint",
            f"node.hostname=={victim.hostname}",
            big,
            "true",
        )
        seen: set[str] = set()
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            listed = covey_cli("--db", db, "ls", "--json")
            for line in listed.stdout.splitlines():
                row = json.loads(line)
                seen.add("pulling" if row.get("pulling") else row["state"])
            time.sleep(0.3)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "pulling" in seen, seen
    # an image the registry does not have: rejected in seconds, in the registry's words
    started = time.monotonic()
    missing = covey_cli(
        "--db", db, "run", f"{cluster.registry}/covey-test/nosuch:1", "true", docker_host=host
    )
    assert missing.returncode == 125, missing
    assert "manifest unknown" in missing.stderr or "not found" in missing.stderr, missing.stderr
    assert time.monotonic() - started < 20


async def test_node_events_record_ends_on_every_node(cluster, tmp_path: Path) -> None:
    """With --node-host for the workers, a zero exit on any node is recorded from its
    node's event, not found by a listing."""
    hosts = tuple(n.docker_host for n in cluster.workers)
    specs = [
        JobSpec(cluster.image, ("sleep", "1"), constraints=(f"node.hostname=={h}",))
        for h in per_node(cluster, 3)
    ]
    options = Options(node_hosts=hosts, max_concurrent=len(specs))
    async with Client(cluster.docker_host, db=tmp_path / "db", options=options) as c:
        assert c.store is not None
        with anyio.fail_after(120):
            results = [r async for r in c.map(specs)]
        assert all(r.ok for r in results), results
        sources = Counter()
        for r in results:
            history = await c.store.transitions(r.id)
            sources[(r.node, history[-1].source if history[-1].state == "succeeded" else "?")] += 1
        ends = {(node, "event"): 3 for node in (n.hostname for n in cluster.nodes)}
        assert dict(sources) == ends, sources
        assert len(c.context.watched) == 2


async def test_a_silent_node_engine_loses_no_job(cluster, tmp_path: Path) -> None:
    """The node whose events covey follows is killed while its jobs run: every job still
    ends recorded, once (lost there and retried elsewhere; the rest from events or polls)."""
    victim = cluster.workers[0]
    hosts = tuple(n.docker_host for n in cluster.workers)
    specs = [JobSpec(cluster.image, ("sh", "-c", "sleep 6; echo done")) for _ in range(9)]
    options = Options(node_hosts=hosts)
    async with Client(cluster.docker_host, db=tmp_path / "db", options=options) as c:
        assert c.store is not None
        _, ids = await c.start(specs)
        with anyio.fail_after(60):
            while not any(
                j.state is JobState.RUNNING and j.node == victim.hostname
                for j in await c.store.jobs_by_id(ids)
            ):
                await anyio.sleep(0.2)
        await anyio.to_thread.run_sync(cluster.kill_node, victim)
        with anyio.fail_after(240):
            results = [await c.wait(j) for j in ids]
        assert all(r.ok and r.stdout == b"done\n" for r in results), results
        for j in ids:
            ends = [t for t in await c.store.transitions(j) if t.state == "succeeded"]
            assert len(ends) == 1


async def _agent_ready(c: Client, nodes: int, timeout: float = 90) -> None:
    """covey's agent says hello from every other node (deployed at the first run)."""
    with anyio.fail_after(timeout):
        while len(c.context.agent_nodes) < nodes:
            await anyio.sleep(0.2)


async def test_the_agent_records_ends_on_every_node_and_prune_removes_it(
    cluster, covey_cli, tmp_path: Path
) -> None:
    """--agent: a global service forwards every node's events through the manager; an
    agent killed mid-batch costs no job; `covey prune` leaves nothing of it."""
    image = await anyio.to_thread.run_sync(cluster.agent_image)
    options = Options(agent_image=image, agent_socket=cluster.agent_socket, max_concurrent=9)
    db = tmp_path / "db"
    async with Client(cluster.docker_host, db=db, options=options) as c:
        assert c.store is not None
        await c.run(JobSpec(cluster.image, ("true",)))  # starts covey, which deploys the agent
        await _agent_ready(c, len(cluster.workers))
        specs = [
            JobSpec(cluster.image, ("sleep", "1"), constraints=(f"node.hostname=={h}",))
            for h in per_node(cluster, 3)
        ]
        with anyio.fail_after(120):
            results = [r async for r in c.map(specs)]
        assert all(r.ok for r in results), results
        sources = Counter()
        for r in results:
            last = (await c.store.transitions(r.id))[-1]
            sources[(r.node, last.source)] += 1
        assert dict(sources) == {(n.hostname, "event"): 3 for n in cluster.nodes}, sources
        # the agent on a worker dies while jobs run there: every job still ends, once
        victim = cluster.workers[0]
        slow = [
            JobSpec(cluster.image, ("sh", "-c", "sleep 3; echo done"),
                    constraints=(f"node.hostname=={victim.hostname}",))
            for _ in range(3)
        ]  # fmt: skip
        _, ids = await c.start(slow)
        with anyio.fail_after(60):
            while not all(j.state is JobState.RUNNING for j in await c.store.jobs_by_id(ids)):
                await anyio.sleep(0.2)
        agents = docker(
            victim.docker_host,
            "ps",
            "-q",
            "--filter",
            "label=com.docker.swarm.service.name=" + f"covey-agent-{c.store.id}",
        )
        docker(victim.docker_host, "kill", *agents.split())
        with anyio.fail_after(120):
            done = [await c.wait(j) for j in ids]
        assert all(r.ok and r.stdout == b"done\n" for r in done), done
        for j in ids:
            assert [t.state for t in await c.store.transitions(j)].count("succeeded") == 1
        store_id = c.store.id
    # covey leaves its agent running between runs; prune removes it and its config
    label = f"covey.store={store_id}"
    assert docker(cluster.docker_host, "service", "ls", "-q", "--filter", f"label={label}")
    pruned = covey_cli("--db", str(db), "prune", docker_host=cluster.docker_host)
    assert pruned.returncode == 0, pruned
    assert docker(cluster.docker_host, "service", "ls", "-q", "--filter", f"label={label}") == ""
    assert docker(cluster.docker_host, "config", "ls", "-q", "--filter", f"label={label}") == ""
