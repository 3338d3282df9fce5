"""Multi-node: exit -> recorded per node on a private 3-node cluster, and the cost of it.

``python -m bench.multinode [--jobs-per-node 10] [--rounds 2]`` starts (and stops) the
cluster ``bench-mn`` with ``scripts/cluster.sh`` (one manager, two workers on this machine),
then runs the same batch once per variant:

- ``polling``: covey talks to the manager only; a job's end on a worker is found by a task
  listing (the manager's event stream carries only its own node's containers);
- ``node-events``: ``--node-host`` names each worker's engine (covey.watcher follows their
  container events as it follows the manager's);
- ``agent``: ``--agent IMAGE`` (covey.agent: a global service forwarding each node's events
  through the agent service's log stream on the manager; deployed, and heard from every node,
  before the batch starts).

A batch: ``--jobs-per-node`` jobs ``sleep 1`` per node (``node.hostname==H``), all admitted at
once, through covey's Python API in this process. The exit of each job is the ``die`` event's
time on its own node's engine (this process follows all three); its recorded end is the
store's terminal transition. Requests are covey's own count against the manager (the
node engines' are counted apart). Results: ``bench/results/multinode.json`` and the table
in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.api import Docker, socket_path
from bench.covey_run import _percentile, fold_ids, recorded_ends

REPO = Path(__file__).resolve().parent.parent
CLUSTER = "bench-mn"
VARIANTS = ("polling", "node-events", "agent")


def cluster(command: str, name: str) -> str:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "cluster.sh"), command, "--name", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cluster.sh {command}: {done.stderr[-2000:]}")
    return done.stdout


def exports(out: str) -> dict[str, str]:
    return {
        key.removeprefix("export "): value
        for key, _, value in (line.partition("=") for line in out.splitlines())
        if key.startswith("export ")
    }


def parse_up(out: str) -> tuple[str, dict[str, str], str]:
    """(manager's DOCKER_HOST, hostname -> DOCKER_HOST of every node, registry image)."""
    nodes: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("NODE "):
            _, hostname, _, host, _ = line.split()
            nodes[hostname] = host
    found = exports(out)
    registry = found.get("COVEY_REGISTRY")
    image = f"{registry}/covey-test/busybox:latest" if registry else "covey-test/busybox:latest"
    return found["DOCKER_HOST"], nodes, image


async def follow_dies(host: str, into: dict[str, float], ready: asyncio.Event) -> None:
    """attempt id -> the die event's time, from one node's own engine."""
    filters = {"type": ["container"], "event": ["die"], "label": ["covey.attempt"]}
    async with Docker(socket_path(host)) as docker:
        stream = docker.events(filters)
        ready.set()
        async for event in stream:
            attrs = event.get("Actor", {}).get("Attributes", {})
            into[attrs["covey.attempt"]] = int(event["timeNano"]) / 1e9


async def one_batch(
    variant: str,
    manager: str,
    nodes: dict[str, str],
    image: str,
    per_node: int,
    work: Path,
    agent: tuple[str, str],
) -> dict[str, Any]:
    import covey

    dies: dict[str, float] = {}
    readies = [asyncio.Event() for _ in nodes]
    followers = [
        asyncio.create_task(follow_dies(host, dies, ready))
        for host, ready in zip(nodes.values(), readies, strict=True)
    ]
    await asyncio.gather(*(r.wait() for r in readies))
    await asyncio.sleep(0.2)  # the streams are open on the engines' side too
    options = covey.Options(max_concurrent=per_node * len(nodes))
    if variant == "node-events":
        options.node_hosts = tuple(h for h in nodes.values() if h != manager)
    if variant == "agent":
        options.agent_image, options.agent_socket = agent
    specs = [
        covey.JobSpec(image, ("sleep", "1"), constraints=(f"node.hostname=={hostname}",))
        for hostname in nodes
        for _ in range(per_node)
    ]
    db = work / f"{variant}.db"
    states: Counter[str] = Counter()
    async with covey.Client(manager, db=db, options=options) as client:
        await client.run(covey.JobSpec(image, ("true",)))  # covey up (and its agent deployed)
        if variant == "agent":
            deadline = time.monotonic() + 120
            while len(client.context.agent_nodes) < len(nodes) - 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("the agent was not heard from every node in 120 s")
                await asyncio.sleep(0.2)
        assert client.engine is not None
        before = dict(client.engine.requests)
        t0 = time.monotonic()
        async for result in client.map(specs):
            states[result.state.value] += 1
        wall = time.monotonic() - t0
        counted = Counter(client.engine.requests)
        counted.subtract(before)  # the batch's own requests, not the warm-up's
        requests = fold_ids({k: v for k, v in counted.items() if v > 0})
    await asyncio.sleep(0.5)
    for task in followers:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*followers)
    return _measure(variant, db, dies, states, wall, requests, len(specs))


def _measure(
    variant: str,
    db: Path,
    dies: dict[str, float],
    states: Counter[str],
    wall: float,
    requests: dict[str, int],
    n: int,
) -> dict[str, Any]:
    import sqlite3

    ends = recorded_ends(db)
    con = sqlite3.connect(db)
    try:
        where = dict(con.execute("SELECT id, node FROM attempts").fetchall())
    finally:
        con.close()
    per_node: dict[str, list[float]] = defaultdict(list)
    sources: dict[str, Counter[str]] = defaultdict(Counter)
    for attempt, (at, source, _) in ends.items():
        if attempt in dies:
            node = where.get(attempt) or "?"
            per_node[node].append(at - dies[attempt])
            sources[node][source] += 1
    return {
        "variant": variant,
        "jobs": n,
        "states": dict(states),
        "wall_s": round(wall, 2),
        "requests_per_job": round(sum(requests.values()) / n, 2),
        "requests": requests,
        "nodes": {
            node: {
                "p50_ms": _ms(_percentile(values, 50)),
                "p95_ms": _ms(_percentile(values, 95)),
                "max_ms": _ms(max(values)),
                "samples": len(values),
                "recorded_by": dict(sources[node]),
            }
            for node, values in sorted(per_node.items())
        },
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(1000 * value, 1)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    out = cluster("up", args.cluster)
    try:
        manager, nodes, image = parse_up(out)
        agent = (exports(cluster("agent-image", args.cluster))["COVEY_AGENT_IMAGE"],
                 exports(out)["COVEY_AGENT_SOCKET"])  # fmt: skip
        runs = []
        with tempfile.TemporaryDirectory(prefix="covey-bench-mn-") as tmp:
            for k in range(args.rounds):
                for variant in VARIANTS:
                    work = Path(tmp) / f"{k}"
                    work.mkdir(exist_ok=True)
                    run = await one_batch(
                        variant, manager, nodes, image, args.jobs_per_node, work, agent
                    )
                    print(json.dumps(run), file=sys.stderr)
                    runs.append(run)
    finally:
        if not args.keep_cluster:
            cluster("down", args.cluster)
    return {
        "command": getattr(args, "command", None)
        or "python -m bench.multinode " + " ".join(sys.argv[1:]),
        "cluster": f"{len(nodes)} nodes (scripts/cluster.sh, one machine)",
        "image": image,
        "runs": runs,
        "summary": summarize(runs),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant and node: the median of the rounds' p50 and the worst p95."""
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        nodes: dict[str, Any] = {}
        for node in sorted({n for r in mine for n in r["nodes"]}):
            p50s = sorted(r["nodes"][node]["p50_ms"] for r in mine if node in r["nodes"])
            p95s = [r["nodes"][node]["p95_ms"] for r in mine if node in r["nodes"]]
            nodes[node] = {"p50_ms": p50s[len(p50s) // 2], "p95_ms": max(p95s)}
        out[variant] = {
            "nodes": nodes,
            "requests_per_job": max(r["requests_per_job"] for r in mine),
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"`{result['command']}` ({result['cluster']}; {result['runs'][0]['jobs']} jobs"
        " `sleep 1` per batch, spread evenly over the nodes, all at once):",
        "",
        "| variant | node | exit → recorded p50 | p95 | manager requests per job |",
        "|---|---|---|---|---|",
    ]
    for variant, data in result["summary"].items():
        for node, figures in data["nodes"].items():
            lines.append(
                f"| {variant} | {node} | {figures['p50_ms']:.0f} ms | {figures['p95_ms']:.0f} ms"
                f" | {data['requests_per_job']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.multinode", description=__doc__)
    p.add_argument("--jobs-per-node", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--cluster", default=CLUSTER)
    p.add_argument("--keep-cluster", action="store_true")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "multinode.json")
    args = p.parse_args()
    result = asyncio.run(measure(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
