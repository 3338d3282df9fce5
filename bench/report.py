"""Results: ratios, the targets, JSON, the plot and the BENCHMARKS.md table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ORDER = (
    "covey",
    "ceiling",
    "minimal-aiohttp",
    "minimal-raw",
    "naive",
    "sequential",
    "replicated-job",
)
LABELS = {
    "covey": "covey (`Client.map`)",
    "minimal-aiohttp": "floor: minimal event-driven client, aiohttp",
    "minimal-raw": "floor: minimal event-driven client, raw HTTP/1.1",
    "ceiling": "engine ceiling (minimal client, batched listing)",
    "naive": "naive concurrent (poll each service 1/s)",
    "sequential": "sequential seed approach (1 job at a time)",
    "replicated-job": "Swarm replicated-job (MaxConcurrent 16)",
}
FINDINGS = Path(__file__).resolve().parent / "findings.md"
MB = 1024 * 1024


def _by(runs: list[dict[str, Any]], variant: str, approach: str) -> dict[str, Any] | None:
    for r in runs:
        if r["variant"] == variant and r["approach"] == approach:
            return r
    return None


def add_ratios(runs: list[dict[str, Any]]) -> None:
    for r in runs:
        ceiling = _by(runs, r["variant"], "ceiling")
        seq = _by(runs, r["variant"], "sequential")
        r["ratio_to_ceiling"] = r["jobs_per_s"] / ceiling["jobs_per_s"] if ceiling else None
        r["ratio_to_sequential"] = r["jobs_per_s"] / seq["jobs_per_s"] if seq else None


def _target(
    name: str, variant: str | None, value: Any, limit: float, *, at_least: bool
) -> dict[str, Any]:
    met = None if value is None else (value >= limit if at_least else value <= limit)
    return {"target": name, "variant": variant, "value": value, "met": met}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    runs = results.get("runs", [])
    for r in runs:
        if r["approach"] != "covey":
            continue
        v = r["variant"]
        c = r["covey"]
        out += [
            _target(
                ">= 95% of the engine ceiling (jobs/s)",
                v,
                r["ratio_to_ceiling"],
                0.95,
                at_least=True,
            ),
            _target(
                ">= 3x the sequential seed approach",
                v,
                r["ratio_to_sequential"],
                3.0,
                at_least=True,
            ),
            _target(
                "<= 4 Docker API requests per job",
                v,
                r["api_requests_per_job"],
                4.0,
                at_least=False,
            ),
            _target(
                "exit -> recorded p50 <= 150 ms",
                v,
                c["exit_to_recorded_ms"]["p50"],
                150.0,
                at_least=False,
            ),
            _target("covey CPU <= 2 ms per job", v, c["cpu_ms_per_job"], 2.0, at_least=False),
        ]
    out += pipeline_targets(results.get("pipelines"))
    out += multinode_targets(results.get("multinode"))
    for s in results.get("scale", []):
        if s.get("n") == 10_000:
            rss = s.get("rss_all_tracked_bytes")
            out.append(
                _target(
                    "RSS <= 200 MB at 10k tracked jobs (simulated)",
                    None,
                    None if rss is None else round(rss / MB, 1),
                    200.0,
                    at_least=False,
                )
            )
        if "cpu_ms_per_job" in s:
            out.append(
                _target(
                    f"covey CPU <= 2 ms per job at {s['n']} jobs (simulated)",
                    None,
                    round(s["cpu_ms_per_job"], 2),
                    2.0,
                    at_least=False,
                )
            )
    return out


def write_json(results: dict[str, Any], out: Path) -> Path:
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    return path


def plot(results: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    fig, axes = plt.subplots(1, len(variants), figsize=(6.5 * len(variants), 4.5), squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=True):
        for name in ORDER:
            r = _by(runs, variant, name)
            if r is None or not r["completions"]:
                continue
            times = [0.0, *r["completions"]]
            counts = list(range(len(times)))
            label = f"{name} (N={r['n']}, {r['jobs_per_s']:.2f}/s)"
            ax.step(times, counts, where="post", label=label)
        ax.set_title(f"jobs: {' '.join(_cmd(runs, variant))}")
        ax.set_xlabel("seconds since the approach started")
        ax.set_ylabel("jobs completed (outcome known)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"covey benchmark, {results['date']}")
    fig.tight_layout()
    path = out / "completions.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cmd(runs: list[dict[str, Any]], variant: str) -> list[str]:
    for r in runs:
        if r["variant"] == variant:
            return list(r["command"])
    return [variant]


def _f(value: Any, fmt: str = "{:.2f}") -> str:
    if value is None:
        return "-"
    return fmt.format(value)


def _machine(m: dict[str, Any]) -> list[str]:
    return [
        f"- CPU: {m['nproc']} x {m['cpu_model']}",
        f"- memory: {m['memory_bytes'] / 2**30:.1f} GiB",
        f"- kernel: {m['kernel']} ({m['os']})",
        f"- Docker Engine {m['docker_version']} (API {m['docker_api']}), "
        f"storage driver {m['storage_driver']}",
        f"- Python {m['python']}",
        f"- load average (1, 5, 15 min) at start: {_load(m.get('loadavg_start'))}; "
        f"at end: {_load(m.get('loadavg_end'))}",
    ]


def _load(value: Any) -> str:
    return "-" if not value else " ".join(f"{x:.2f}" for x in value)


def _engine_tables(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    runs = results["runs"]
    for variant in dict.fromkeys(r["variant"] for r in runs):
        lines += [
            "",
            f"### Jobs `{' '.join(_cmd(runs, variant))}`",
            "",
            "| approach | N | wall s | jobs/s | ratio to ceiling | API requests/job "
            "| client CPU ms/job | load before |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in ORDER:
            r = _by(runs, variant, name)
            if r is None:
                continue
            lines.append(
                f"| {LABELS[name]} | {r['n']} | {r['wall_s']:.1f} | {r['jobs_per_s']:.2f} | "
                f"{_f(r['ratio_to_ceiling'])} | {r['api_requests_per_job']:.1f} | "
                f"{_f(r.get('client_cpu_ms_per_job'))} | {r['loadavg_before'][0]:.1f} |"
            )
        c = _by(runs, variant, "covey")
        if c is not None:
            k = c["covey"]
            lat = k["exit_to_recorded_ms"]
            lines += [
                "",
                f"covey, `{' '.join(_cmd(runs, variant))}`: exit → recorded p50 "
                f"{_f(lat['p50'], '{:.0f}')} ms, p95 {_f(lat['p95'], '{:.0f}')} ms "
                f"({lat['samples']} die events; recorded from "
                f"{_sources(k['recorded_by_source'])}); "
                f"CPU {k['cpu_ms_per_job']:.2f} ms/job ({k['cpu_s']:.2f} s for the run; "
                f"{k['process_cpu_s']:.2f} s for the whole process with interpreter start "
                "and imports); "
                f"peak RSS {k['peak_rss_bytes'] / MB:.0f} MB; covey's concurrency cap "
                f"{k['max_concurrent']}; requests: {_kinds(c['api_by_kind'])}.",
            ]
    return lines


def _sources(by: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(by.items())) or "-"


def _kinds(by: dict[str, int]) -> str:
    return ", ".join(f"`{k}` {v}" for k, v in sorted(by.items(), key=lambda kv: -kv[1]))


def _scale_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Scale (SIMULATED: no engine)",
        "",
        "covey's real code (`Client.map`, submitter, tracker, reaper, governor, states, store, "
        "SwarmBackend and covey.engine's JSON parsing) against a simulated one-node swarm that "
        "answers from a recorded Engine 20.10.24 task (see `bench/scale.py`). A window of jobs "
        "(all of them, or 10,000 for larger batches) is created and kept running until the "
        'whole window is tracked at the same time (the memory reading "RSS with the window '
        'tracked"); then the simulator completes them at the given rate with a `die` event '
        "each while covey admits the rest. CPU excludes the simulator's own work (its task JSON "
        "and events, about 20 MB of RSS at 10,000 tasks, are included in RSS); HTTP framing is "
        "not simulated.",
        "",
        "| jobs | window | wall s | covey CPU s | CPU ms/job | RSS before MB "
        "| RSS with the window tracked MB | growth KB/job | peak RSS MB | requests/job "
        "| store MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in results.get("scale", []):
        if "timed_out_after_s" in s:
            p = s.get("progress", {})
            lines.append(
                f"| {s['n']} | {s.get('window', s['n'])} | > {s['timed_out_after_s']:.0f} "
                f"(stopped; {p.get('done', 0)} jobs done) | "
                f"{_f(p.get('cpu_s'), '{:.1f}')} | - | - | - | - | "
                f"{_f((p.get('rss_bytes') or 0) / MB, '{:.0f}')} | - | - |"
            )
            continue
        tracked = s["rss_all_tracked_bytes"]
        growth = s["growth_per_job_bytes"]
        lines.append(
            f"| {s['n']} | {s['window']} | {s['wall_s']:.1f} | {s['cpu_s']:.1f} | "
            f"{s['cpu_ms_per_job']:.2f} | "
            f"{s['rss_before_bytes'] / MB:.0f} | {_f(tracked and tracked / MB, '{:.0f}')} | "
            f"{_f(growth and growth / 1024, '{:.1f}')} | {s['rss_peak_bytes'] / MB:.0f} | "
            f"{s['requests_per_job']:.2f} | {s['store_bytes'] / MB:.1f} |"
        )
    return lines


MULTINODE_METHOD = (
    "`bench/multinode.py` on a private 3-node cluster (`scripts/cluster.sh`, one manager and"
    " two workers on this one machine; the image pulled from the cluster's registry): the"
    " same batch once with covey connected to the manager only (`polling`: a worker's job"
    " end is found by a task listing) and once with `--node-host` for each worker"
    " (`node-events`: covey.watcher follows their container events), and once with `--agent`"
    " (`agent`: covey's agent on every node, a global service whose log stream on the manager"
    " carries each node's events). Exit: the `die` event's"
    " time on the job's own node; recorded: its terminal transition in the store. Requests:"
    " covey's own count against the manager (the node engines are asked apart)."
)


def write_markdown(results: dict[str, Any], path: Path, out: Path) -> None:
    m = results.get("machine")
    lines = [
        "# covey benchmarks",
        "",
        "Generated by `bench/report.py` from "
        f"`{_rel(out / 'results.json', path)}`; do not edit by hand (hand-written findings live "
        "in `bench/findings.md` and are copied in below).",
        "",
        f"- date: {results['date']}",
        f"- command: `{results['command']}`",
    ]
    code = results.get("code")
    if code:
        dirty = code["uncommitted_src"]
        lines.append(
            f"- code: commit `{code['commit']}`"
            + (f", with uncommitted changes in {len(dirty)} file(s) under src/" if dirty else "")
        )
    if results.get("smoke"):
        lines.append("- **smoke run** (tiny N): numbers show the harness works, not performance")
    if m:
        lines += ["", "## Machine", "", *_machine(m)]
    if results.get("runs"):
        lines += ["", "## Fan-out on one engine", "", METHOD]
        lines += _engine_tables(results)
        lines += ["", f"![completions over time]({_rel(out / 'completions.png', path)})"]
    if results.get("scale"):
        lines += _scale_table(results)
    if results.get("pipelines"):
        lines += _pipeline_section(results["pipelines"], results)
    if results.get("multinode"):
        from bench.multinode import markdown as multinode_markdown

        lines += ["", "## Every node of a cluster", "", MULTINODE_METHOD, ""]
        lines.append(multinode_markdown(results["multinode"]).rstrip())
    lines += ["", "## Targets", "", "| target | variant | value | met |", "|---|---|---:|---|"]
    for t in results.get("targets", []):
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        value = t["value"]
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        lines.append(f"| {t['target']} | {t['variant'] or ''} | {shown} | {met} |")
    if FINDINGS.exists():
        lines += ["", FINDINGS.read_text().rstrip()]
    path.write_text("\n".join(lines) + "\n")


def _rel(target: Path, doc: Path) -> str:
    try:
        return str(target.resolve().relative_to(doc.resolve().parent))
    except ValueError:
        return str(target)


METHOD = """\
Every approach runs the same N one-shot services (`busybox`) on the same private single-node
engine, one approach at a time, through a counting HTTP proxy on a unix socket
(`bench/proxy.py`), which is where "API requests/job" comes from (all requests, including
creates, polls, logs, removals and the event subscription). Wall time runs from the first
request until every job's outcome is known and its service is removed. Ratios are jobs/s
divided by the engine ceiling's jobs/s in the same variant. The sequential seed approach runs
fewer jobs (it manages about one a second); its jobs/s are still comparable. covey runs in a
child process of its own (`bench/covey_run.py`) so its CPU and RSS are its own. So do the two
floor clients (`bench/minimal.py`: per job only create, the `die` event, the container's logs
and remove; no store, no tracking, no retries): they show what any client pays here for the
same requests, with covey's HTTP stack (aiohttp) and with hand-written HTTP/1.1. "Client CPU"
is measured for these three only; the other approaches share the benchmark's process.
Exit → recorded is the store's `transitions.at` of each terminal state minus the container's
`die` event `timeNano`, from an event subscription of the benchmark itself. Replicated-job
leaves its containers behind on Engine 20.10 (moby 42789/44312): they are removed after its
measurement."""


ADMISSION_LIMIT_MS = 200.0
REDUCE_LIMIT_S = 1.0
PIPELINE_LABELS = {
    "chains": "chains, every job may run at once",
    "chains-capped": "chains, covey's default cap",
    "mapreduce": "split + map + reduce",
    "map": "split + map alone (reference)",
}


def _pipeline_run(section: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    runs: list[dict[str, Any]] = (section or {}).get("runs", [])
    return next((r for r in runs if r["kind"] == kind), None)


def pipeline_targets(section: dict[str, Any] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    chains = _pipeline_run(section, "chains")
    if chains is not None:
        out.append(
            _target(
                f"dependent admitted <= {ADMISSION_LIMIT_MS:.0f} ms (p50) after its last need"
                " is recorded",
                "chains",
                chains["admission"]["need_ended_to_admitted_ms"]["p50"],
                ADMISSION_LIMIT_MS,
                at_least=False,
            )
        )
    mr = _pipeline_run(section, "mapreduce")
    if mr is not None and "reduce" in mr:
        out.append(
            _target(
                f"map + reduce <= map + reduce's run + {REDUCE_LIMIT_S:.0f} s (overhead, s)",
                f"N={mr['n']}",
                round(mr["reduce"]["overhead_s"], 3),
                REDUCE_LIMIT_S,
                at_least=False,
            )
        )
    return out


def multinode_targets(section: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The cluster issue's goal, for ``node-events``: every node's p50 and p95, and the
    requests per job against the manager."""
    if not section:
        return []
    out: list[dict[str, Any]] = []
    for variant in ("node-events", "agent"):
        out += _multinode_targets(section, variant)
    return out


def _multinode_targets(section: dict[str, Any], variant: str) -> list[dict[str, Any]]:
    events = section["summary"].get(variant)
    if not events:
        return []
    worst = {key: max(n[key] for n in events["nodes"].values()) for key in ("p50_ms", "p95_ms")}
    goals = [
        ("exit -> recorded p50 <= 250 ms on every node (worst node)", worst["p50_ms"], 250.0),
        ("exit -> recorded p95 <= 1 s on every node (worst node, ms)", worst["p95_ms"], 1000.0),
        (
            "<= 4 Docker API requests per job against the manager (multi-node)",
            events["requests_per_job"],
            4.0,
        ),
    ]
    return [_target(what, variant, value, limit, at_least=False) for what, value, limit in goals]


def pipeline_line(r: dict[str, Any]) -> str:
    """One line on the console per pipeline run."""
    text = (
        f"{r['jobs']} jobs, {r['wall_s']:.1f} s, {r['api_requests_per_job']:.1f} requests/job,"
        f" states {r['states']}"
    )
    if "admission" in r:
        a = r["admission"]["need_ended_to_admitted_ms"]
        text += f"; need ended -> admitted p50 {a['p50']} ms, p95 {a['p95']}, max {a['max']}"
    if "reduce" in r:
        b = r["reduce"]
        text += (
            f"; map done at {b['map_wall_s']:.1f} s, reduce ran {b['reduce_run_s']:.2f} s,"
            f" overhead {b['overhead_s']:.2f} s ({b['reduce_stdout']!r})"
        )
    return text


def _pipeline_section(sec: dict[str, Any], results: dict[str, Any]) -> list[str]:
    lines = ["", "## Pipelines", ""]
    if sec.get("command") != results.get("command") or sec.get("date") != results.get("date"):
        code = sec.get("code") or {}
        dirty = code.get("uncommitted_src") or []
        lines += [
            f"Measured apart from the sections above: {sec['date']}, `{sec['command']}`, "
            f"commit `{code.get('commit', '?')}`"
            + (f" with uncommitted changes in {len(dirty)} file(s) under src/" if dirty else "")
            + f"; load average at start {_load(sec['machine'].get('loadavg_start'))}, at end "
            f"{_load(sec['machine'].get('loadavg_end'))}.",
            "",
        ]
    lines += [PIPELINE_METHOD, ""]
    chains = [r for r in sec["runs"] if "admission" in r]
    if chains:
        lines += [
            "### A dependent's admission",
            "",
            "| run | chains | covey's cap | wall s | need's end recorded → admitted ms "
            "p50 / p95 / max | need's logs saved (released) → admitted ms p50 / p95 / max "
            "| need's end → logs saved ms p50 | API requests/job | load before |",
            "|---|---:|---:|---:|---|---|---:|---:|---:|",
        ]
        for r in chains:
            a = r["admission"]
            e, q, g = (
                a["need_ended_to_admitted_ms"],
                a["released_to_admitted_ms"],
                a["need_ended_to_released_ms"],
            )
            lines.append(
                f"| {PIPELINE_LABELS.get(r['kind'], r['kind'])} | {r['n']} | "
                f"{r['covey']['max_concurrent']} | {r['wall_s']:.1f} | "
                f"{_trio(e)} | {_trio(q)} | {_f(g['p50'], '{:.0f}')} | "
                f"{r['api_requests_per_job']:.1f} | {r['loadavg_before'][0]:.1f} |"
            )
        for r in chains:
            steps = r["admission"].get("need_steps_ms")
            if steps:
                text = ", ".join(f"{k} {_trio(v)}" for k, v in steps.items())
                lines += [
                    "",
                    f"{PIPELINE_LABELS.get(r['kind'], r['kind'])}, where a need's time goes "
                    f"(ms, p50 / p95 / max): {text}.",
                ]
    maps = [r for r in sec["runs"] if r["kind"] in ("mapreduce", "map")]
    if maps:
        lines += [
            "",
            "### Map + reduce",
            "",
            "| run | map instances | jobs | wall s | batch start → last map done s "
            "| reduce's own run s | reduce's overhead s | split done → first / last map "
            "admitted | API requests/job | covey CPU ms/job | load before |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for r in maps:
            b = r.get("reduce") or {}
            f = r.get("fan_out") or {}
            lines.append(
                f"| {PIPELINE_LABELS.get(r['kind'], r['kind'])} | {r['n']} | {r['jobs']} | "
                f"{r['wall_s']:.1f} | {_f(b.get('map_wall_s'), '{:.1f}')} | "
                f"{_f(b.get('reduce_run_s'), '{:.2f}')} | {_f(b.get('overhead_s'), '{:.2f}')} | "
                f"{_f(f.get('made_to_first_admitted_ms'), '{:.0f}')} ms / "
                f"{_f(f.get('made_to_last_admitted_s'), '{:.1f}')} s | "
                f"{r['api_requests_per_job']:.1f} | {r['covey']['cpu_ms_per_job']:.2f} | "
                f"{r['loadavg_before'][0]:.1f} |"
            )
        mr = _pipeline_run(sec, "mapreduce")
        if mr is not None and "reduce" in mr:
            b = mr["reduce"]
            ok = b["reduce_state"] == "succeeded" and b["reduce_stdout"] == b["reduce_expected"]
            parts = ", ".join(f"{k} {v:.0f} ms" for k, v in b["overhead_parts_ms"].items())
            lines += [
                "",
                f"The reduce read {b['input_configs_created']} input configs, printed "
                f"`{b['reduce_stdout']}` (instances read, their sum; expected "
                f"`{b['reduce_expected']}`: {'checked' if ok else '**WRONG**'}). Its overhead "
                f"{b['overhead_s']:.2f} s = {parts}; measured from the last map instance's end "
                f"recorded instead of its logs it is {b['overhead_from_map_end_s']:.2f} s. "
                f"After the batch settled the client took {b['client_exit_after_settled_s']:.1f} s "
                "more to exit." + _lone(b.get("lone_job") or {}),
                "",
                "| mark (mapreduce run) | since batch start s | step ms |",
                "|---|---:|---:|",
            ]
            for st in b["steps"]:
                lines.append(
                    f"| {st['mark']} | {_f(st['since_start_s'], '{:.3f}')} | "
                    f"{_f(st['step_ms'], '{:.0f}')} |"
                )
        left = [r for r in sec["runs"] if r.get("configs_left_after_exit")]
        for r in left:
            lines += [
                "",
                f"**{r['configs_left_after_exit']} of covey's configs were still on the engine "
                f"after covey's process had exited** ({r['kind']} run; removed by the benchmark "
                "before the next run).",
            ]
        ref = _pipeline_run(sec, "map")
        if mr is not None and ref is not None and "reduce" in mr:
            lines += [
                "",
                f"For reference only (one run each; runs of the same map differ by seconds): "
                f"the map alone took {ref['wall_s']:.1f} s, the map + reduce run "
                f"{mr['wall_s']:.1f} s, its map part {mr['reduce']['map_wall_s']:.1f} s.",
            ]
    return lines


def _lone(lone: dict[str, Any]) -> str:
    if not lone:
        return ""
    sent = _f(lone.get("create_sent_to_started_ms"), "{:.0f}")
    admitted = _f(lone.get("admitted_to_started_ms"), "{:.0f}")
    return (
        " For comparison, a lone service without inputs on the same engine (the batch's first "
        f"job, `split`): create sent → container started {sent} ms, admitted → started "
        f"{admitted} ms."
    )


def _trio(stats: dict[str, Any]) -> str:
    return " / ".join(_f(stats.get(k), "{:.0f}") for k in ("p50", "p95", "max"))


PIPELINE_METHOD = """\
`bench/pipelines.py`, on the same private single-node swarm engine, covey in a child process
of its own running `Client.run_batch(pipeline)` through the counting proxy (API requests/job
is every request over the batch's jobs). **Admission**: C independent chains `a_i -> b_i`
(`p.add("a", [spec] * C); p.add("b", [spec] * C, needs={"a": "each"})`, jobs `true`). Per
`b_i`, from the store after the run: its need's end recorded (`a_i`'s terminal transition),
its need's logs saved (`b_i`'s own `queued` transition, "needs met", written by the gate in
the commit that saves them) and `b_i` admitted (its `pending` transition, written before its
service is created). "Every job may run at once" sets covey's cap to 2C so that a released
dependent never waits for a slot; with covey's default cap the `a` jobs queued before it go
first. **Map + reduce**: `split` prints N numbers (`seq 1 N`), `map` fans out over them
(`for_each="split"`, each instance echoes its item), `reduce` (`inputs=["map"]`) sums
`/covey/inputs/map/[0-9]*` and checks count and sum. Its overhead is measured inside one run:
(batch start → `run_batch` returned) minus (batch start → last map instance done, i.e. its logs
recorded, which is the reduce's `queued` transition) minus the reduce container's own run (its
`start` → `die` events from the engine). The steps come from the store's transitions, the
proxy's request log (when a request reached it) and the engine's events (services and
configs by name, containers by label). The map-alone run (same split + map, no reduce) is
one run, for reference only."""


def summary(results: dict[str, Any]) -> str:
    lines = []
    for r in (results.get("pipelines") or {}).get("runs", []):
        lines.append(f"pipeline {r['kind']}: {pipeline_line(r)}")
    for r in results.get("runs", []):
        lines.append(
            f"{r['variant']:>6} {r['approach']:<15} n={r['n']:<4} {r['wall_s']:7.1f} s "
            f"{r['jobs_per_s']:6.2f} jobs/s  ratio {_f(r['ratio_to_ceiling'])}  "
            f"{r['api_requests_per_job']:6.1f} req/job"
        )
    for s in results.get("scale", []):
        if "cpu_ms_per_job" in s:
            lines.append(
                f"scale {s['n']}: {s['cpu_ms_per_job']:.2f} ms CPU/job, "
                f"{(s['rss_all_tracked_bytes'] or 0) / MB:.0f} MB with all tracked (simulated)"
            )
        else:
            lines.append(f"scale {s['n']}: stopped after {s.get('timed_out_after_s')} s")
    for t in results.get("targets", []):
        lines.append(f"target {t['target']} [{t['variant'] or '-'}]: {t['value']} -> {t['met']}")
    return "\n".join(lines)
