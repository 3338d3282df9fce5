"""Steering a running covey on a real engine: `covey throttle` lowers a batch's cap while it
runs (the engine's own count of running containers stays within it afterwards), `covey
pause`/`resume` stop and restart admissions, and `--priority` puts a later batch first."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time

from tests.engine.covey_env import CoveyEnv, wait_for

IMAGE = "covey-test/busybox:latest"


def running_containers(env: CoveyEnv, batch: str) -> int:
    """The engine's count (not covey's) of this batch's containers that run now."""
    out = subprocess.run(
        ["docker", "-H", env.host, "ps", "-q", "--filter", f"label=covey.batch={batch}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return len(out.split())


def sleepers(env: CoveyEnv, name: str, n: int, seconds: float, **extra: object) -> str:
    job = {"name": name, "image": IMAGE, "command": ["sleep", str(seconds)], **extra}
    return env.batch_file(f"{name}.yaml", [{**job, "for_each": {"range": [0, n]}}])


def test_throttle_pause_and_resume_a_running_batch(env: CoveyEnv) -> None:
    batch = env.submit("--file", sleepers(env, "t", 14, 3))["batch"]
    sup = env.supervise("--max-concurrent", "6")
    wait_for("6 running", lambda: running_containers(env, batch) == 6, 60)
    done = env.covey("throttle", batch, "2")
    assert done.returncode == 0, done.stderr
    assert "at most 2 job(s) at once (was none)" in done.stdout
    # what runs goes on; once the jobs admitted before the new cap was read are gone, the
    # engine never runs more than 2
    time.sleep(1.5)  # the supervisor reads the cap within a second
    before = {i for i, j in env.jobs(batch).items() if j["state"] in ("pending", "running")}
    wait_for(
        "the jobs admitted before the throttle done",
        lambda: all(env.jobs(batch)[i]["state"] == "succeeded" for i in before),
        60,
    )
    peak = 0
    paused_at = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not env.settled(batch):
        peak = max(peak, running_containers(env, batch))
        if paused_at is None and env.states(batch)["succeeded"] >= 8:
            assert env.covey("pause", batch).returncode == 0
            paused_at = time.monotonic()
            shown = json.loads(env.covey("show", "--json", batch).stdout)
            assert (shown["max_concurrent"], shown["paused"]) == (2, True)
            # what runs ends; nothing new starts while paused
            wait_for("paused: none running", lambda: running_containers(env, batch) == 0, 30)
            held = env.states(batch)
            time.sleep(2.5)  # more than a supervisor's steering period
            assert running_containers(env, batch) == 0
            assert env.states(batch) == held
            assert env.covey("resume", batch).returncode == 0
        time.sleep(0.2)
    assert paused_at is not None
    assert peak <= 2, peak
    env.wait_settled(batch, timeout=60)
    assert env.states(batch) == {"succeeded": 14}
    assert sup.term()[0] == 0


def test_a_later_batch_of_higher_priority_goes_first(env: CoveyEnv) -> None:
    low = env.submit("--file", sleepers(env, "low", 4, 3))["batch"]
    sup = env.supervise("--max-concurrent", "1")
    wait_for("low running", lambda: env.states(low)["running"] == 1, 60)
    high = env.submit("--file", sleepers(env, "high", 2, 1, priority=10))["batch"]
    env.wait_settled(high, timeout=60)
    env.wait_settled(low, timeout=60)
    started = sorted(
        (row["started"], row["batch_id"])
        for row in env.query(
            "SELECT started, batch_id FROM jobs WHERE batch_id IN (?, ?)", (low, high)
        )
    )
    # the low job that was running when the high batch came, then both high ones, then the rest
    assert [b for _, b in started] == [low, high, high, low, low, low], started
    listed = env.covey("ls", "--json", "--batch", high)
    assert {json.loads(line)["priority"] for line in listed.stdout.splitlines()} == {10}
    assert sup.term()[0] == 0


def test_a_schedule_fires_once_across_a_kill_at_its_fire_time(env: CoveyEnv) -> None:
    path = env.batch_file("every.yaml", [{"image": IMAGE, "command": ["sh", "-c", "echo fired"]}])
    added = env.covey("schedule", "add", "every", "--cron", "* * * * *", "-f", path)
    assert added.returncode == 0, added.stderr
    sup = env.supervise()
    wait_for("the supervisor up", lambda: env.query_when_ready("SELECT 1 FROM holders"), 30)
    # the next fire time, brought near (a minute is long for a test): it is the key
    fire = float(int(time.time()) + 3)
    with sqlite3.connect(env.db, timeout=30) as conn:  # commits on leaving
        conn.execute("UPDATE schedules SET next_fire=? WHERE name='every'", (fire,))
    while time.time() < fire + 0.6:  # killed around the moment it fires
        time.sleep(0.05)
    sup.kill9()
    sup.start()
    key = f"schedule:every:{fire:.0f}"
    wait_for(
        "its batch",
        lambda: env.query("SELECT id FROM batches WHERE idempotency_key=?", (key,)),
        30,
    )
    wait_for(
        "the schedule moved on",
        lambda: env.query("SELECT 1 FROM schedules WHERE next_fire > ?", (fire,)),
        30,
    )
    (batch,) = [
        r["id"] for r in env.query("SELECT id FROM batches WHERE idempotency_key=?", (key,))
    ]
    env.wait_settled(batch, timeout=60)
    (job,) = env.jobs(batch).values()
    assert (job["state"], job["attempts"]) == ("succeeded", 1)
    assert env.covey("schedule", "rm", "every").returncode == 0
    listed = env.covey("schedule", "ls", "--json")
    assert listed.stdout == ""
    assert sup.term()[0] == 0
