"""Pipelines on the real engine: word count, fan-outs decided at run time, failure
propagation, and exactly-once stages across kill -9 of the supervisor (issue 10).

Side effects are counted from a bind-mounted directory each job appends to: what ran is
what the files say, not what covey recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tests.engine.covey_env import CoveyEnv, wait_for

pytestmark = pytest.mark.engine

IMAGE = "busybox:latest"


def job(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": IMAGE, "command": ["sh", "-c", script], **extra}


def shared(tmp: Path) -> Path:
    """A directory the jobs bind-mount at /out (world-writable: jobs may run as anyone)."""
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    os.chmod(out, 0o777)
    return out


def ran(out: Path) -> Counter[str]:
    """How many times each job said it ran (one line per run in /out/ran)."""
    path = out / "ran"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def configs(env: CoveyEnv) -> list[str]:
    """This store's swarm configs (inputs, shared outputs)."""
    return subprocess.run(
        ["docker", "config", "ls", "-q", "--filter", f"label=covey.store={env.store_id}"],
        env=env.environ, capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()  # fmt: skip


@pytest.mark.parametrize("lines", [3, 0])
def test_a_fan_out_has_one_instance_per_printed_line(env: CoveyEnv, lines: int) -> None:
    """Decided when the source ends; none printed: none made, and `needs` of it are met."""
    out = shared(env.tmp)
    jobs = [
        job("source", f"seq 1 {lines} | sed 's/^/item-/'; echo; echo '   '"),
        job(
            "each",
            'echo "$COVEY_INDEX $COVEY_ITEM" >> /out/items; echo each >> /out/ran',
            needs=["source"],
            for_each={"output_of": "source"},
            volumes=[f"{out}:/out"],
        ),
        job("after", "echo after >> /out/ran", needs=["each"], volumes=[f"{out}:/out"]),
    ]
    done = env.covey("batch", env.batch_file("f.yaml", jobs), "--json")
    doc = json.loads(done.stdout)
    assert doc["total"] == 2 + lines
    items = (out / "items").read_text().splitlines() if lines else []
    assert sorted(items) == [f"{i} item-{i + 1}" for i in range(lines)]
    assert ran(out) == Counter({"each": lines, "after": 1}) - Counter()
    shown = json.loads(env.covey("show", "--json", doc["batch"]).stdout)
    (stage,) = [s for s in shown["stages"] if s["name"] == "each"]
    assert (stage["size"], stage["items_from"]) == (lines, "source")


def test_failure_propagates_by_condition(env: CoveyEnv) -> None:
    """One map instance fails: `succeeded` dependents are skipped (and theirs), `completed`
    and `failed` ones run, and with `each` only the failed instance's partner is skipped."""
    out = shared(env.tmp)
    vol = {"volumes": [f"{out}:/out"]}
    jobs = [
        job("map", '[ "$COVEY_ITEM" != bad ] || exit 3', for_each=["a", "bad", "c"]),
        job("ok", "echo ok >> /out/ran", needs=["map"], **vol),
        job("after-ok", "echo after-ok >> /out/ran", needs=["ok"], **vol),
        job("any", "echo any >> /out/ran", needs={"map": "completed"}, **vol),
        job("alert", "echo alert >> /out/ran", needs={"map": "failed"}, **vol),
        job(
            "pair",
            "echo pair-$COVEY_INDEX >> /out/ran",
            needs={"map": "each"},
            for_each=["x", "y", "z"],
            **vol,
        ),
    ]
    done = env.covey("batch", env.batch_file("p.yaml", jobs), "--json", check=False)
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    states = {j["name"]: j["state"] for j in doc["jobs"]}
    assert states == {
        "map-0": "succeeded",
        "map-1": "failed",
        "map-2": "succeeded",
        "ok": "skipped",
        "after-ok": "skipped",
        "any": "succeeded",
        "alert": "succeeded",
        "pair-0": "succeeded",
        "pair-1": "skipped",
        "pair-2": "succeeded",
    }
    assert doc["skipped"] == 3
    errors = {j["name"]: j["error"] for j in doc["jobs"]}
    assert errors["ok"] == "map-1 failed"
    assert errors["after-ok"] == "ok skipped"
    assert errors["pair-1"] == "map-1 failed"
    assert ran(out) == Counter({"any": 1, "alert": 1, "pair-0": 1, "pair-2": 1})
    shown = env.covey("show", "after-ok").stdout
    assert "stage     after-ok, needs ok (succeeded)" in shown
    assert "skipped: ok skipped" in shown
    skipped = env.covey("ls", "--state", "skipped", "--json").stdout.splitlines()
    assert sorted(json.loads(line)["name"] for line in skipped) == ["after-ok", "ok", "pair-1"]


def test_retry_reruns_the_failed_and_reopens_what_was_skipped(env: CoveyEnv) -> None:
    """`covey retry BATCH` after the failure is fixed: the failed job runs again, and the
    jobs skipped because of it run now."""
    out = shared(env.tmp)
    vol = {"volumes": [f"{out}:/out"]}
    jobs = [
        job("flaky", "echo flaky >> /out/ran; [ -e /out/fixed ]", **vol),
        job("next", "echo next >> /out/ran", needs=["flaky"], **vol),
        job("last", "echo last >> /out/ran", needs=["next"], **vol),
    ]
    supervisor = env.supervise()
    wait_for("the supervisor", lambda: "supervising" in supervisor.logs(), 30)
    batch = env.submit("-f", env.batch_file("r.yaml", jobs))["batch"]
    assert env.covey("wait", batch, "--timeout", "60", check=False).returncode == 1
    assert env.states(batch) == Counter({"failed": 1, "skipped": 2})
    (out / "fixed").touch()
    env.covey("retry", batch)
    assert env.covey("wait", batch, "--timeout", "60", check=False).returncode == 0
    assert ran(out) == Counter({"flaky": 2, "next": 1, "last": 1})


UPTIME = "cut -d' ' -f1 /proc/uptime"  # the host's clock in 1/100 s (busybox date has no %N)


def _kill_and_restart(env: CoveyEnv, supervisor: Any) -> Any:
    supervisor.kill9()
    again = env.supervise()
    wait_for("the new supervisor", lambda: "supervising" in again.logs(), 30)
    return again


def test_kill9_of_the_supervisor_in_map_and_in_reduce_runs_each_job_once(env: CoveyEnv) -> None:
    """kill -9 while map instances run, again while the reduce runs: every job ran exactly
    once (counted from the side effects), and the reduce started once, after the map."""
    out = shared(env.tmp)
    vol = {"volumes": [f"{out}:/out"]}
    jobs = [
        job("source", "seq 1 6"),
        job(
            "map",
            f"echo map-$COVEY_INDEX >> /out/ran; sleep 4; {UPTIME} >> /out/map-end",
            needs=["source"],
            for_each={"output_of": "source"},
            **vol,
        ),
        job(
            "reduce",
            f"{UPTIME} > /out/reduce-start; echo reduce >> /out/ran; sleep 4",
            needs=["map"],
            **vol,
        ),
    ]
    supervisor = env.supervise()
    wait_for("the supervisor", lambda: "supervising" in supervisor.logs(), 30)
    batch = env.submit("-f", env.batch_file("k.yaml", jobs))["batch"]
    wait_for("map running", lambda: sum(ran(out).values()) >= 2, 60)
    supervisor = _kill_and_restart(env, supervisor)
    wait_for("reduce running", lambda: ran(out)["reduce"] == 1, 90)
    supervisor = _kill_and_restart(env, supervisor)
    assert env.covey("wait", batch, "--timeout", "90", check=False).returncode == 0
    assert ran(out) == Counter({f"map-{i}": 1 for i in range(6)} | {"reduce": 1})
    ends = [float(x) for x in (out / "map-end").read_text().split()]
    assert float((out / "reduce-start").read_text()) > max(ends)
    env.wait_settled(batch, timeout=30)
    assert env.services() == []


def test_a_pipeline_error_is_refused_before_anything_runs(env: CoveyEnv) -> None:
    jobs = [job("a", "true", needs=["b"]), job("b", "true", needs=["a"])]
    path = env.batch_file("bad.yaml", jobs)
    done = env.covey("batch", path, check=False)
    assert done.returncode == 125
    assert done.stderr.startswith(f"covey: {path}:")
    assert "a cycle: a -> b -> a" in done.stderr
    assert not env.db.exists() or env.query("SELECT count(*) FROM jobs")[0][0] == 0


def test_the_readme_word_count_runs_as_written(env: CoveyEnv) -> None:
    """The README's pipeline, pasted: its shell lines make the book and the batch file (in a
    directory of this test instead of /tmp/wc), then `covey batch` as the README says. The
    reduce's answer is the true count of the book, computed here."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Pipelines", 1)[1]
    block = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
    setup = block.split("\ncovey batch", 1)[0]
    here = shared(env.tmp)
    subprocess.run(["bash", "-euc", setup.replace("/tmp/wc", str(here))], check=True, timeout=30)
    truth = len((here / "book.txt").read_text().split())
    done = env.covey("batch", str(here / "wc.yaml"), "--json", check=False)
    doc = json.loads(done.stdout)
    by_name = {j["name"]: j for j in doc["jobs"]}
    assert by_name["total"]["state"] == "succeeded", done.stderr
    assert env.covey("logs", "total").stdout == f"{truth}\n"
    assert sorted(n for n in by_name if n.startswith("count-")) == [f"count-{i}" for i in range(10)]
    # `alert` waits for a failure that never came: skipped, and skipped is never success
    assert by_name["alert"]["state"] == "skipped"
    assert (doc["succeeded"], doc["skipped"], doc["failed"], doc["total"]) == (12, 1, 0, 13)
    assert done.returncode == 1
    shown = env.covey("show", doc["batch"]).stdout
    for stage in ("split", "count", "total", "alert"):
        assert stage in shown
    env.wait_settled(timeout=30)
    assert env.services() == []
    assert configs(env) == []  # the shared outputs went with the batch


def test_inputs_over_the_limit_are_refused_and_leave_nothing(env: CoveyEnv) -> None:
    """One map instance printed more than a swarm config holds: the reduce ends rejected,
    naming the file, the size and the way out; nothing of it reached the engine."""
    jobs = [
        job("big", "head -c 1100000 /dev/zero | tr '\\\\0' x"),
        job("small", "echo 5"),
        job("reduce", "cat /covey/inputs/*/0", needs=["big", "small"], inputs=["big", "small"]),
    ]
    done = env.covey(
        "batch", env.batch_file("big.yaml", jobs), "--json", "--log-cap", "2M", check=False
    )
    assert done.returncode == 1
    by_name = {j["name"]: j for j in json.loads(done.stdout)["jobs"]}
    assert by_name["big"]["state"] == "succeeded"
    reduce = by_name["reduce"]
    assert reduce["state"] == "rejected", reduce
    assert "big/0" in reduce["error"] and "1,023,999" in reduce["error"], reduce["error"]
    assert "shared volume" in reduce["error"]
    assert env.query("SELECT count(*) FROM attempts WHERE engine_id IS NOT NULL AND job_id=?",
                     (reduce["id"],))[0][0] == 0  # fmt: skip
    env.wait_settled(timeout=30)
    assert env.services() == []
    assert configs(env) == []


def test_outputs_are_shared_ahead_so_the_reduce_makes_only_its_index(env: CoveyEnv) -> None:
    """Each map instance's stdout becomes a config when it is done; the reduce's service
    names those and makes only its index.json; all of them go when the batch is over."""
    jobs = [
        job("map", "echo $COVEY_ITEM", for_each=["1", "2", "3", "4"]),
        job("reduce", "cat /covey/inputs/map/[0-9]*; sleep 4", needs=["map"], inputs=["map"]),
    ]
    proc = env.spawn("batch", env.batch_file("s.yaml", jobs), "--json")

    def names() -> list[str]:
        listed = subprocess.run(
            ["docker", "config", "ls", "--format", "{{.Name}}", "--filter",
             f"label=covey.store={env.store_id}"],
            env=env.environ, capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        return listed.split()

    running = "SELECT 1 FROM jobs WHERE name='reduce' AND state='running'"
    wait_for("the reduce to run", lambda: env.query_when_ready(running), 60)
    seen = names()
    assert sum(n.endswith("-out") for n in seen) == 4, seen
    assert sum("-in-" in n for n in seen) == 1, seen
    out, err = proc.communicate(timeout=60)
    by_name = {j["name"]: j for j in json.loads(out)["jobs"]}
    assert by_name["reduce"]["state"] == "succeeded", err
    reduce = env.query("SELECT id, attempts FROM jobs WHERE name='reduce'")[0]
    assert env.logs(f"{reduce['id']}-{reduce['attempts']}")["stdout"] == b"1\n2\n3\n4\n"
    assert names() == []


async def test_the_python_api_runs_a_pipeline_and_yields_every_result(
    swarm_host: str, tmp_path: Path
) -> None:
    """`Client.run_batch(Pipeline)`: results as jobs end, the fan-out's instances and the
    skipped job included; `Client.submit` of a bad graph is refused with the stage named."""
    from covey import Client, JobSpec, JobState, Pipeline, SpecError

    def spec(script: str) -> JobSpec:
        return JobSpec(image=IMAGE, command=("sh", "-c", script))

    p = Pipeline()
    p.add("split", spec("seq 1 5"))
    p.add("square", spec("echo $((COVEY_ITEM * COVEY_ITEM))"), needs=["split"], for_each="split")
    p.add(
        "sum",
        spec("cat /covey/inputs/square/[0-9]* | awk '{s += $1} END {print s}'"),
        needs=["square"],
        inputs=["square"],
    )
    p.add("alert", spec("true"), needs={"square": "failed"})
    async with Client(swarm_host, db=tmp_path / "db") as c:
        results = [r async for r in c.run_batch(p)]
        bad = Pipeline()
        bad.add("a", spec("true"), needs=["nope"])
        with pytest.raises(SpecError, match=r"stages\[0\]\.needs: no job named 'nope'"):
            await c.submit(bad)
    by_name = {r.name: r for r in results}
    assert len(results) == 8
    assert by_name["sum"].stdout == b"55\n"
    assert by_name["alert"].state is JobState.SKIPPED
    assert {r.stage for r in results} == {"split", "square", "sum", "alert"}
    assert sorted(by_name[f"square-{i}"].stdout for i in range(5)) == sorted(
        f"{n * n}\n".encode() for n in range(1, 6)
    )
