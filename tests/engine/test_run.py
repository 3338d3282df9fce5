"""``covey run`` as a user runs it: ``python -m covey run ...`` against the private swarm.

Every scenario is a real process with its own store (``COVEY_DB``) and ``DOCKER_HOST``. The
scenarios are slow (seconds each, mostly the engine's), so the module fixture starts all of
them at once and each test then checks its own; after every test no covey service may be
left on the engine (``docker service ls --filter label=covey.managed``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from .scenarios import Harness, Outcomes, Run, Scenarios, gather, one_line, outcome

pytestmark = pytest.mark.engine

IMAGE = "busybox:latest"
JOB_ID = re.compile(r"^[0-9a-f]{12}$")

SCENARIOS = Scenarios()
scenario = SCENARIOS.add


@pytest.fixture(scope="session")
def docker_host(request: pytest.FixtureRequest) -> str:
    """This helper's engine (COVEY_TEST_DOCKER_HOST), else the conftest's ``swarm_host``."""
    return os.environ.get("COVEY_TEST_DOCKER_HOST") or request.getfixturevalue("swarm_host")


@pytest.fixture(scope="module")
async def outcomes(docker_host: str, tmp_path_factory: pytest.TempPathFactory) -> Outcomes:
    """Every scenario of this module, run at once: name -> (ok, value or exception)."""
    return await SCENARIOS.run(Harness(docker_host, tmp_path_factory.mktemp("run")))


@pytest.fixture(autouse=True)
async def no_covey_service_left(docker_host: str) -> AsyncIterator[None]:
    yield
    done = await anyio.run_process(
        ["docker", "service", "ls", "--filter", "label=covey.managed", "--format", "{{.Name}}"],
        env={**os.environ, "DOCKER_HOST": docker_host},
    )
    assert done.stdout.decode().split() == []


# -- output and exit codes ------------------------------------------------------------------------


@scenario
async def streams(h: Harness) -> Run:
    return await h.covey(
        "run", IMAGE, "sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2"
    )


async def test_stdout_and_stderr_apart_and_nothing_else(outcomes: Any) -> None:
    run = outcome(outcomes, "streams")
    assert run.code == 0, run
    assert run.stdout == "out1\nout2\n", run
    assert run.stderr == "err1\nerr2\n", run


@scenario
async def exit_three(h: Harness) -> Run:
    return await h.covey("run", IMAGE, "sh", "-c", "echo before; exit 3")


async def test_the_jobs_exit_code_is_passed_through(outcomes: Any) -> None:
    run = outcome(outcomes, "exit_three")
    assert run.code == 3, run
    assert run.stdout == "before\n", run
    assert run.stderr == "", run  # like docker run: the code says it all


@scenario
async def as_json(h: Harness) -> tuple[Run, Run, str]:
    failed, ok = await gather(
        h.covey("run", "--json", IMAGE, "sh", "-c", "echo hi; echo oops >&2; exit 3"),
        h.covey("run", "--json", IMAGE, "true"),
    )
    return failed, ok, await h.hostname()


async def test_json_document(outcomes: Any) -> None:
    failed, ok, hostname = outcome(outcomes, "as_json")
    assert failed.code == 3, failed
    assert failed.stderr == "", failed
    doc = failed.json
    assert JOB_ID.match(doc["id"]), doc
    assert doc["state"] == "failed"
    assert doc["exit_code"] == 3
    assert doc["node"] == hostname
    assert doc["attempts"] == 1
    assert doc["created"] <= doc["started"] <= doc["finished"]
    assert doc["duration"] == pytest.approx(doc["finished"] - doc["started"])
    assert "3" in doc["error"]
    assert (doc["stdout"], doc["stderr"]) == ("hi\n", "oops\n")

    assert ok.code == 0, ok
    doc = ok.json
    assert (doc["state"], doc["exit_code"], doc["error"]) == ("succeeded", 0, None)
    assert doc["node"] == hostname
    assert doc["created"] <= doc["started"] <= doc["finished"]


# -- the job's flags ------------------------------------------------------------------------------


@scenario
async def env_flags(h: Harness) -> Run:
    env_file = h.tmp / "vars.env"
    env_file.write_text("# a comment\nC=from-file\n\nD=four\n")
    return await h.covey(
        "run", "-e", "A=1", "--env", "B", "--env-file", str(env_file),
        IMAGE, "sh", "-c", 'echo "$A|$B|$C|$D"',
        env={"B": "copied"},
    )  # fmt: skip


async def test_env_and_env_file(outcomes: Any) -> None:
    run = outcome(outcomes, "env_flags")
    assert (run.code, run.stdout) == (0, "1|copied|from-file|four\n"), run


@scenario
async def workdir_user_entrypoint(h: Harness) -> Run:
    return await h.covey(
        "run", "-w", "/tmp", "-u", "1234:5678", "--entrypoint", "/bin/sh",
        IMAGE, "-c", "pwd; id -u; id -g",
    )  # fmt: skip


async def test_workdir_user_and_entrypoint(outcomes: Any) -> None:
    run = outcome(outcomes, "workdir_user_entrypoint")
    assert (run.code, run.stdout) == (0, "/tmp\n1234\n5678\n"), run


@scenario
async def bind_mount(h: Harness) -> tuple[Run, Run, Path]:
    shared = h.tmp / "shared"
    shared.mkdir()
    rw, ro = await gather(
        h.covey(
            "run", "--mount", f"type=bind,source={shared},target=/data",
            IMAGE, "sh", "-c", "echo written > /data/out.txt",
        ),
        h.covey(
            "run", "--mount", f"type=bind,source={shared},target=/data,readonly",
            IMAGE, "sh", "-c", "echo nope > /data/ro.txt",
        ),
    )  # fmt: skip
    return rw, ro, shared


async def test_bind_mount(outcomes: Any) -> None:
    rw, ro, shared = outcome(outcomes, "bind_mount")
    assert rw.code == 0, rw
    assert (shared / "out.txt").read_text() == "written\n"
    assert ro.code not in (0, 124, 125), ro  # the shell's own error for a read-only file system
    assert "Read-only" in ro.stderr, ro
    assert not (shared / "ro.txt").exists()


@scenario
async def name_label_keep(h: Harness) -> tuple[Run, dict[str, str], dict[str, str], bool]:
    name = f"covey-h7-{secrets.token_hex(3)}"
    run = await h.covey("run", "--keep", "--name", name, "--label", "team=blue", IMAGE, "true")
    try:
        service = json.loads(
            await h.docker("service", "inspect", name, "--format", "{{json .Spec.Labels}}")
        )
        container = json.loads(
            await h.docker(
                "service", "inspect", name,
                "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Labels}}",
            )
        )  # fmt: skip
    finally:
        await h.docker("service", "rm", name, check=False)
    return run, service, container, await h.exists(name)


async def test_name_label_and_keep(outcomes: Any) -> None:
    run, service, container, still_there = outcome(outcomes, "name_label_keep")
    assert (run.code, run.stdout, run.stderr) == (0, "", ""), run
    for labels in (service, container):
        assert labels["team"] == "blue"
        assert labels["covey.managed"] == "1"
        assert labels["covey.store"]
        assert labels["covey.attempt"].endswith("-1")
    assert not still_there  # the scenario removed what --keep left


# -- deadlines, engine refusals, bad input --------------------------------------------------------


@scenario
async def timeout(h: Harness) -> tuple[Run, Run, bool]:
    plain, as_doc = await gather(
        h.covey("run", "--timeout", "2s", IMAGE, "sleep", "30"),
        h.covey("run", "--json", "--timeout", "2", IMAGE, "sleep", "30"),
    )
    service = f"covey-{as_doc.json['id']}-1" if as_doc.code == 124 else "?"
    return plain, as_doc, await h.exists(service)


async def test_timeout_exits_124_and_removes_the_service(outcomes: Any) -> None:
    plain, as_doc, service_exists = outcome(outcomes, "timeout")
    assert plain.code == 124, plain
    assert plain.seconds < 30, plain
    assert plain.stdout == ""
    assert one_line(plain.stderr), plain
    assert "timed_out" in plain.stderr
    assert "deadline of 2s" in plain.stderr
    assert as_doc.code == 124, as_doc
    doc = as_doc.json
    assert (doc["state"], doc["exit_code"]) == ("timed_out", None)
    assert "deadline" in doc["error"]
    assert doc["duration"] < 15  # stopped at the deadline, not at the job's own end
    assert not service_exists


@scenario
async def unknown_image(h: Harness) -> Run:
    return await h.covey("run", "covey-test/nosuch:1", "true")


async def test_unknown_image_is_125_quickly(outcomes: Any) -> None:
    run = outcome(outcomes, "unknown_image")
    assert run.code == 125, run
    assert run.seconds < 30, run
    assert run.stdout == ""
    assert one_line(run.stderr), run
    assert "No such image" in run.stderr
    assert "covey-test/nosuch:1" in run.stderr


@scenario
async def unknown_image_json(h: Harness) -> Run:
    return await h.covey("run", "--json", "covey-test/nosuch:1", "true")


async def test_a_rejected_job_has_no_exit_code(outcomes: Any) -> None:
    """The engine reports ExitCode 0 for a task that never had a container; it is no exit."""
    run = outcome(outcomes, "unknown_image_json")
    assert run.code == 125, run
    doc = run.json
    assert (doc["state"], doc["exit_code"]) == ("rejected", None), doc
    assert "No such image" in doc["error"]


# -- a create the engine refuses, and one it cannot answer -------------------------------------


@scenario
async def network_refused(h: Harness) -> tuple[Run, Run]:
    """Engine 20.10 answers a create naming a missing network with HTTP 500."""
    plain, as_json = await gather(
        h.covey("run", "--network", "no-such-net", IMAGE, "true"),
        h.covey("run", "--json", "--network", "no-such-net", IMAGE, "true"),
    )
    return plain, as_json


async def test_a_refused_create_is_rejected_at_once(outcomes: Any) -> None:
    plain, as_json = outcome(outcomes, "network_refused")
    assert plain.code == 125, plain
    assert plain.seconds < 60, plain  # not retried as if the engine were down (for ever)
    assert one_line(plain.stderr), plain
    assert "rejected" in plain.stderr
    assert "network no-such-net not found" in plain.stderr
    assert as_json.code == 125, as_json
    doc = as_json.json
    assert (doc["state"], doc["exit_code"]) == ("rejected", None), doc
    assert "network no-such-net not found" in doc["error"]


LEADERLESS = (
    "rpc error: code = Unknown desc = The swarm does not have a leader. It's possible that "
    "too few managers are online. Make sure more than half of the managers are online."
)


@contextlib.asynccontextmanager
async def leaderless_engine(h: Harness, sock: Path) -> AsyncIterator[str]:
    """A proxy to the real engine that answers every service create as a manager without
    quorum does (HTTP 500, swarmkit's message) and passes everything else through."""
    upstream = aiohttp.ClientSession(
        connector=aiohttp.UnixConnector(path=h.host.removeprefix("unix://"))
    )

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "POST" and request.path.endswith("/services/create"):
            return web.json_response({"message": LEADERLESS}, status=500)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() == "content-type"}
        async with upstream.request(
            request.method, f"http://docker{request.rel_url}", data=body or None, headers=headers
        ) as answer:
            response = web.StreamResponse(status=answer.status)
            response.content_type = answer.content_type
            await response.prepare(request)
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                async for chunk in answer.content.iter_any():  # /events streams
                    await response.write(chunk)
            return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.UnixSite(runner, str(sock)).start()
    try:
        yield f"unix://{sock}"
    finally:
        await runner.cleanup()
        await upstream.close()


@scenario
async def engine_unavailable(h: Harness) -> tuple[Run, tuple[int, float, str]]:
    """Creates that the engine cannot serve are retried until ``--engine-timeout``, then the
    job is rejected with the last error; a SIGTERM meanwhile ends the retry in seconds."""
    async with leaderless_engine(h, h.tmp / "leaderless.sock") as host:
        gave_up = await h.covey(
            "run", "--json", "--engine-timeout", "3s", IMAGE, "true", env={"DOCKER_HOST": host}
        )
        db = h.db()
        async with h.limiter:
            proc = await anyio.open_process(
                [sys.executable, "-m", "covey", "--debug", "run", IMAGE, "true"],
                env=h.env(db, DOCKER_HOST=host),
            )
            async with proc, anyio.create_task_group() as tg:
                retrying = anyio.Event()

                async def drain() -> None:  # --debug writes a lot: the pipe must not fill
                    assert proc.stderr is not None
                    marker, tail, count = "engine unavailable", "", 0
                    async for chunk in TextReceiveStream(proc.stderr):
                        text = tail + chunk
                        count += text.count(marker) - tail.count(marker)
                        tail = text[-len(marker) :]
                        if count >= 2:  # retrying its create
                            retrying.set()

                tg.start_soon(drain)
                with anyio.fail_after(60):
                    await retrying.wait()
                sent = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                with anyio.fail_after(60):
                    code = await proc.wait()
                waited = time.monotonic() - sent
        states = await h.covey("ls", "--json", db=db)
    return gave_up, (code, waited, states.stdout)


async def test_a_create_is_retried_while_unavailable_and_given_up_in_time(
    outcomes: Any,
) -> None:
    gave_up, (code, waited, states) = outcome(outcomes, "engine_unavailable")
    assert gave_up.code == 125, gave_up
    assert gave_up.seconds < 60, gave_up  # 3 s of retries (a loaded machine is slow)
    doc = gave_up.json
    assert (doc["state"], doc["exit_code"]) == ("rejected", None), doc
    assert "gave up after" in doc["error"] and "does not have a leader" in doc["error"], doc
    assert code == 143
    assert waited < 25  # was 31 s: the retry now stops when the job is no longer wanted
    assert [json.loads(line)["state"] for line in states.splitlines()] == ["cancelled"]


@scenario
async def cannot_exec(h: Harness) -> tuple[Run, Run]:
    return tuple(
        await gather(
            h.covey("run", IMAGE, "nosuchcmd", "arg"),
            h.covey("run", IMAGE, "/etc"),  # a directory: found, but cannot be executed
        )
    )  # type: ignore[return-value]


async def test_command_not_found_is_127_and_not_executable_126(outcomes: Any) -> None:
    missing, directory = outcome(outcomes, "cannot_exec")
    assert missing.code == 127, missing
    assert one_line(missing.stderr), missing
    assert "nosuchcmd" in missing.stderr
    assert directory.code == 126, directory
    assert "permission denied" in directory.stderr


BAD_FLAGS = {
    "--mount": ["--mount", "type=bind"],
    "--env": ["--env", "=value"],
    "--reserve-memory": ["--reserve-memory", "12Q"],
    "--retries": ["--retries", "-1"],
}


@scenario
async def bad_flags(h: Harness) -> dict[str, tuple[Run, bool]]:
    async def one(flag: str, args: list[str]) -> tuple[str, tuple[Run, bool]]:
        db = h.db()
        run = await h.covey("run", *args, IMAGE, "true", db=db)
        return flag, (run, db.exists())

    unknown_db = h.db()
    unknown = await h.covey("run", "--nosuch", IMAGE, "true", db=unknown_db)
    pairs = await gather(*(one(flag, args) for flag, args in BAD_FLAGS.items()))
    return dict(pairs) | {"--nosuch": (unknown, unknown_db.exists())}


@pytest.mark.parametrize("flag", [*BAD_FLAGS, "--nosuch"])
async def test_bad_flags_are_125_naming_the_flag_and_create_nothing(
    outcomes: Any, flag: str
) -> None:
    run, store_created = outcome(outcomes, "bad_flags")[flag]
    assert run.code == 125, run
    assert "Traceback" not in run.stderr, run
    assert flag in run.stderr, run
    assert run.stdout == ""
    if flag != "--nosuch":  # click adds its usage lines to an unknown option
        assert one_line(run.stderr), run
        assert run.stderr.startswith(f"covey: {flag}"), run
    assert not store_created  # refused before the store (or the engine) was touched


@scenario
async def image_is_a_file(h: Harness) -> dict[str, tuple[Run, bool]]:
    """A batch file given where the image belongs (``covey submit jobs.yaml``, without -f)."""
    batch = h.tmp / "nightly.yaml"
    batch.write_text("jobs: [{image: busybox}]\n")

    async def one(*args: str) -> tuple[Run, bool]:
        db = h.db()
        return await h.covey(*args, db=db), db.exists()

    cases = {
        "submit": ("submit", str(batch)),
        "run": ("run", "nightly.yml", "true"),
        "invalid": ("run", "MyImage:latest", "true"),
    }
    runs = await gather(*(one(*args) for args in cases.values()))
    return dict(zip(cases, runs, strict=True))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("submit", None),  # the file's absolute path: checked below
        ("run", "IMAGE: 'nightly.yml' looks like a batch file, not an image; "
         "did you mean `covey batch nightly.yml`?"),
        ("invalid", "IMAGE: 'MyImage:latest' is not a valid image reference: repository "
         "name 'MyImage' must be lower-case"),
    ],
)  # fmt: skip
async def test_an_image_that_is_no_reference_is_125_before_anything_is_queued(
    outcomes: Any, case: str, expected: str | None
) -> None:
    run, store_created = outcome(outcomes, "image_is_a_file")[case]
    assert run.code == 125, run
    assert one_line(run.stderr), run
    if expected is None:
        assert run.stderr.startswith("covey: IMAGE: '/"), run
        assert "nightly.yaml' is a file, not an image; did you mean `covey submit -f /" in (
            run.stderr
        ), run
        assert run.stderr.endswith("nightly.yaml`?\n"), run
    else:
        assert run.stderr == f"covey: {expected}\n", run
    assert not store_created  # nothing queued


@scenario
async def never_fits(h: Harness) -> tuple[Run, Run, str]:
    cpu, constraint = await gather(
        h.covey("run", "--reserve-cpu", "64", IMAGE, "true"),
        h.covey("run", "--constraint", "node.hostname==nosuch", IMAGE, "true"),
    )
    return cpu, constraint, await h.hostname()


async def test_too_big_names_the_largest_node(outcomes: Any) -> None:
    cpu, _, hostname = outcome(outcomes, "never_fits")
    assert cpu.code == 125, cpu
    assert one_line(cpu.stderr), cpu
    assert "64 CPU" in cpu.stderr
    assert "largest" in cpu.stderr
    assert hostname in cpu.stderr
    assert cpu.seconds < 30


async def test_no_node_matches(outcomes: Any) -> None:
    _, constraint, _ = outcome(outcomes, "never_fits")
    assert constraint.code == 125, constraint
    assert one_line(constraint.stderr), constraint
    assert "no node matches" in constraint.stderr
    assert "node.hostname==nosuch" in constraint.stderr


@scenario
async def unreachable(h: Harness) -> tuple[Run, bool]:
    db = h.db()
    run = await h.covey(
        "run", IMAGE, "true", db=db, env={"DOCKER_HOST": "unix:///nonexistent.sock"}
    )
    return run, db.exists()


async def test_unreachable_engine_is_one_line_125(outcomes: Any) -> None:
    run, _ = outcome(outcomes, "unreachable")
    assert run.code == 125, run
    assert one_line(run.stderr), run
    assert run.stderr.startswith("covey: ")
    assert "/nonexistent.sock" in run.stderr
    assert run.stdout == ""
    assert run.seconds < 30


# -- detach, signals ------------------------------------------------------------------------------


@scenario
async def detach(h: Harness) -> tuple[Run, bool]:
    run = await h.covey("run", "--detach", IMAGE, "sleep", "30")
    service = f"covey-{run.stdout.strip()}-1"
    try:
        return run, await h.exists(service)
    finally:
        await h.docker("service", "rm", service, check=False)


async def test_detach_prints_the_job_id(outcomes: Any) -> None:
    run, service_existed = outcome(outcomes, "detach")
    assert run.code == 0, run
    assert JOB_ID.match(run.stdout.strip()), run
    assert one_line(run.stdout)
    assert run.stderr == "", run
    assert service_existed  # started, not only queued; the scenario removed it


async def read_until(proc: Process, marker: str) -> str:
    assert proc.stdout is not None
    seen = ""
    async for chunk in TextReceiveStream(proc.stdout):
        seen += chunk
        if marker in seen:
            break
    return seen


async def interrupted(h: Harness, signum: signal.Signals) -> tuple[int, str, str, float]:
    """Start a 30 s job, wait for its first line (streamed, not at the end), then signal."""
    async with h.limiter:
        proc = await anyio.open_process(
            [sys.executable, "-m", "covey", "run", IMAGE, "sh", "-c", "echo started; sleep 30"],
            env=h.env(),
        )
        async with proc:
            with anyio.fail_after(60):
                seen = await read_until(proc, "started\n")
            sent = time.monotonic()
            proc.send_signal(signum)
            with anyio.fail_after(60):
                code = await proc.wait()
            waited = time.monotonic() - sent
            assert proc.stderr is not None
            err = b"".join([chunk async for chunk in proc.stderr]).decode()
        return code, seen, err, waited


@scenario
async def sigint(h: Harness) -> tuple[int, str, str, float]:
    return await interrupted(h, signal.SIGINT)


@scenario
async def sigterm(h: Harness) -> tuple[int, str, str, float]:
    return await interrupted(h, signal.SIGTERM)


@pytest.mark.parametrize(("name", "expected"), [("sigint", 130), ("sigterm", 143)])
async def test_signals_end_the_job_and_remove_it(outcomes: Any, name: str, expected: int) -> None:
    code, seen, err, waited = outcome(outcomes, name)
    assert code == expected, err
    assert seen == "started\n"  # streamed while the job ran
    assert "Traceback" not in err
    assert waited < 30  # long before the job's own end


# -- a job the governor admits but swarm keeps pending --------------------------------------------


async def task_states(h: Harness, service: str) -> list[str]:
    out = await h.docker(
        "service", "ps", service, "--format", "{{.CurrentState}}|{{.DesiredState}}"
    )
    return out.split("\n")[0:1]


@scenario
async def pending_timeout(h: Harness) -> tuple[Run, list[str]]:
    """Swarm still holds the reservation of a task that is shutting down (``sleep`` as PID 1
    ignores SIGTERM, so it runs out its 60 s grace period); covey's governor counts only
    tasks whose desired state is running, so it admits a job that swarm keeps pending."""
    hog = f"h7-hog-{secrets.token_hex(3)}"
    await h.docker(
        "service", "create", "--detach", "--quiet", "--name", hog, "--reserve-cpu", "1.5",
        "--stop-grace-period", "60s", "--restart-condition", "none", IMAGE, "sleep", "300",
    )  # fmt: skip
    try:
        with anyio.fail_after(60):
            while not (await task_states(h, hog))[0].startswith("Running"):
                await anyio.sleep(0.2)
        await h.docker("service", "scale", "--detach", f"{hog}=0")
        with anyio.fail_after(30):
            while (await task_states(h, hog))[0].endswith("|Running"):
                await anyio.sleep(0.2)
        before = await task_states(h, hog)
        run = await h.covey(
            "run", "--reserve-cpu", "1", "--pending-timeout", "3s", IMAGE, "echo", "never"
        )
    finally:
        await h.docker("service", "rm", hog, check=False)
        ids = await h.docker(
            "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={hog}", check=False
        )
        if ids.split():
            await h.docker("kill", *ids.split(), check=False)
    return run, before


async def test_pending_timeout(outcomes: Any) -> None:
    run, before = outcome(outcomes, "pending_timeout")
    assert before[0].startswith("Running"), before  # still holding its 1.5 CPUs
    assert run.code == 125, run
    assert one_line(run.stderr), run
    assert "still pending after 3s" in run.stderr
    assert "insufficient resources" in run.stderr
    assert run.stdout == ""
    assert run.seconds < 30, run


# -- a job stopped from outside that exits 0 ------------------------------------------------------

TRAPS_TERM = (
    "trap 'echo stopped; exit 0' TERM; echo started; "
    "i=0; while [ $i -lt 60 ]; do sleep 0.1; i=$((i+1)); done"
)


@scenario
async def stopped_exits_zero(h: Harness) -> tuple[Run, Run]:
    """A job that traps SIGTERM and exits 0 is stopped by swarm (its service scaled to 0, as
    a drain stops it): docker sends ``kill`` then ``die`` with exit 0. That zero is the
    job's answer to being stopped, not its success; the task list says it did not complete."""
    name = f"trap-{secrets.token_hex(3)}"
    db = h.db()

    async def stop_when_running() -> None:
        with anyio.fail_after(90):
            while not (
                await h.docker("service", "ps", name, "--format", "{{.CurrentState}}", check=False)
            ).startswith("Running"):
                await anyio.sleep(0.2)
        await anyio.sleep(1.0)  # its trap is set
        await h.docker("service", "scale", "--detach", f"{name}=0")

    run, _ = await gather(
        h.covey("run", "--json", "--name", name, IMAGE, "sh", "-c", TRAPS_TERM, db=db),
        stop_when_running(),
    )
    return run, await h.covey("show", "--json", run.json["id"], db=db)


async def test_a_zero_exit_after_a_stop_is_not_the_jobs_success(outcomes: Any) -> None:
    run, show = outcome(outcomes, "stopped_exits_zero")
    assert run.code == 0, run  # the retry (engine-side losses are retried) ran to its end
    assert run.json["attempts"] == 2, run
    first, second = show.json["attempts"]
    assert first["outcome"] == "lost", show  # what the task list says, not the event's 0
    assert second["outcome"] == "succeeded", show
