"""The benchmark's smoke mode runs end to end and writes well-formed results.

Only the shape of the results is checked, never a timing: the machine is shared and busy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
FLOORS = {"minimal-aiohttp", "minimal-raw"}
APPROACHES = {"covey", "ceiling", "naive", "sequential", "replicated-job"} | FLOORS


def test_bench_smoke_results_are_well_formed(swarm_host: str, tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "bench", "--smoke", "--docker-host", swarm_host]
    # the pipeline part at its smallest: its code runs, its timings are not the point here
    cmd += ["--pipelines", "chains,mapreduce", "--chains", "3", "--map-n", "6"]
    proc = subprocess.run(
        [*cmd, "--out", str(out), "--no-plot"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())

    assert results["smoke"] is True
    assert results["command"].startswith("python -m bench")
    assert {"nproc", "cpu_model", "memory_bytes", "kernel", "docker_version"} <= set(
        results["machine"]
    )
    runs = results["runs"]
    assert {r["approach"] for r in runs} == APPROACHES
    for r in runs:
        assert r["variant"] == "true"
        assert r["n"] > 0
        assert r["succeeded"] == r["n"], r
        assert len(r["completions"]) == r["n"]
        assert r["wall_s"] > 0 and r["jobs_per_s"] > 0
        assert r["api_requests"] > 0
        assert r["api_requests_per_job"] == pytest.approx(r["api_requests"] / r["n"])
        assert sum(r["api_by_kind"].values()) == r["api_requests"]
        assert r["ratio_to_ceiling"] is not None
        if r["approach"] in {"covey"} | FLOORS:
            assert r["client_cpu_ms_per_job"] > 0  # measured in a process of its own

    covey = next(r for r in runs if r["approach"] == "covey")
    k = covey["covey"]
    assert k["cpu_ms_per_job"] >= 0 and k["peak_rss_bytes"] > 0
    assert set(k["exit_to_recorded_ms"]) == {"p50", "p95", "max", "samples"}
    assert k["exit_to_recorded_ms"]["samples"] == covey["n"]
    assert sum(k["recorded_by_source"].values()) == covey["n"]

    (sim,) = results["scale"]
    assert sim["simulated"] is True
    assert sim["n"] == 200 and sim["succeeded"] == 200
    assert sim["cpu_ms_per_job"] > 0 and sim["rss_all_tracked_bytes"] > 0

    assert results["targets"]
    for t in results["targets"]:
        assert t["met"] in (True, False, None)

    pipelines = results["pipelines"]
    kinds = {r["kind"] for r in pipelines["runs"]}
    assert kinds == {"chains", "mapreduce"}, kinds
