"""``covey supervise`` on a real engine, run as the process operators run.

The supervisor is always a subprocess (``python -m covey --db DB supervise``) that the tests
kill -9, SIGTERM, or leave running while the engine's dockerd restarts; producers and operators
are ``covey submit/ls/show/logs/cancel/retry/wait`` processes. The checks read the store file
(SQLite, read-only use) and the engine itself: its service list, and its own event stream,
which counts every container created for each attempt, so "nothing ran twice" is measured by
the engine, not taken from covey's word.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path

import anyio
import pytest
from tests.engine.covey_env import TERMINAL, CoveyEnv, Creates, Supervisor, free_port, wait_for

from covey.backend import SwarmBackend, covey_labels
from covey.engine import Engine
from covey.spec import JobSpec
from covey.store import Store

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
IMAGE = "busybox:latest"
ENDINGS = TERMINAL | {"retrying"}


def engine_of(host: str) -> tuple[str, Path]:
    """The engine.sh name and state root behind a DOCKER_HOST of ``ROOT/NAME/run/docker.sock``."""
    sock = Path(host.removeprefix("unix://"))
    if not host.startswith("unix://") or sock.parent.name != "run":
        pytest.skip(f"{host} is not an engine.sh engine: cannot restart its dockerd")
    return sock.parent.parent.name, sock.parent.parent.parent


def no_tracebacks(sup: Supervisor) -> None:
    text = sup.logs()
    assert "Traceback" not in text, text


def check_ran_once(env: CoveyEnv, creates: Creates, batch: str | None = None) -> None:
    """Each attempt the store knows got exactly one container on the engine, and no other did."""
    time.sleep(1.0)  # let the last events reach the watcher
    seen = creates.per_attempt()
    ids = [r["id"] for r in env.query("SELECT id FROM attempts")]
    if batch is not None:
        jobs = {r["id"] for r in env.query("SELECT id FROM jobs WHERE batch_id=?", (batch,))}
        ids = [i for i in ids if i.rsplit("-", 1)[0] in jobs]
    twice = {a: n for a, n in seen.items() if n > 1}
    assert not twice, f"attempts whose container was created more than once: {twice}"
    never = [a for a in ids if a not in seen]
    assert not never, f"attempts the engine never created a container for: {never}"
    if batch is None:
        unknown = set(seen) - set(ids)
        assert not unknown, f"containers for attempts the store does not know: {unknown}"


# -- 1. kill -9 at random moments ------------------------------------------------------------


def kill_exit(i: int) -> int:
    return (i % 5 == 4) * (i % 7 + 1)


def test_kill9_during_batch_loses_nothing_and_runs_nothing_twice(env: CoveyEnv) -> None:
    seed = int(os.environ.get("COVEY_TEST_SEED") or time.time_ns() % 1_000_000)
    rng = random.Random(seed)
    print(f"COVEY_TEST_SEED={seed}")
    script = (
        "echo out-$COVEY_INDEX; echo err-$COVEY_INDEX >&2; sleep 0.$((RANDOM % 8));"
        " exit $(( (COVEY_INDEX % 5 == 4) * (COVEY_INDEX % 7 + 1) ))"
    )
    path = env.batch_file(
        "kills.yaml",
        [
            {
                "name": "r",
                "image": IMAGE,
                "command": ["sh", "-c", "echo retry-$COVEY_INDEX; exit 9"],
                "retry": {"attempts": 2, "backoff": 0},
                "for_each": {"range": [0, 10]},
            },
            {
                "name": "k",
                "image": IMAGE,
                "command": ["sh", "-c", script],
                "for_each": {"range": [0, 110]},
            },
        ],
    )
    batch = env.submit("--file", path)["batch"]
    creates = env.creates()
    sup = env.supervise("--max-concurrent", "20")
    kills = 0
    for _ in range(5):
        time.sleep(rng.uniform(1.5, 3.5))
        if env.settled(batch):
            break
        sup.kill9()
        kills += 1
        time.sleep(rng.uniform(0.0, 0.4))
        sup.start()
    assert kills == 5, f"the batch ended after {kills} kills: make it longer"

    waited = env.covey("wait", batch, "--timeout", "150", check=False, timeout=170)
    assert waited.returncode == 1, waited.stderr  # some jobs fail on purpose
    env.wait_settled(batch)
    assert env.services() == []

    jobs = env.jobs(batch)
    assert len(jobs) == 120
    for i in range(110):
        job = jobs[f"k-{i}"]
        code = kill_exit(i)
        assert (job["state"], job["exit_code"], job["attempts"]) == (
            "succeeded" if code == 0 else "failed",
            code,
            1,
        ), dict(job)
    for i in range(10):
        job = jobs[f"r-{i}"]
        assert (job["state"], job["exit_code"], job["attempts"]) == ("failed", 9, 2), dict(job)
    for name, job in jobs.items():
        attempts = env.attempts(job["id"])
        assert [a["n"] for a in attempts] == list(range(1, job["attempts"] + 1)), name
        for a in attempts:
            assert (a["phase"], a["logs_saved"], a["removed"]) == ("ended", 1, 1), dict(a)
            logs = env.logs(a["id"])
            kind, _, index = name.partition("-")
            if kind == "k":
                assert logs == {
                    "stdout": f"out-{index}\n".encode(),
                    "stderr": f"err-{index}\n".encode(),
                }
                assert a["exit_code"] == kill_exit(int(index))
            else:
                assert logs == {"stdout": f"retry-{index}\n".encode(), "stderr": b""}
                assert (a["outcome"], a["exit_code"]) == ("failed", 9)
        history = env.query(
            "SELECT attempt_id, state FROM transitions WHERE job_id=?", (job["id"],)
        )
        finals = [t["state"] for t in history if t["state"] in TERMINAL]
        assert finals == [job["state"]], f"{name} ended {finals}"
        ends = Counter(t["attempt_id"] for t in history if t["state"] in ENDINGS)
        assert set(ends.values()) == {1} and len(ends) == job["attempts"], f"{name}: {ends}"
    check_ran_once(env, creates)
    assert sup.term()[0] == 0
    no_tracebacks(sup)


# -- 2. the engine's dockerd restarts under the supervisor -------------------------------------


def test_dockerd_restart_mid_batch(env: CoveyEnv) -> None:
    name, root = engine_of(env.host)
    path = env.batch_file(
        "restart.yaml",
        [
            {
                "name": "d",
                "image": IMAGE,
                "command": ["sh", "-c", "echo d-$COVEY_INDEX; sleep 1.5"],
                "for_each": {"range": [0, 40]},
            }
        ],
    )
    batch = env.submit("--file", path)["batch"]
    port = free_port()
    sup = env.supervise("--max-concurrent", "8", "--metrics-addr", f"127.0.0.1:{port}")
    wait_for("8 jobs to succeed", lambda: env.states(batch)["succeeded"] >= 8, 60)
    restart = time.time()
    subprocess.run(
        ["bash", str(REPO / "scripts" / "engine.sh"), "restart-dockerd", "--name", name],
        env={**env.environ, "COVEY_ENGINE_ROOT": str(root)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=150,
        check=True,
    )
    restarted = time.time()
    assert sup.alive(), sup.logs()
    waited = env.covey("wait", batch, "--timeout", "120", check=False, timeout=140)
    env.wait_settled(batch, timeout=60)
    jobs = env.jobs(batch)
    assert len(jobs) == 40
    assert waited.returncode == 0, (waited.stderr, env.states(batch))
    lost_logs = []
    for i in range(40):
        job = jobs[f"d-{i}"]
        attempts = env.attempts(job["id"])
        for a in attempts[:-1]:  # runs the restart killed are lost (and re-run), not failed
            assert a["outcome"] == "lost", dict(a)
        last = attempts[-1]
        logs = env.logs(last["id"])
        if logs["stdout"] != f"d-{i}\n".encode():
            # The engine removes the containers of ended tasks when dockerd restarts, and then
            # serves their logs as empty: what covey had not read before is gone.
            assert logs == {"stdout": b"", "stderr": b""}, (i, logs)
            assert restart - 5.0 < last["ended"] < restarted, (i, dict(last))
            lost_logs.append(i)
    print(f"logs lost by the engine's restart: {lost_logs}")
    assert env.services() == []
    metrics = scrape(port)
    assert metric(metrics, "covey_event_stream_reconnects") >= 1
    assert metric(metrics, "covey_api_errors") >= 1
    assert sup.term()[0] == 0
    no_tracebacks(sup)


# -- 3. producers ---------------------------------------------------------------------------


def test_concurrent_producers_each_job_runs_once(env: CoveyEnv) -> None:
    env.covey("ls")  # create the store, so the event watcher knows its id before any job
    creates = env.creates()
    sup = env.supervise()
    jobs_of = lambda p: [  # noqa: E731
        {
            "name": p,
            "image": IMAGE,
            "command": ["sh", "-c", f"echo {p}-$COVEY_INDEX"],
            "for_each": {"range": [0, 12]},
        }
    ]
    a, b = env.batch_file("a.yaml", jobs_of("a")), env.batch_file("b.yaml", jobs_of("b"))
    solo_cmd = ("sh", "-c", "echo $WHO")
    procs = [
        env.spawn("submit", "--json", "--idempotency-key", "ka", "--file", a),
        env.spawn("submit", "--json", "--file", b),
        env.spawn("submit", "--json", "--idempotency-key", "ka", "--file", a),
        env.spawn("submit", "--json", "--name", "solo", "-e", "WHO=solo", IMAGE, *solo_cmd),
    ]
    docs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        docs.append(json.loads(out))
    first, other, again, solo = docs
    assert (again["batch"], again["jobs"]) == (first["batch"], first["jobs"])
    assert sorted([first["existing"], again["existing"]]) == [False, True]
    assert len({first["batch"], other["batch"], solo["batch"]}) == 3
    env.covey("wait", first["batch"], other["batch"], solo["batch"], "--timeout", "90", timeout=100)
    env.wait_settled()
    jobs = env.jobs()
    assert len(jobs) == 25
    for name, job in jobs.items():
        assert (job["state"], job["attempts"]) == ("succeeded", 1), dict(job)
        want = "solo" if name == "solo" else name
        assert env.logs(f"{job['id']}-1")["stdout"] == f"{want}\n".encode()
    check_ran_once(env, creates)
    assert sup.term()[0] == 0
    no_tracebacks(sup)


# -- 4. cancel -----------------------------------------------------------------------------


def test_cancel_running_batch(env: CoveyEnv) -> None:
    path = env.batch_file(
        "slow.yaml",
        [{"name": "s", "image": IMAGE, "command": ["sleep", "30"], "for_each": {"range": [0, 6]}}],
    )
    batch = env.submit("--file", path)["batch"]
    sup = env.supervise("--max-concurrent", "3")
    wait_for("3 jobs running", lambda: env.states(batch)["running"] == 3, 60)
    done = env.covey("cancel", batch)
    assert "cancelled 6" in done.stdout
    wait_for("no service left", lambda: not env.services(), 15)
    env.wait_settled(batch, timeout=30)
    time.sleep(2.5)  # the supervisor would have admitted the queued ones by now
    assert env.services() == []
    jobs = env.jobs(batch)
    assert {j["state"] for j in jobs.values()} == {"cancelled"}
    assert sorted(j["attempts"] for j in jobs.values()) == [0, 0, 0, 1, 1, 1]
    for job in jobs.values():
        for a in env.attempts(job["id"]):
            assert a["outcome"] == "cancelled", dict(a)
            assert b"could not be read" not in env.logs(a["id"]).get("stderr", b""), dict(a)
    assert sup.term()[0] == 0
    no_tracebacks(sup)


# -- 5. SIGTERM, then another supervisor adopts ------------------------------------------------


def test_sigterm_exits_and_a_new_supervisor_adopts(env: CoveyEnv) -> None:
    path = env.batch_file(
        "adopt.yaml",
        [
            {
                "name": "t",
                "image": IMAGE,
                "command": ["sh", "-c", "echo start-$COVEY_INDEX; sleep 4; echo end-$COVEY_INDEX"],
                "for_each": {"range": [0, 4]},
            }
        ],
    )
    batch = env.submit("--file", path)["batch"]
    creates = env.creates()
    sup = env.supervise()
    wait_for("4 jobs running", lambda: env.states(batch)["running"] == 4, 60)
    code, took = sup.term()
    assert code == 0, sup.logs()
    assert took < 5.0, f"SIGTERM took {took:.1f}s"
    assert len(env.services()) == 4  # the jobs go on running without covey
    assert env.states(batch)["running"] == 4
    sup.start()
    env.covey("wait", batch, "--timeout", "60", timeout=70)
    env.wait_settled(batch)
    for name, job in env.jobs(batch).items():
        i = name.split("-")[1]
        assert (job["state"], job["attempts"]) == ("succeeded", 1)
        assert env.logs(f"{job['id']}-1")["stdout"] == f"start-{i}\nend-{i}\n".encode()
    assert env.services() == []
    check_ran_once(env, creates)
    assert sup.term()[0] == 0
    no_tracebacks(sup)


# -- 6. the operator's commands ----------------------------------------------------------------


def test_operator_commands(env: CoveyEnv) -> None:
    marks = env.tmp / "marks"
    marks.mkdir()
    ticker, flaky, slow = (
        json.loads(done.stdout)
        for done in env.together(
            ("submit", "--json", "--name", "ticker", IMAGE, "sh", "-c",
             "for i in 1 2 3 4 5 6; do echo tick-$i; sleep 0.4; done"),
            ("submit", "--json", "--name", "flaky", "--mount",
             f"type=bind,source={marks},target=/m", IMAGE, "sh", "-c",
             "if [ -e /m/flag ]; then echo second; else touch /m/flag; echo first; exit 3; fi"),
            ("submit", "--json", "--name", "slow", IMAGE, "sleep", "30"),
        )
    )  # fmt: skip
    # without a supervisor, submit only queues
    early = env.covey("logs", "ticker", check=False)
    assert early.returncode == 125 and "not started" in early.stderr
    assert env.states() == Counter({"queued": 3})
    assert env.services() == []

    sup = env.supervise()
    wait_for("ticker to run", lambda: env.jobs()["ticker"]["state"] == "running", 60, 0.05)
    follow = env.spawn("logs", "-f", "ticker")
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0, err
    assert out.splitlines() == [f"tick-{i}" for i in range(1, 7)]

    ok, failed, late = env.together(
        ("wait", ticker["batch"], "--timeout", "30"),
        ("wait", "flaky", "--timeout", "30"),
        ("wait", slow["batch"], "--timeout", "1"),
    )
    assert ok.returncode == 0, ok.stderr
    assert failed.returncode == 1 and "exit 3" in failed.stderr, failed.stderr
    assert late.returncode == 124, late.stderr

    listed = [
        json.loads(x) for x in env.covey("ls", "--state", "failed", "--json").stdout.splitlines()
    ]
    assert [(j["id"], j["name"], j["exit_code"]) for j in listed] == [
        (flaky["jobs"][0], "flaky", 3)
    ]

    assert "queued 1 job" in env.covey("retry", "flaky").stdout
    assert env.covey("wait", "flaky", "--timeout", "30").returncode == 0
    shown, second, first, _ = env.together(
        ("show", "flaky", "--json"),
        ("logs", "flaky"),
        ("logs", "flaky", "--attempt", "1"),
        ("cancel", "slow"),
    )
    doc = json.loads(shown.stdout)
    assert doc["state"] == "succeeded"
    assert [(a["n"], a["outcome"], a["exit_code"]) for a in doc["attempts"]] == [
        (1, "failed", 3),
        (2, "succeeded", 0),
    ]
    assert (first.stdout, second.stdout) == ("first\n", "second\n")

    env.wait_settled()
    assert env.jobs()["slow"]["state"] == "cancelled"
    assert env.services() == []
    assert sup.term()[0] == 0
    no_tracebacks(sup)


# -- 7. metrics ----------------------------------------------------------------------------


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def metric(text: str, name: str, labels: str = "") -> float:
    """One sample's value; counters may carry prometheus' ``_total`` suffix."""
    pattern = rf"^{re.escape(name)}(?:_total)?{re.escape(labels)} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{name}{labels} not in the metrics:\n{text}"
    return float(found.group(1))


def test_metrics_endpoint(env: CoveyEnv) -> None:
    port = free_port()
    env.covey("ls")
    sup = env.supervise("--max-concurrent", "1", "--metrics-addr", f"127.0.0.1:{port}")
    path = env.batch_file(
        "m.yaml",
        [
            {
                "name": "m",
                "image": IMAGE,
                "command": ["sh", "-c", "sleep 0.5; exit $((COVEY_INDEX == 3))"],
                "for_each": {"range": [0, 4]},
            }
        ],
    )
    wait_for("the metrics endpoint", lambda: _try_scrape(port), 20)
    batch = env.submit("--file", path)["batch"]
    depth = wait_for(
        "a queue depth", lambda: metric(_try_scrape(port) or "", "covey_queue_depth") >= 2, 10, 0.1
    )
    assert depth
    assert env.covey("wait", batch, "--timeout", "60", check=False).returncode == 1

    def final() -> str | None:
        text = scrape(port)
        ok = metric(text, "covey_jobs", '{state="succeeded"}')
        return text if (ok, metric(text, "covey_jobs", '{state="failed"}')) == (3, 1) else None

    text = wait_for("the job counts", final, 10)
    assert metric(text, "covey_jobs", '{state="queued"}') == 0
    assert metric(text, "covey_queue_depth") == 0
    assert metric(text, "covey_event_stream_reconnects") == 0
    assert metric(text, "covey_api_errors") == 0
    assert metric(text, "covey_event_stream_up") == 1
    assert sup.term()[0] == 0
    no_tracebacks(sup)


def _try_scrape(port: int) -> str | None:
    try:
        return scrape(port)
    except OSError:
        return None


# -- reconcile: attempts recorded but maybe never created ----------------------------------------


def test_reconcile_repeats_creating_attempts_under_their_name(env: CoveyEnv) -> None:
    """A supervisor killed between recording an attempt and its create call (or the reply)."""
    env.covey("ls")
    creates = env.creates()

    async def crash_midway() -> tuple[str, list[str]]:
        async with Store.open(env.db) as store, Engine(env.host) as engine:
            specs = [
                JobSpec(image=IMAGE, command=("sh", "-c", f"echo {w}; sleep 1"), name=w)
                for w in ("never-created", "created-unrecorded")
            ]
            batch, ids, _ = await store.create_batch(specs)
            before, after = await store.jobs_by_id(ids)
            await store.begin_attempt(before, "swarm")  # killed before the create call
            attempt = await store.begin_attempt(after, "swarm")  # killed before its reply
            labels = covey_labels(store.id, attempt, batch, after.name)
            await SwarmBackend(engine, store.id).create(attempt, after.spec, labels)
            return batch, ids

    batch, ids = anyio.run(crash_midway)
    assert len(env.services()) == 1
    sup = env.supervise()
    env.covey("wait", batch, "--timeout", "60", timeout=70)
    env.wait_settled(batch)
    for job_id, word in zip(ids, ("never-created", "created-unrecorded"), strict=True):
        (attempt,) = env.attempts(job_id)
        assert (attempt["outcome"], attempt["n"]) == ("succeeded", 1)
        assert env.logs(attempt["id"])["stdout"] == f"{word}\n".encode()
    assert env.services() == []
    check_ran_once(env, creates)
    assert sup.term()[0] == 0
    no_tracebacks(sup)


# -- cancel reaches a foreground `covey run` too ------------------------------------------------


def test_cancel_stops_a_foreground_run(env: CoveyEnv) -> None:
    run = env.spawn("run", "-q", "--name", "fg", IMAGE, "sleep", "30")
    wait_for(
        "the run to start",
        lambda: env.query_when_ready("SELECT 1 FROM jobs WHERE state='running'"),
        60,
    )
    started = time.monotonic()
    env.covey("cancel", "fg")
    _, err = run.communicate(timeout=30)
    took = time.monotonic() - started
    assert run.returncode == 130, err
    assert took < 6.0, f"covey run noticed the cancel after {took:.1f}s"
    (job,) = env.jobs().values()
    assert job["state"] == "cancelled"
    (attempt,) = env.attempts(job["id"])
    assert b"could not be read" not in env.logs(attempt["id"]).get("stderr", b"")
    wait_for("no service left", lambda: not env.services(), 15)
