"""Nothing owned by a process that is gone; no operator path that hangs (issue 12, items 1-4, 7).

Each test reproduces what an operator did on the landed code and what went wrong then: a
cancel racing retryable failures left jobs ``retrying`` forever; a cancel from another shell
never ended a foreground ``covey batch``; ``covey run -d`` beside a supervisor was never
collected; a ``covey batch`` killed with -9 left its work to nobody, and ``covey cancel``
recorded jobs that had exited 0 as cancelled; two supervisors started on one store.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from typing import Any

import pytest
from tests.engine.covey_env import CoveyEnv, wait_for

pytestmark = pytest.mark.engine

IMAGE = "busybox:latest"


def sleeper(name: str, seconds: float, extra: str = "") -> dict[str, Any]:
    return {"name": name, "image": IMAGE, "command": ["sh", "-c", f"sleep {seconds}{extra}"]}


def batch_id(env: CoveyEnv) -> str:
    """The batch a `covey batch` process just created (the store may not exist yet)."""

    def look() -> list[Any]:
        try:
            return env.query("SELECT id FROM batches")
        except sqlite3.OperationalError:
            return []

    rows = wait_for("the batch in the store", look, 30)
    return str(rows[0]["id"])


def _ended(env: CoveyEnv, count: int) -> bool:
    """``count`` of this store's tasks have ended on the engine (docker's own view)."""
    out = subprocess.run(
        ["docker", "service", "ps", "--format", "{{.CurrentState}}", "--filter",
         "desired-state=shutdown", *env.services()],
        env=env.environ, capture_output=True, text=True, timeout=30, check=False,
    ).stdout  # fmt: skip
    return sum(line.startswith("Complete") for line in out.splitlines()) >= count


def supervising(env: CoveyEnv) -> Any:
    sup = env.supervise()
    wait_for("the supervisor to start", lambda: "supervising" in sup.logs(), 30)
    return sup


def test_cancel_racing_retryable_failures_leaves_no_job_behind(env: CoveyEnv) -> None:
    """Item 1: the end is decided from the job as the store holds it when it is recorded."""
    supervising(env)
    jobs = [
        sleeper(f"f{i}", 3, "; exit 1") | {"retry": {"attempts": 3, "backoff": "5s"}}
        for i in range(20)
    ]
    batch = env.submit("-f", env.batch_file("fail.yaml", jobs))["batch"]
    wait_for("a first start", lambda: env.states(batch)["running"] >= 1, 60)
    time.sleep(3.0)  # the first failures are being recorded about now
    env.covey("cancel", batch)
    done = env.covey("wait", batch, "--timeout", "60", check=False)
    assert done.returncode == 1, done.stderr  # ended (not all succeeded), not 124
    stuck = env.query(
        "SELECT name, state FROM jobs WHERE batch_id=? AND state NOT IN ('cancelled', 'failed')",
        (batch,),
    )
    assert [tuple(r) for r in stuck] == []
    assert env.states(batch)["cancelled"] >= 1
    env.wait_settled(batch, timeout=60)
    assert env.services() == []


def test_an_outside_cancel_ends_a_foreground_batch(env: CoveyEnv) -> None:
    """Item 2: `covey cancel` from another shell; `covey batch` used to wait for minutes."""
    jobs = [sleeper(f"s{i}", 5) for i in range(24)]
    proc = env.spawn("batch", env.batch_file("b.yaml", jobs), "--json", "--max-concurrent", "4")
    batch = batch_id(env)
    wait_for("jobs running", lambda: env.states(batch)["running"] >= 2, 60)
    started = time.monotonic()
    env.covey("cancel", batch)
    out, err = proc.communicate(timeout=40)
    took = time.monotonic() - started
    assert proc.returncode == 1, err
    doc = json.loads(out)
    states = {j["state"] for j in doc["jobs"]}
    assert doc["total"] == 24
    assert states <= {"cancelled", "succeeded"}, states
    assert sum(j["state"] == "cancelled" for j in doc["jobs"]) >= 18
    assert took < 20, f"covey batch took {took:.1f}s to end after the cancel"
    env.wait_settled(batch, timeout=30)
    assert env.services() == []


def test_a_killed_foreground_batch_is_recorded_by_prune_and_adopted(env: CoveyEnv) -> None:
    """Item 4: kill -9 of `covey batch`; prune records what ended (then removes it), and a
    supervisor adopts what still runs."""
    jobs = [sleeper(f"quick{i}", 5) for i in range(3)] + [sleeper(f"slow{i}", 15) for i in range(3)]
    proc = env.spawn("batch", env.batch_file("k.yaml", jobs))
    batch = batch_id(env)
    wait_for("all six started", lambda: env.states(batch)["running"] >= 3, 60)
    wait_for("all six attempts", lambda: len(env.query("SELECT id FROM attempts")) == 6, 30)
    proc.kill()
    proc.communicate(timeout=10)
    wait_for("the quick ones to end", lambda: len(env.services()) == 6 and _ended(env, 3), 30)

    pruned = env.covey("prune")
    jobs_now = env.jobs(batch)
    for i in range(3):
        quick = jobs_now[f"quick{i}"]
        assert (quick["state"], quick["exit_code"]) == ("succeeded", 0)
        assert jobs_now[f"slow{i}"]["state"] in ("pending", "running")
    sources = env.query("SELECT source FROM transitions WHERE state='succeeded'")
    assert [r["source"] for r in sources] == ["prune"] * 3
    assert "3 job(s) of covey processes that are gone still run" in pruned.stderr
    assert len(pruned.stdout.split()) == 3  # the quick ones' services, removed
    assert len(env.services()) == 3

    supervising(env)
    env.wait_settled(batch, timeout=60)
    assert set(env.states(batch)) == {"succeeded"}
    assert env.services() == []


def test_cancel_records_what_had_ended_as_it_ended(env: CoveyEnv) -> None:
    """Item 4: `covey cancel` of a batch whose process is gone must not call exit 0 cancelled."""
    jobs = [sleeper("ok0", 4), sleeper("ok1", 4), sleeper("long", 120)]
    proc = env.spawn("batch", env.batch_file("c.yaml", jobs))
    batch = batch_id(env)
    wait_for("a start", lambda: env.states(batch)["running"] >= 1, 60)
    wait_for("all three attempts", lambda: len(env.query("SELECT id FROM attempts")) == 3, 30)
    proc.kill()
    proc.communicate(timeout=10)
    wait_for("the short ones to end", lambda: _ended(env, 2), 30)
    done = env.covey("cancel", batch)
    assert "cancelled 1 job(s)" in done.stdout, done.stdout
    jobs_now = env.jobs(batch)
    assert {n: r["state"] for n, r in jobs_now.items()} == {
        "ok0": "succeeded",
        "ok1": "succeeded",
        "long": "cancelled",
    }
    wait_for("no service left", lambda: env.services() == [], 30)


def test_one_supervisor_per_store_and_a_standby_takes_over(env: CoveyEnv) -> None:
    """Item 7: a second supervisor is refused, naming the first; `--standby` waits and takes
    over when the active one is killed."""
    active = supervising(env)
    assert active.proc is not None
    second = env.covey("supervise", check=False, timeout=30)
    assert second.returncode == 125
    assert f"pid {active.proc.pid}" in second.stderr
    assert "--standby" in second.stderr
    assert "Traceback" not in second.stderr

    standby = env.supervise("--standby")
    wait_for("the standby to wait", lambda: "standing by" in standby.logs(), 30)
    active.kill9()
    wait_for("the standby to take over", lambda: "taking over" in standby.logs(), 15)
    doc = env.submit(IMAGE, "sh", "-c", "echo served")
    env.covey("wait", doc["batch"], "--timeout", "60")


def test_a_supervisor_started_while_the_engine_is_away_waits_for_it(env: CoveyEnv) -> None:
    """Found by the soak: a supervisor restarted while dockerd restarted exited 125. It waits
    for the engine (up to --engine-timeout) as a running one does."""
    from soak.proxy import EventCutter

    upstream = env.host.removeprefix("unix://")
    listen = env.tmp / "late.sock"
    env.environ["DOCKER_HOST"] = f"unix://{listen}"  # nothing listens there yet
    sup = env.supervise()
    wait_for("the supervisor to wait", lambda: "waiting for the Docker engine" in sup.logs(), 30)
    assert sup.alive()
    with EventCutter(listen, type(listen)(upstream)):
        wait_for("the supervisor to start", lambda: "supervising" in sup.logs(), 30)
        env.environ["DOCKER_HOST"] = env.host
        doc = env.submit(IMAGE, "true")
        env.covey("wait", doc["batch"], "--timeout", "60")
        sup.stop()


def test_run_detached_is_collected_with_the_engines_time_of_its_end(env: CoveyEnv) -> None:
    """Item 3: `covey run -d` next to a running supervisor is collected; one started while no
    supervisor ran is recorded by the next one with the time it really ended."""
    sup = supervising(env)
    job = env.covey("run", "-d", IMAGE, "sh", "-c", "sleep 1; exit 7").stdout.strip()
    wait_for("the detached job to be recorded", lambda: _state(env, job) == "failed", 30)
    assert env.query("SELECT exit_code FROM jobs WHERE id=?", (job,))[0][0] == 7

    sup.stop()
    job = env.covey("run", "-d", IMAGE, "sh", "-c", "exit 3").stdout.strip()
    created = env.query("SELECT created FROM attempts WHERE job_id=?", (job,))[0][0]
    time.sleep(6.0)  # it ended long ago when the next supervisor looks
    assert _state(env, job) in ("pending", "running")
    started = time.time()
    supervising(env)
    wait_for("the supervisor to record it", lambda: _state(env, job) == "failed", 30)
    row = env.query("SELECT finished, exit_code FROM jobs WHERE id=?", (job,))[0]
    assert row["exit_code"] == 3
    assert row["finished"] < started - 3.0, "recorded with the pick-up time, not the real one"
    assert row["finished"] - created < 3.0
    env.wait_settled(timeout=30)
    assert env.services() == []


def _state(env: CoveyEnv, job: str) -> str | None:
    rows = env.query("SELECT state FROM jobs WHERE id=?", (job,))
    return str(rows[0][0]) if rows else None


def test_prune_jobs_deletes_old_history_and_keeps_the_rest(env: CoveyEnv) -> None:
    """Retention: `covey prune --jobs --older-than` deletes what ended before then."""
    supervising(env)
    old = env.submit(IMAGE, "true")["batch"]
    env.covey("wait", old, "--timeout", "60")
    refused = env.covey("prune", "--jobs", check=False)
    assert refused.returncode == 125
    assert "--older-than" in refused.stderr
    time.sleep(10.0)
    new = env.submit(IMAGE, "true")["batch"]
    env.covey("wait", new, "--timeout", "60")
    done = env.covey("prune", "--jobs", "--older-than", "9s")
    assert "deleted 1 job(s)" in done.stderr, done.stderr
    left = {r["batch_id"] for r in env.query("SELECT batch_id FROM jobs")}
    assert left == {new}
