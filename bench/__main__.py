"""``python -m bench``: run every approach side by side, then write JSON, a plot and a table.

Examples::

    python -m bench                      # full run on a private engine named "bench"
    python -m bench --smoke              # N=6, sequential N=2, scale 200 jobs: < 60 s
    python -m bench --docker-host unix:///path/docker.sock --n 50 --variants true
    python -m bench --only pipelines     # only the pipeline benchmark; merged into the results
    python -m bench --only multinode     # exit -> recorded per node on a 3-node cluster
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import secrets
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import (
    RESULTS_SCHEMA,
    baselines,
    covey_run,
    harness,
    minimal,
    multinode,
    pipelines,
    report,
    scale,
)
from bench.api import Docker, socket_path
from bench.proxy import ProxyProcess
from covey.context import AUTO_PER_CPU

VARIANTS = {"true": ["true"], "sleep": ["sleep", "1"]}
ENGINE_APPROACHES = (
    "ceiling",
    "covey",
    "minimal-aiohttp",
    "minimal-raw",
    "naive",
    "sequential",
    "replicated-job",
)
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"
WARMUP = 40
PARTS = ("fanout", "scale", "pipelines", "multinode")
SMOKE_PIPELINES = "chains,mapreduce,map"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="jobs per approach (default 200)")
    p.add_argument(
        "--sequential-n", type=int, default=30, help="jobs for the ~1 job/s seed approach (30)"
    )
    p.add_argument(
        "--variants", default="true,sleep", help="job kinds: true, sleep (= sleep 1); comma list"
    )
    p.add_argument(
        "--approaches", default=",".join(ENGINE_APPROACHES), help="comma list of approaches"
    )
    p.add_argument("--scale", default="10000,100000", help="simulated sizes; '' or 0 skips")
    p.add_argument("--scale-timeout", type=float, default=600.0, help="seconds per size")
    p.add_argument("--scale-rate", type=float, default=5000.0, help="simulated completions/s")
    p.add_argument(
        "--scale-window",
        type=int,
        default=10_000,
        help="jobs tracked at once in the simulation (10000; larger batches run in windows)",
    )
    p.add_argument(
        "--pipelines",
        default=",".join(pipelines.KINDS),
        help="pipeline runs: chains, chains-capped, mapreduce, map; comma list ('' skips)",
    )
    p.add_argument("--map-n", type=int, help="map instances of mapreduce and map (1000)")
    p.add_argument("--chains", type=int, help="chains a_i -> b_i (100)")
    p.add_argument(
        "--jobs-per-node", type=int, help="multinode: jobs `sleep 1` per node and batch (10)"
    )
    p.add_argument("--rounds", type=int, help="multinode: batches per variant (2)")
    p.add_argument(
        "--only",
        help="measure only these parts (fanout, scale, pipelines; comma list); the other parts "
        "of an existing results.json in --out are kept",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="N=6, sequential N=2, scale 200, true only; pipelines: 5 chains, map of 50",
    )
    p.add_argument("--docker-host", help="use this engine (unix://); default: start 'bench'")
    p.add_argument("--engine-name", default="bench", help="name for scripts/engine.sh")
    p.add_argument("--keep-engine", action="store_true", help="leave the private engine up")
    p.add_argument("--covey-max-concurrent", type=int, default=0, help="0: covey's default")
    p.add_argument("--out", type=Path, help="results directory (default bench/results[/smoke])")
    p.add_argument("--markdown", type=Path, help="write this table (full runs: BENCHMARKS.md)")
    p.add_argument("--profile", action="store_true", help="pyinstrument covey and the scale runs")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument(
        "--from-json", type=Path, help="measure nothing: redo plot and table from this results file"
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.n, args.sequential_n, args.scale = min(args.n, 6), 2, "200"
        if not any(a.startswith("--variants") for a in argv):
            args.variants = "true"
        if not any(a.startswith("--pipelines") for a in argv):
            args.pipelines = SMOKE_PIPELINES
    args.map_n = args.map_n or (50 if args.smoke else 1000)
    args.chains = args.chains or (5 if args.smoke else 100)
    args.jobs_per_node = args.jobs_per_node or (2 if args.smoke else 10)
    args.rounds = args.rounds or (1 if args.smoke else 2)
    # a cluster of its own: in full runs, and when asked for (a smoke run skips it)
    args.multinode = not args.smoke
    if args.only is not None:
        only = {part for part in args.only.split(",") if part}
        unknown = only - set(PARTS)
        if unknown:
            p.error(f"--only: unknown part {sorted(unknown)[0]!r} (choose from {', '.join(PARTS)})")
        if "fanout" not in only:
            args.approaches = ""
        if "scale" not in only:
            args.scale = ""
        if "pipelines" not in only:
            args.pipelines = ""
        args.multinode = "multinode" in only
    for kind in filter(None, args.pipelines.split(",")):
        if kind not in pipelines.KINDS:
            p.error(f"--pipelines: unknown {kind!r} (choose from {', '.join(pipelines.KINDS)})")
    args.out = args.out or (DEFAULT_RESULTS / "smoke" if args.smoke else DEFAULT_RESULTS)
    if args.markdown is None and not args.smoke and args.out == DEFAULT_RESULTS:
        args.markdown = DEFAULT_RESULTS.parent.parent / "BENCHMARKS.md"
    return args


def _sizes(spec: str) -> list[int]:
    return [int(s) for s in spec.split(",") if s.strip() and int(s) > 0]


async def _approach(
    name: str,
    args: argparse.Namespace,
    ctx: dict[str, Any],
    variant: str,
    workdir: Path,
) -> dict[str, Any]:
    command = VARIANTS[variant]
    n = args.sequential_n if name == "sequential" else args.n
    via: Docker = ctx["via"]
    if name == "covey":
        profile = args.out / f"profile-covey-{variant}.txt" if args.profile else None
        return await covey_run.run(
            ctx["proxy"].docker_host,
            ctx["run_id"],
            n,
            command,
            workdir,
            variant,
            ctx["die"].events,
            max_concurrent=args.covey_max_concurrent,
            profile=profile,
        )
    if name.startswith("minimal-"):
        return await minimal.run(
            ctx["proxy"].listen,
            name.removeprefix("minimal-"),
            ctx["run_id"],
            n,
            command,
            workdir,
            max_concurrent=args.covey_max_concurrent or ctx["covey_cap"],
        )
    return await baselines.APPROACHES[name](via, ctx["run_id"], n, command)


async def measure(
    args: argparse.Namespace, docker_host: str, work: Path, command: str
) -> dict[str, Any]:
    run_id = secrets.token_hex(4)
    engine_socket = socket_path(docker_host)
    variants = [v for v in args.variants.split(",") if v]
    names = [a for a in args.approaches.split(",") if a]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r} (choose from {', '.join(VARIANTS)})")
    for a in names:
        if a not in ENGINE_APPROACHES:
            raise SystemExit(f"unknown approach {a!r} (choose from {', '.join(ENGINE_APPROACHES)})")
    # job mode leaves tasks behind in the swarm: run it last so it cannot slow the others
    order = [a for a in ENGINE_APPROACHES if a in names and a != "replicated-job"]
    runs: list[dict[str, Any]] = []
    with ProxyProcess(engine_socket, work / "proxy.sock") as proxy:
        async with Docker(engine_socket) as direct, Docker(proxy.listen) as via:
            info = await harness.machine(direct)
            die = harness.DieLog(run_id)
            follower = asyncio.create_task(die.follow(direct))
            await die.ready.wait()
            await asyncio.sleep(0.3)
            ctx = {
                "run_id": run_id,
                "proxy": proxy,
                "via": via,
                "die": die,
                "covey_cap": AUTO_PER_CPU * max(1, int(info.get("engine_ncpu") or 1)),
            }
            # A fresh engine is slow for its first few dozen services: warm it up with as
            # many jobs as run at once, or the first approach measured pays for it.
            warmup = min(WARMUP, args.n if names else args.chains)
            print(f"bench: warm-up ({warmup} jobs)", flush=True)
            await baselines.ceiling(via, run_id, warmup, ["true"], "warmup")
            await harness.quiesce(direct, run_id)
            plan = [(v, a) for v in variants for a in order]
            if "replicated-job" in names:
                plan += [(v, "replicated-job") for v in variants]
            for variant, name in plan:
                await harness.quiesce(direct, run_id)
                await proxy.reset()
                load = os.getloadavg()
                print(f"bench: {name} / {variant} ...", flush=True)
                result = await _approach(name, args, ctx, variant, work)
                counts = await proxy.counts()
                result.update(
                    variant=variant,
                    command=VARIANTS[variant],
                    api_requests=sum(counts.values()),
                    api_requests_per_job=sum(counts.values()) / result["n"],
                    api_by_kind=counts,
                    loadavg_before=load,
                    loadavg_after=os.getloadavg(),
                    jobs_per_s=result["n"] / result["wall_s"],
                    die_events=len(die.for_approach(name)),
                )
                if name == "replicated-job":
                    result["leftovers_removed"] = await harness.cleanup(direct, run_id)
                print(
                    f"bench: {name} / {variant}: {result['wall_s']:.1f} s, "
                    f"{result['jobs_per_s']:.2f} jobs/s, "
                    f"{result['api_requests_per_job']:.1f} requests/job",
                    flush=True,
                )
                runs.append(result)
            await harness.quiesce(direct, run_id)
            follower.cancel()
            info["loadavg_end"] = os.getloadavg()
            info["die_stream_drops"] = die.dropped
            piped = await measure_pipelines(args, ctx, direct, work, command, info)
    report.add_ratios(runs)
    out: dict[str, Any] = {"run_id": run_id, "machine": info, "runs": runs}
    if piped is not None:
        out["pipelines"] = piped
    return out


async def measure_pipelines(
    args: argparse.Namespace,
    ctx: dict[str, Any],
    direct: Docker,
    work: Path,
    command: str,
    info: dict[str, Any],
) -> dict[str, Any] | None:
    """The pipeline runs (``bench/pipelines.py``), one after another, each on a quiet engine."""
    kinds = [k for k in args.pipelines.split(",") if k]
    if not kinds:
        return None
    run_id = ctx["run_id"]
    proxy: ProxyProcess = ctx["proxy"]
    section: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "code": harness.code_version(),
        "machine": {**info, "loadavg_start": os.getloadavg()},
        "config": {"chains": args.chains, "map_n": args.map_n, "kinds": kinds},
        "runs": [],
    }
    events = pipelines.EngineEvents(run_id)
    async with events.following(direct):
        for kind in kinds:
            await harness.quiesce(direct, run_id)
            await proxy.reset()
            n = args.chains if kind.startswith("chains") else args.map_n
            cap = args.covey_max_concurrent
            if kind == "chains":
                cap = 2 * n  # every job may run at once: a released dependent never waits
            load = os.getloadavg()
            print(f"bench: pipeline {kind} (n={n}) ...", flush=True)
            result = await pipelines.run(
                kind,
                n,
                proxy=proxy,
                docker=direct,
                run_id=run_id,
                workdir=work,
                events=events,
                max_concurrent=cap,
            )
            result.update(loadavg_before=load, loadavg_after=os.getloadavg())
            print(f"bench: pipeline {kind}: {report.pipeline_line(result)}", flush=True)
            section["runs"].append(result)
        await harness.quiesce(direct, run_id)
    section["machine"]["loadavg_end"] = os.getloadavg()
    section["event_stream_drops"] = events.dropped
    return section


def run_scale(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in _sizes(args.scale):
        print(f"bench: scale simulation, {n} jobs ...", flush=True)
        profile = args.out / f"profile-scale-{n}.txt" if args.profile else None
        t = time.monotonic()
        result = scale.run(
            n,
            work,
            timeout=args.scale_timeout,
            rate=args.scale_rate,
            window=min(n, args.scale_window),
            profile=profile,
        )
        result["loadavg_after"] = os.getloadavg()
        print(f"bench: scale {n}: done in {time.monotonic() - t:.0f} s", flush=True)
        out.append(result)
    return out


def rewrite(args: argparse.Namespace) -> int:
    """Targets, plot and table again from saved results (after a change of the report)."""
    results = json.loads(args.from_json.read_text())
    out = args.from_json.parent
    if results.get("runs"):
        report.add_ratios(results["runs"])
    results["targets"] = report.targets(results)
    report.write_json(results, out)
    if not args.no_plot and results.get("runs"):
        print(f"bench: plot in {report.plot(results, out)}")
    if args.markdown:
        report.write_markdown(results, args.markdown, out)
        print(f"bench: table in {args.markdown}")
    return 0


def merge(results: dict[str, Any], previous: Path, only: str) -> dict[str, Any]:
    """``--only``: the parts measured now replace theirs in the results file found there;
    the others (and the header that describes them) stay as they were measured."""
    if not previous.exists():
        return results
    old = json.loads(previous.read_text())
    parts = set(only.split(","))
    if "fanout" in parts:
        return {**old, **{k: v for k, v in results.items() if k != "scale" or "scale" in parts}}
    merged = dict(old)
    if "scale" in parts:
        merged["scale"] = results["scale"]
    if "pipelines" in parts and "pipelines" in results:
        merged["pipelines"] = results["pipelines"]
    if "multinode" in parts and "multinode" in results:
        merged["multinode"] = results["multinode"]
    return merged


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        return rewrite(args)
    started = datetime.datetime.now(datetime.UTC)
    command = "python -m bench " + shlex.join(argv) if argv else "python -m bench"
    results: dict[str, Any] = {
        "schema": RESULTS_SCHEMA,
        "date": started.isoformat(timespec="seconds"),
        "command": command,
        "smoke": args.smoke,
        "code": harness.code_version(),
        "config": {
            "n": args.n,
            "sequential_n": args.sequential_n,
            "variants": args.variants,
            "approaches": args.approaches,
            "scale": _sizes(args.scale),
            "scale_rate": args.scale_rate,
            "scale_window": args.scale_window,
            "scale_timeout_s": args.scale_timeout,
            "ceiling_poll_s": baselines.CEILING_POLL,
            "replicated_max_concurrent": baselines.REPLICATED_MAX_CONCURRENT,
            "covey_max_concurrent": args.covey_max_concurrent or "covey default",
        },
    }
    with tempfile.TemporaryDirectory(prefix="covey-bench-") as tmp:
        work = Path(tmp)
        if args.approaches.strip() or args.pipelines.strip():
            if args.docker_host:
                results.update(asyncio.run(measure(args, args.docker_host, work, command)))
            else:
                with harness.private_engine(args.engine_name, keep=args.keep_engine) as host:
                    results.update(asyncio.run(measure(args, host, work, command)))
        results["scale"] = run_scale(args, work)
        if args.multinode:
            print("bench: multinode (cluster bench-mn) ...", flush=True)
            ns = argparse.Namespace(
                cluster=multinode.CLUSTER,
                keep_cluster=args.keep_engine,
                rounds=args.rounds,
                jobs_per_node=args.jobs_per_node,
                command=command,
            )
            results["multinode"] = asyncio.run(multinode.measure(ns))
    if args.only is not None:
        results = merge(results, args.out / "results.json", args.only)
    results["targets"] = report.targets(results)
    results["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    path = report.write_json(results, args.out)
    print(f"bench: results in {path}")
    if not args.no_plot and results.get("runs"):
        print(f"bench: plot in {report.plot(results, args.out)}")
    if args.markdown:
        report.write_markdown(results, args.markdown, args.out)
        print(f"bench: table in {args.markdown}")
    print(report.summary(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
