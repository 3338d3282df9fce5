"""Large logs on a real engine: covey's memory is bounded by the log cap, not by the log;
``covey run`` passes every byte through however long the output; a result whose stored logs
were cut says so (``logs_complete``), in ``--json`` and in the batch summary."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
IMAGE = "covey-test/busybox:latest"
MB = 1024 * 1024


def covey_env(host: str, db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COVEY_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    env["DOCKER_HOST"] = host
    env["COVEY_DB"] = str(db)
    return env


def run_measured(argv: list[str], env: dict[str, str], out: Path) -> tuple[int, int, bytes]:
    """Run ``argv`` with stdout to ``out``: (exit code, peak RSS in bytes, stderr)."""
    with (
        out.open("wb") as sink,
        subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.PIPE) as proc,
    ):
        assert proc.stderr is not None
        stderr = proc.stderr.read()  # small: the job's few bytes and covey's own lines
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the sum
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024, stderr


def stored_logs(db: Path) -> dict[str, tuple[int, int, bool, bool]]:
    """stream -> (bytes kept, size, truncated, complete) of the store's only attempt."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT stream, length(data), size, truncated, complete FROM logs")
        return {r[0]: (r[1], r[2], bool(r[3]), bool(r[4])) for r in rows}


async def test_fifty_megabytes_pass_through_in_bounded_memory(
    swarm_host: str, tmp_path: Path
) -> None:
    db, out = tmp_path / "store.db", tmp_path / "stdout"
    argv = [sys.executable, "-m", "covey", "run", "--log-cap", "1M", IMAGE]
    argv += ["sh", "-c", "head -c 50000000 /dev/zero | tr '\\0' x; echo done >&2"]
    with anyio.fail_after(240):
        code, peak, stderr = await anyio.to_thread.run_sync(
            run_measured, argv, covey_env(swarm_host, db), out
        )
    assert code == 0, stderr
    assert stderr == b"done\n"
    assert out.stat().st_size == 50_000_000
    with out.open("rb") as f:
        assert set(f.read(1 * MB)) == {ord("x")}
    assert stored_logs(db) == {
        "stdout": (1 * MB, 50_000_000, True, True),
        "stderr": (5, 5, False, True),
    }
    # before: the whole log was read, then cut (a 300 MB log took 1.3 GB)
    assert peak < 200 * MB, f"peak RSS {peak / MB:.0f} MB"


async def test_a_cut_log_is_never_a_clean_looking_result(swarm_host: str, tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    job = ["sh", "-c", "yes 0123456789abcdef | head -c 5000; echo err >&2"]
    done = await anyio.run_process(
        [sys.executable, "-m", "covey", "run", "--json", "--log-cap", "1k", IMAGE, *job],
        env=covey_env(swarm_host, db),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["state"] == "succeeded"
    assert (result["logs_truncated"], result["logs_complete"]) == (True, False)
    assert result["stdout"] == ("0123456789abcdef\n" * 300)[:5000][-1024:]
    assert result["stderr"] == "err\n"
    assert stored_logs(db)["stdout"] == (1024, 5000, True, True)

    # the stored copy is cut, but `covey run` still passes all of it through
    passed = await anyio.run_process(
        [sys.executable, "-m", "covey", "run", "--log-cap", "1k", IMAGE, *job],
        env=covey_env(swarm_host, tmp_path / "other.db"),
        check=False,
    )
    assert (passed.returncode, passed.stderr) == (0, b"err\n")
    assert passed.stdout == ("0123456789abcdef\n" * 300).encode()[:5000]


async def test_the_batch_summary_names_jobs_whose_logs_were_cut(
    swarm_host: str, tmp_path: Path
) -> None:
    batch = tmp_path / "batch.yaml"
    batch.write_text(
        "jobs:\n"
        f"  - name: small\n    image: {IMAGE}\n    command: [echo, hi]\n"
        f"  - name: big\n    image: {IMAGE}\n    command: [sh, -c, 'yes | head -c 3000']\n"
    )
    env = covey_env(swarm_host, tmp_path / "store.db")
    base = [sys.executable, "-m", "covey", "batch", "--no-progress", "--log-cap", "1k"]
    text = await anyio.run_process([*base, str(batch)], env=env, check=False)
    doc = await anyio.run_process([*base, "--json", str(batch)], env=env, check=False)
    assert text.returncode == 0 and doc.returncode == 0, text.stderr
    summary = text.stderr.decode()
    assert "1 job(s) with logs cut to their last --log-cap bytes:" in summary, summary
    jobs = {j["name"]: j for j in json.loads(doc.stdout)["jobs"]}
    assert (jobs["big"]["logs_truncated"], jobs["big"]["logs_complete"]) == (True, False)
    assert (jobs["small"]["logs_truncated"], jobs["small"]["logs_complete"]) == (False, True)
