"""Pipelines on the private engine: how soon a dependent is admitted, what a reduce costs.

The two targets of the pipelines issue, each measured inside one run (covey in a child
process of its own, ``python -m bench.pipelines ...``, through the counting proxy):

- ``chains`` (and ``chains-capped``): ``C`` independent chains ``a_i -> b_i``
  (``needs={"a": "each"}``), jobs ``true``. Per dependent ``b_i``, from the store after the
  run: when ``a_i``'s end was recorded (its terminal transition), when its logs were saved
  (``b_i``'s own ``queued`` transition, "needs met": the gate runs in that commit) and when
  ``b_i`` was admitted (its ``pending`` transition). ``chains`` lets every job run at once
  (``--max-concurrent`` = all jobs) so that a released dependent never waits for a slot;
  ``chains-capped`` keeps covey's default cap, where it does.
- ``mapreduce``: a ``split`` job prints N lines, ``map`` fans out over them (one ``echo`` per
  line), ``reduce`` reads every map's stdout as ``/covey/inputs/map/<i>`` (swarm configs),
  sums them and checks the sum. The reduce's cost beyond its own run, inside the same run:
  (batch start -> batch settled) - (batch start -> last map done: its logs recorded) - the
  reduce container's own run (``start`` -> ``die`` events of the engine), broken down from
  the store's transitions, the proxy's request log and the engine's events.
- ``map``: the same split + map without the reduce, for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import resource
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.api import ApiError, Docker
from bench.covey_run import TERMINAL, _percentile, fold_ids
from bench.harness import APPROACH_LABEL, RUN_LABEL
from bench.proxy import ProxyProcess

KINDS = ("chains", "chains-capped", "mapreduce", "map")
IMAGE = "busybox:latest"
ATTEMPT_LABEL = "covey.attempt"
REDUCE = (
    "n=$(ls /covey/inputs/map | grep -c '^[0-9]*$');"
    " s=$(cat /covey/inputs/map/[0-9]* | awk '{s += $1} END {print s}');"
    ' echo "$n $s"; [ "$n" = @N@ ] && [ "$s" = @SUM@ ]'
)


def expected(n: int) -> str:
    """What the reduce prints when it read all N numbers: ``"N SUM"``."""
    return f"{n} {n * (n + 1) // 2}"


# -- the child: covey, and nothing else ---------------------------------------------------------


def build(kind: str, n: int, run_id: str) -> Any:
    import covey

    labels = ((RUN_LABEL, run_id), (APPROACH_LABEL, f"pipeline-{kind}"))

    def spec(*command: str) -> covey.JobSpec:
        return covey.JobSpec(image=IMAGE, command=command, labels=labels)

    p = covey.Pipeline()
    if kind.startswith("chains"):
        p.add("a", [spec("true")] * n)
        p.add("b", [spec("true")] * n, needs={"a": "each"})
        return p
    p.add("split", spec("seq", "1", str(n)))
    p.add("map", spec("sh", "-c", 'echo "$COVEY_ITEM"'), for_each="split", needs=["split"])
    if kind == "mapreduce":
        script = REDUCE.replace("@N@", str(n)).replace("@SUM@", str(n * (n + 1) // 2))
        p.add("reduce", spec("sh", "-c", script), needs=["map"], inputs=["map"])
    return p


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    import covey

    pipeline = build(args.kind, args.n, args.run_id)
    options = covey.Options()
    if args.max_concurrent:
        options.max_concurrent = args.max_concurrent
    yielded: list[dict[str, Any]] = []
    states: Counter[str] = Counter()
    async with covey.Client(args.docker_host, db=args.db, options=options) as client:
        cpu0 = time.process_time()
        t_start = time.time()
        async for result in client.run_batch(pipeline, name=f"bench-{args.kind}"):
            yielded.append(
                {
                    "t": time.time(),
                    "stage": result.stage,
                    "index": result.index,
                    "state": result.state.value,
                    "stdout": result.stdout.decode(errors="replace")[:200]
                    if result.stage in ("reduce", "split") and result.index is None
                    else None,
                }
            )
            states[result.state.value] += 1
        t_end = time.time()
        cpu = time.process_time() - cpu0
        counters = vars(client.context.counters).copy()
        assert client.engine is not None
        requests = fold_ids(client.engine.requests)
        cap = client.context.governor.max_concurrent
    t_exit = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "t_start": t_start,
        "t_end": t_end,
        "t_exit": t_exit,
        "cpu_s": cpu,
        "process_cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "yielded": yielded,
        "states": dict(states),
        "counters": counters,
        "covey_requests": requests,
        "max_concurrent": cap,
    }


def child_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docker-host", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--max-concurrent", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    Path(args.out).write_text(json.dumps(asyncio.run(_child(args))))


# -- the engine's events --------------------------------------------------------------------------


@dataclass
class EngineEvents:
    """The run's container ``start``/``die`` events (by label) and every service and config
    ``create``/``remove`` of the engine (swarm objects' events carry only their name; the
    private engine runs nothing else)."""

    run_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0

    async def follow(self, docker: Docker, ready: asyncio.Event, swarm: bool) -> None:
        if swarm:
            filters = {"type": ["service", "config"], "event": ["create", "remove"]}
        else:
            filters = {
                "type": ["container"],
                "event": ["start", "die"],
                "label": [f"{RUN_LABEL}={self.run_id}"],
            }
        while True:
            try:
                stream = docker.events(filters)
                ready.set()
                async for raw in stream:
                    actor = raw.get("Actor") or {}
                    attrs = actor.get("Attributes") or {}
                    self.events.append(
                        {
                            "type": raw.get("Type"),
                            "action": raw.get("Action"),
                            "t": int(raw.get("timeNano") or 0) / 1e9,
                            "id": actor.get("ID"),
                            "name": attrs.get("name"),
                            "attempt": attrs.get(ATTEMPT_LABEL),
                            "approach": attrs.get(APPROACH_LABEL),
                        }
                    )
            except Exception as exc:  # ApiError, aiohttp's ClientError, OSError, timeouts
                self.dropped += 1
                print(f"bench: event stream dropped ({type(exc).__name__}); resubscribing")
                await asyncio.sleep(0.2)

    @contextlib.asynccontextmanager
    async def following(self, docker: Docker) -> Any:
        readies = [asyncio.Event(), asyncio.Event()]
        tasks = [
            asyncio.create_task(self.follow(docker, readies[0], swarm=False)),
            asyncio.create_task(self.follow(docker, readies[1], swarm=True)),
        ]
        try:
            for r in readies:
                await r.wait()
            await asyncio.sleep(0.3)
            yield self
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def find(self, type_: str, action: str, **match: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["type"] == type_
            and e["action"] == action
            and all(e.get(k) == v for k, v in match.items())
        ]


# -- what the store says --------------------------------------------------------------------------


@dataclass
class StoreView:
    """The batch's jobs, their transitions and attempts, read once after the run."""

    jobs: dict[str, dict[str, Any]]  # id -> name, stage, idx, state
    transitions: dict[str, list[tuple[str, float, str | None]]]  # id -> (state, at, detail)
    attempts: dict[str, list[dict[str, Any]]]  # job id -> attempts in order
    needs: list[tuple[str, str, str]]  # (stage, need, condition)

    @classmethod
    def read(cls, db: Path) -> StoreView:
        con = sqlite3.connect(db)
        try:
            jobs = {
                r[0]: {"name": r[1], "stage": r[2], "idx": r[3], "state": r[4]}
                for r in con.execute("SELECT id, name, stage, idx, state FROM jobs")
            }
            transitions: dict[str, list[tuple[str, float, str | None]]] = {}
            for job_id, state, at, detail in con.execute(
                "SELECT job_id, state, at, detail FROM transitions ORDER BY id"
            ):
                transitions.setdefault(job_id, []).append((state, at, detail))
            attempts: dict[str, list[dict[str, Any]]] = {}
            for row in con.execute(
                "SELECT id, job_id, service, created, started, ended FROM attempts ORDER BY n"
            ):
                attempts.setdefault(row[1], []).append(
                    {
                        "id": row[0],
                        "service": row[2],
                        "created": row[3],
                        "started": row[4],
                        "ended": row[5],
                    }
                )
            needs = [
                (r[0], r[1], r[2]) for r in con.execute("SELECT stage, need, condition FROM needs")
            ]
        finally:
            con.close()
        return cls(jobs, transitions, attempts, needs)

    def stage(self, name: str) -> dict[int | None, str]:
        """Instance index -> job id."""
        return {j["idx"]: i for i, j in self.jobs.items() if j["stage"] == name}

    def at(self, job_id: str, state: str, *, last: bool = False) -> float | None:
        hits = [at for s, at, _ in self.transitions.get(job_id, []) if s == state]
        if not hits:
            return None
        return hits[-1] if last else hits[0]

    def ended(self, job_id: str) -> float | None:
        """When the job's (last) end was recorded: its last terminal transition."""
        hits = [at for s, at, _ in self.transitions.get(job_id, []) if s in TERMINAL]
        return hits[-1] if hits else None

    def released(self, job_id: str) -> float | None:
        """When the gate released it (``waiting`` -> ``queued``, "needs met")."""
        hits = [
            at
            for s, at, detail in self.transitions.get(job_id, [])
            if s == "queued" and detail == "needs met"
        ]
        return hits[0] if hits else None

    def need_jobs(self, job_id: str) -> list[str]:
        """The jobs ``job_id`` waited for (for ``each`` the paired instance)."""
        job = self.jobs[job_id]
        out: list[str] = []
        for stage, need, condition in self.needs:
            if stage != job["stage"]:
                continue
            instances = self.stage(need)
            if condition == "each":
                out += [instances[job["idx"]]] if job["idx"] in instances else []
            else:
                out += list(instances.values())
        return out

    def dependents(self, stage: str) -> list[dict[str, float | None]]:
        """Per job of ``stage``: its last need's end recorded, released, admitted."""
        out = []
        for job_id in self.stage(stage).values():
            ends = [self.ended(j) for j in self.need_jobs(job_id)]
            known = [e for e in ends if e is not None]
            out.append(
                {
                    "need_ended": max(known) if known and len(known) == len(ends) else None,
                    "released": self.released(job_id),
                    "admitted": self.at(job_id, "pending"),
                }
            )
        return out


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "p50": _ms(_percentile(values, 50)),
        "p95": _ms(_percentile(values, 95)),
        "max": _ms(max(values) if values else None),
        "min": _ms(min(values) if values else None),
        "samples": len(values),
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(1000 * value, 1)


def _diffs(rows: list[dict[str, float | None]], a: str, b: str) -> list[float]:
    out = []
    for r in rows:
        x, y = r[a], r[b]
        if x is not None and y is not None:
            out.append(y - x)
    return out


def admission(
    view: StoreView,
    stage: str,
    events: EngineEvents,
    requests: list[tuple[float, str, str]],
) -> dict[str, Any]:
    rows = view.dependents(stage)
    return {
        "dependents": len(rows),
        "need_ended_to_admitted_ms": _stats(_diffs(rows, "need_ended", "admitted")),
        "released_to_admitted_ms": _stats(_diffs(rows, "released", "admitted")),
        "need_ended_to_released_ms": _stats(_diffs(rows, "need_ended", "released")),
        "need_steps_ms": need_steps(view, stage, events, requests),
    }


NEED_STEPS = (
    ("died", "end recorded"),
    ("end recorded", "logs requested"),
    ("logs requested", "released"),
    ("released", "admitted"),
)


def need_steps(
    view: StoreView,
    stage: str,
    events: EngineEvents,
    requests: list[tuple[float, str, str]],
) -> dict[str, Any]:
    """For dependents with one need (chains): the need's container died (engine event) ->
    its end recorded -> its logs requested (proxy) -> the dependent released (the need's
    logs saved) -> the dependent admitted; p50/p95/max of each step."""
    logs_asked: dict[str, float] = {}
    for t, key, path in requests:
        if key == "GET /containers/{id}/logs":
            logs_asked.setdefault(path.split("/")[2], t)
    dies = {e["attempt"]: e for e in events.find("container", "die")}
    rows: list[dict[str, float | None]] = []
    for job_id in view.stage(stage).values():
        needs = view.need_jobs(job_id)
        if len(needs) != 1 or not view.attempts.get(needs[0]):
            continue
        attempt = view.attempts[needs[0]][-1]
        die = dies.get(attempt["id"])
        rows.append(
            {
                "died": die["t"] if die else None,
                "end recorded": view.ended(needs[0]),
                "logs requested": _by_prefix(logs_asked, die["id"]) if die else None,
                "released": view.released(job_id),
                "admitted": view.at(job_id, "pending"),
            }
        )
    return {f"{a} -> {b}": _stats(_diffs(rows, a, b)) for a, b in NEED_STEPS}


def _by_prefix(by_id: dict[str, float], full: str) -> float | None:
    """A container named by its full id or a prefix of it."""
    if full in by_id:
        return by_id[full]
    return next((t for k, t in by_id.items() if k and full.startswith(k)), None)


def reduce_breakdown(
    view: StoreView,
    child: dict[str, Any],
    events: EngineEvents,
    requests: list[tuple[float, str, str]],
) -> dict[str, Any]:
    """Where the time goes from the last map's end to the batch settled; see the module."""
    t0 = child["t_start"]
    (reduce_id,) = view.stage("reduce").values()
    maps = list(view.stage("map").values())
    map_ends = [e for e in (view.ended(j) for j in maps) if e is not None]
    attempt = view.attempts[reduce_id][-1]
    t_end_map = max(map_ends)
    t_released = view.released(reduce_id)
    t_admitted = view.at(reduce_id, "pending", last=True)
    assert t_released is not None
    assert t_admitted is not None
    configs = [t for t, key, _ in requests if key == "POST /configs/create" and t >= t_admitted]
    creates = [t for t, key, _ in requests if key == "POST /services/create" and t >= t_admitted]
    svc = events.find("service", "create", name=attempt["service"])
    svc_gone = events.find("service", "remove", name=attempt["service"])
    prefix = f"covey-{attempt['id']}-in-"
    cfg_gone = [
        e["t"] for e in events.find("config", "remove") if (e["name"] or "").startswith(prefix)
    ]
    start = events.find("container", "start", attempt=attempt["id"])
    die = events.find("container", "die", attempt=attempt["id"])
    t_start_c = start[0]["t"] if start else attempt["started"]
    t_die = die[-1]["t"] if die else attempt["ended"]
    log_reads = [t for t, key, _ in requests if key == "GET /containers/{id}/logs" and t >= t_die]
    removes = [t for t, key, _ in requests if key == "DELETE /services/{id}" and t >= t_die]
    t_recorded = view.ended(reduce_id)
    last_map_yield = max(y["t"] for y in child["yielded"] if y["stage"] == "map")
    reduce_yield = next((y["t"] for y in child["yielded"] if y["stage"] == "reduce"), None)
    marks: list[tuple[str, float | None]] = [
        ("last map instance's end recorded", t_end_map),
        ("its logs recorded = reduce released (`queued`, same commit)", t_released),
        ("reduce admitted (`pending`)", t_admitted),
        ("first input config create sent (inputs read from the store)", min(configs, default=None)),
        ("last input config create sent", max(configs, default=None)),
        ("service create sent", creates[0] if creates else None),
        ("service created (engine event)", svc[0]["t"] if svc else None),
        ("reduce container started (engine event)", t_start_c),
        ("reduce container died (engine event)", t_die),
        ("reduce's end recorded", t_recorded),
        ("reduce's logs requested", log_reads[0] if log_reads else None),
        ("reduce's service remove sent (its logs saved)", removes[0] if removes else None),
        ("reduce's service removed (engine event)", svc_gone[0]["t"] if svc_gone else None),
        ("its last input config removed (engine event)", max(cfg_gone, default=None)),
        ("reduce's result yielded by `run_batch`", reduce_yield),
        ("batch settled (`run_batch` returned)", child["t_end"]),
    ]
    # in the order they happened (removal and the result's news may overlap)
    marks.sort(key=lambda m: math.inf if m[1] is None else m[1])
    steps = []
    prev: float | None = None
    for label, t in marks:
        steps.append(
            {
                "mark": label,
                "since_start_s": None if t is None else round(t - t0, 3),
                "step_ms": None if t is None or prev is None else _ms(t - prev),
            }
        )
        if t is not None:
            prev = t
    run_s = t_die - t_start_c
    overhead = child["t_end"] - t_released - run_s
    out_reduce: dict[str, Any] = next((y for y in child["yielded"] if y["stage"] == "reduce"), {})
    return {
        "map_wall_s": t_released - t0,
        "total_wall_s": child["t_end"] - t0,
        "reduce_run_s": run_s,
        "overhead_s": overhead,
        "overhead_from_map_end_s": child["t_end"] - t_end_map - run_s,
        "overhead_parts_ms": {
            "released -> admitted": _ms(t_admitted - t_released),
            "admitted -> container started": _ms(t_start_c - t_admitted),
            "died -> batch settled": _ms(child["t_end"] - t_die),
        },
        "last_map_result_yielded_s": last_map_yield - t0,
        "input_configs_created": len(configs),
        "reduce_state": out_reduce.get("state"),
        "reduce_stdout": (out_reduce.get("stdout") or "").strip(),
        "reduce_expected": None,
        "steps": steps,
        "client_exit_after_settled_s": child["t_exit"] - child["t_end"],
        "lone_job": lone_job(view, "split", events, requests, child["t_start"]),
    }


def lone_job(
    view: StoreView,
    stage: str,
    events: EngineEvents,
    requests: list[tuple[float, str, str]],
    t0: float,
) -> dict[str, Any]:
    """The engine's own latency for one service on a quiet engine, no inputs: the batch's
    first job (``split``, alone on the engine), its create request -> its container's start."""
    (job_id,) = view.stage(stage).values()
    attempt = view.attempts[job_id][0]
    creates = [t for t, key, _ in requests if key == "POST /services/create" and t >= t0]
    start = events.find("container", "start", attempt=attempt["id"])
    die = events.find("container", "die", attempt=attempt["id"])
    if not creates or not start:
        return {}
    return {
        "create_sent_to_started_ms": _ms(start[0]["t"] - creates[0]),
        "admitted_to_started_ms": _ms(start[0]["t"] - (view.at(job_id, "pending") or 0)),
        "run_ms": _ms(die[-1]["t"] - start[0]["t"]) if die else None,
    }


# -- one kind, measured ---------------------------------------------------------------------------


async def run(
    kind: str,
    n: int,
    *,
    proxy: ProxyProcess,
    docker: Docker,
    run_id: str,
    workdir: Path,
    events: EngineEvents,
    max_concurrent: int = 0,
) -> dict[str, Any]:
    db, out = workdir / f"pipeline-{kind}.db", workdir / f"pipeline-{kind}.json"
    for stale in (db, out):
        stale.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "bench.pipelines",
        "--docker-host",
        proxy.docker_host,
        "--db",
        str(db),
        "--kind",
        kind,
        "--n",
        str(n),
        "--run-id",
        run_id,
        "--out",
        str(out),
        "--max-concurrent",
        str(max_concurrent),
    ]
    proc = await asyncio.create_subprocess_exec(*cmd)
    if await proc.wait() != 0:
        raise RuntimeError(f"covey's pipeline child failed (exit {proc.returncode})")
    child = json.loads(out.read_text())
    counts = await proxy.counts()
    requests = await proxy.request_log()
    await asyncio.sleep(0.5)  # the last events (a remove) may still be on their way
    leftover = await leftover_configs(docker)
    view = StoreView.read(db)
    jobs = len(view.jobs)
    result: dict[str, Any] = {
        "kind": kind,
        "n": n,
        "jobs": jobs,
        "wall_s": child["t_end"] - child["t_start"],
        "states": child["states"],
        "api_requests": sum(counts.values()),
        "api_requests_per_job": sum(counts.values()) / jobs,
        "api_by_kind": counts,
        "configs_left_after_exit": leftover,
        "covey": {
            "cpu_s": child["cpu_s"],
            "cpu_ms_per_job": 1000 * child["cpu_s"] / jobs,
            "process_cpu_s": child["process_cpu_s"],
            "peak_rss_bytes": child["peak_rss_bytes"],
            "counters": child["counters"],
            "own_request_count": child["covey_requests"],
            "max_concurrent": child["max_concurrent"],
        },
    }
    if kind.startswith("chains"):
        result["admission"] = admission(view, "b", events, requests)
    else:
        result["fan_out"] = fan_out(view)
    if kind == "mapreduce":
        b = reduce_breakdown(view, child, events, requests)
        b["reduce_expected"] = expected(n)
        result["reduce"] = b
    return result


async def leftover_configs(docker: Docker) -> int:
    """covey's configs still on the engine once its process has exited; removed here so that
    the next run starts on a clean engine (the private engine holds nothing else)."""
    configs = await docker.get("configs")
    ours = [c for c in configs if (c.get("Spec") or {}).get("Name", "").startswith("covey-")]
    for c in ours:
        with contextlib.suppress(ApiError):
            await docker.delete(f"configs/{c['ID']}")
    return len(ours)


def fan_out(view: StoreView) -> dict[str, Any]:
    """split's logs recorded (its instances made and released in that commit) -> the first
    and the last map instance admitted."""
    (split,) = view.stage("split").values()
    maps = list(view.stage("map").values())
    made = [view.released(j) for j in maps]
    admitted = sorted(a for a in (view.at(j, "pending") for j in maps) if a is not None)
    t_made = min((m for m in made if m is not None), default=None)
    if t_made is None or not admitted:
        return {"instances": len(maps)}
    return {
        "instances": len(maps),
        "split_ended_to_made_ms": _ms(t_made - (view.ended(split) or t_made)),
        "made_to_first_admitted_ms": _ms(admitted[0] - t_made),
        "made_to_last_admitted_s": round(admitted[-1] - t_made, 3),
    }


if __name__ == "__main__":
    child_main()
