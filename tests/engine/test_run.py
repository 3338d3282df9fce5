"""``covey run`` as a user runs it: ``python -m covey run ...`` against the private swarm.

Every scenario is a real process with its own store (``COVEY_DB``) and ``DOCKER_HOST``. The
scenarios are slow (seconds each, mostly the engine's), so the module fixture starts all of
them at once and each test then checks its own; after every test no covey service may be
left on the engine (``docker service ls --filter label=covey.managed``).
"""

from __future__ import annotations

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

import anyio
import pytest
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
