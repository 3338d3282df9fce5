"""covey under test: ``Client.map`` in a child process of its own.

The child (``python -m bench.covey_run ...``) does nothing but run the batch through covey's
public API and report its own wall time, CPU (``time.process_time`` around the run, and the
whole process's ``getrusage`` including interpreter start and imports) and peak RSS. The
parent (:func:`run`) keeps following die events meanwhile and afterwards joins them with the
store's ``transitions`` table: exit -> recorded latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import sqlite3
import statistics
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.harness import APPROACH_LABEL, RUN_LABEL

TERMINAL = ("succeeded", "failed", "timed_out", "rejected", "lost", "cancelled")
_ID_TAIL = re.compile(r" (covey-[0-9a-z-]+|[0-9a-z]{20,})$")


def fold_ids(requests: Mapping[str, int]) -> dict[str, int]:
    """Request keys that name a service or container ('GET logs of covey-ab12-1'): fold them."""
    out: Counter[str] = Counter()
    for key, count in requests.items():
        out[_ID_TAIL.sub(" {id}", key)] += count
    return dict(out)


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    import covey

    labels = ((RUN_LABEL, args.run_id), (APPROACH_LABEL, "covey"))
    specs = [
        covey.JobSpec(image=args.image, command=tuple(args.command), labels=labels)
        for _ in range(args.n)
    ]
    options = covey.Options()
    if args.max_concurrent:
        options.max_concurrent = args.max_concurrent
    completions: list[float] = []
    states: Counter[str] = Counter()
    t_start = time.time()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    async with covey.Client(args.docker_host, db=args.db, options=options) as client:
        async for result in client.map(specs):
            completions.append(time.monotonic() - t0)
            states[result.state.value] += 1
        wall = time.monotonic() - t0
        counters = vars(client.context.counters).copy()
        assert client.engine is not None
        requests = fold_ids(client.engine.requests)
        cap = client.context.governor.max_concurrent
    cpu = time.process_time() - cpu0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "t_start": t_start,
        "wall_s": wall,
        "cpu_s": cpu,
        "process_cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "yielded": completions,
        "states": dict(states),
        "counters": counters,
        "covey_requests": requests,
        "max_concurrent": cap,
    }


def profile_text(profiler: Any) -> str:
    """The call tree (idle time in the event loop's poll included) and the flat self times."""
    tree = profiler.output_text(
        unicode=True, color=False, processor_options={"filter_threshold": 0.002}
    )
    flat = profiler.output_text(unicode=True, color=False, flat=True)
    return tree + "\n\nFlat, by self time:\n" + "\n".join(flat.splitlines()[:60]) + "\n"


def child_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docker-host", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--image", default="busybox:latest")
    parser.add_argument("--max-concurrent", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--profile", default="")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="disabled", interval=0.001)
        profiler.start()
        data = asyncio.run(_child(args))
        profiler.stop()
        Path(args.profile).write_text(profile_text(profiler))
        data["profiled"] = True
    else:
        data = asyncio.run(_child(args))
    Path(args.out).write_text(json.dumps(data))


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def recorded_ends(db: Path) -> dict[str, tuple[float, str, str]]:
    """attempt id -> (time recorded, source, state) of each attempt's end in the store."""
    con = sqlite3.connect(db)
    try:
        marks = ",".join("?" * len(TERMINAL))
        rows = con.execute(
            "SELECT attempt_id, at, source, state FROM transitions"
            f" WHERE attempt_id IS NOT NULL AND state IN ({marks}, 'retrying') ORDER BY id",
            TERMINAL,
        ).fetchall()
    finally:
        con.close()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _fresh(workdir: Path, tag: str) -> tuple[Path, Path]:
    for stale in workdir.glob(f"covey-{tag}.*"):
        stale.unlink()
    return workdir / f"covey-{tag}.db", workdir / f"covey-{tag}.json"


async def run(
    docker_host: str,
    run_id: str,
    n: int,
    command: list[str],
    workdir: Path,
    tag: str,
    die_events: list[dict[str, Any]],
    *,
    max_concurrent: int = 0,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Run covey's child and measure it; ``die_events`` is the harness's live list."""
    db, out = _fresh(workdir, tag)
    cmd = [
        sys.executable,
        "-m",
        "bench.covey_run",
        "--docker-host",
        docker_host,
        "--db",
        str(db),
        "--n",
        str(n),
        "--run-id",
        run_id,
        "--out",
        str(out),
        "--max-concurrent",
        str(max_concurrent),
    ]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    proc = await asyncio.create_subprocess_exec(*cmd, "--", *command)
    if await proc.wait() != 0:
        raise RuntimeError(f"covey's benchmark child failed (exit {proc.returncode})")
    child = json.loads(out.read_text())
    ends = recorded_ends(db)
    t_start = child["t_start"]
    latencies: list[float] = []
    by_source: Counter[str] = Counter(source for _, source, _ in ends.values())
    seen_dies = 0
    for event in die_events:
        if event["approach"] != "covey" or event["attempt"] not in ends:
            continue
        seen_dies += 1
        at = ends[event["attempt"]][0]
        latencies.append(at - event["time_nano"] / 1e9)
    completions = sorted(at - t_start for at, _, state in ends.values() if state in TERMINAL)
    return {
        "approach": "covey",
        "n": n,
        "wall_s": child["wall_s"],
        "completions": completions,
        "succeeded": child["states"].get("succeeded", 0),
        "failed": n - child["states"].get("succeeded", 0),
        "states": child["states"],
        "client_cpu_ms_per_job": 1000 * child["cpu_s"] / n,
        "covey": {
            "cpu_s": child["cpu_s"],
            "cpu_ms_per_job": 1000 * child["cpu_s"] / n,
            "process_cpu_s": child["process_cpu_s"],
            "peak_rss_bytes": child["peak_rss_bytes"],
            "exit_to_recorded_ms": {
                "p50": _ms(_percentile(latencies, 50)),
                "p95": _ms(_percentile(latencies, 95)),
                "max": _ms(max(latencies) if latencies else None),
                "samples": len(latencies),
            },
            "recorded_by_source": dict(by_source),
            "die_events_seen": seen_dies,
            "counters": child["counters"],
            "own_request_count": child["covey_requests"],
            "max_concurrent": child["max_concurrent"],
            "profiled": bool(child.get("profiled")),
        },
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(1000 * value, 1)


if __name__ == "__main__":
    child_main()
