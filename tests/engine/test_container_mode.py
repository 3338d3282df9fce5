"""``covey run`` on an engine that is not a swarm manager: plain containers ("container mode").

The same processes as ``test_run.py`` (``python -m covey run ...``, a store of their own), on
the plain engine in the default ``--mode auto``. The scenarios run at once in the module
fixture; after every test no covey container may be left (``docker ps -a --filter
label=covey.managed``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from .scenarios import Harness, Outcomes, Run, Scenarios, gather, one_line, outcome

pytestmark = pytest.mark.plain

IMAGE = "busybox:latest"

SCENARIOS = Scenarios()
scenario = SCENARIOS.add


@pytest.fixture(scope="session")
def plain_docker_host(request: pytest.FixtureRequest) -> str:
    """COVEY_TEST_PLAIN_HOST (an engine of one's own), else the conftest's ``plain_host``."""
    return os.environ.get("COVEY_TEST_PLAIN_HOST") or request.getfixturevalue("plain_host")


@pytest.fixture(scope="module")
async def outcomes(plain_docker_host: str, tmp_path_factory: pytest.TempPathFactory) -> Outcomes:
    """Every scenario of this module, run at once: name -> (ok, value or exception)."""
    harness = Harness(plain_docker_host, tmp_path_factory.mktemp("container-mode"), parallel=6)
    return await SCENARIOS.run(harness)


@pytest.fixture(autouse=True)
async def no_covey_container_left(plain_docker_host: str) -> AsyncIterator[None]:
    yield
    done = await anyio.run_process(
        ["docker", "ps", "-a", "--filter", "label=covey.managed", "--format", "{{.Names}}"],
        env={**os.environ, "DOCKER_HOST": plain_docker_host},
    )
    assert done.stdout.decode().split() == []


@scenario
async def output(h: Harness) -> tuple[Run, Run, Run]:
    return tuple(
        await gather(
            h.covey("run", IMAGE, "sh", "-c", "echo out1; echo err1 >&2; echo out2"),
            h.covey("run", IMAGE, "sh", "-c", "echo before; exit 3"),
            h.covey("run", "--json", IMAGE, "sh", "-c", "echo hi; exit 4"),
        )
    )  # type: ignore[return-value]


async def test_logs_apart_and_exit_codes(outcomes: Any) -> None:
    ok, three, as_json = outcome(outcomes, "output")
    assert (ok.code, ok.stdout, ok.stderr) == (0, "out1\nout2\n", "err1\n"), ok
    assert (three.code, three.stdout, three.stderr) == (3, "before\n", ""), three
    assert as_json.code == 4, as_json
    doc = json.loads(as_json.stdout)
    assert (doc["state"], doc["exit_code"], doc["stdout"]) == ("failed", 4, "hi\n")
    assert doc["created"] <= doc["started"] <= doc["finished"]


@scenario
async def timeout(h: Harness) -> tuple[Run, bool]:
    run = await h.covey("run", "--json", "--timeout", "2s", IMAGE, "sleep", "30")
    name = f"covey-{json.loads(run.stdout)['id']}-1" if run.code == 124 else "?"
    return run, await h.container_exists(name)


async def test_timeout_is_124_and_removes_the_container(outcomes: Any) -> None:
    run, exists = outcome(outcomes, "timeout")
    assert run.code == 124, run
    assert run.seconds < 30, run
    doc = json.loads(run.stdout)
    assert (doc["state"], doc["exit_code"]) == ("timed_out", None)
    assert "deadline of 2s" in doc["error"]
    assert not exists


@scenario
async def cannot_exec(h: Harness) -> tuple[Run, Run]:
    return tuple(await gather(h.covey("run", IMAGE, "nosuchcmd"), h.covey("run", IMAGE, "/etc")))  # type: ignore[return-value]


async def test_command_not_found_127_not_executable_126(outcomes: Any) -> None:
    missing, directory = outcome(outcomes, "cannot_exec")
    assert missing.code == 127, missing
    assert one_line(missing.stderr), missing
    assert "nosuchcmd" in missing.stderr
    assert directory.code == 126, directory
    assert "permission denied" in directory.stderr


@scenario
async def unknown_image(h: Harness) -> Run:
    return await h.covey("run", "covey-test/nosuch:1", "true")


async def test_unknown_image_is_125(outcomes: Any) -> None:
    run = outcome(outcomes, "unknown_image")
    assert run.code == 125, run
    assert run.seconds < 30, run
    assert one_line(run.stderr), run
    assert "No such image" in run.stderr
    assert "covey-test/nosuch:1" in run.stderr


@scenario
async def swarm_only(h: Harness) -> dict[str, Run]:
    mode, secret, constraint, elsewhere = await gather(
        h.covey("run", "--mode", "swarm", IMAGE, "true"),
        h.covey("run", "--secret", "token", IMAGE, "true"),
        h.covey("run", "--constraint", "node.role==manager", IMAGE, "true"),
        h.covey("run", "--constraint", "node.hostname==nosuch", IMAGE, "true"),
    )
    return {"mode": mode, "secret": secret, "constraint": constraint, "elsewhere": elsewhere}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("mode", "not a swarm manager"),
        ("secret", "secrets need swarm mode"),
        ("constraint", "placement constraints need swarm mode"),
        ("elsewhere", "node.hostname==nosuch"),
    ],
)
async def test_swarm_only_features_are_refused(outcomes: Any, case: str, message: str) -> None:
    run = outcome(outcomes, "swarm_only")[case]
    assert run.code == 125, run
    assert one_line(run.stderr), run
    assert message in run.stderr, run
    assert "Traceback" not in run.stderr
    assert run.stdout == ""


@scenario
async def sigterm(h: Harness) -> tuple[int, str, float]:
    async with h.limiter:
        proc = await anyio.open_process(
            [sys.executable, "-m", "covey", "run", IMAGE, "sh", "-c", "echo started; sleep 30"],
            env=h.env(),
        )
        async with proc:
            assert proc.stdout is not None
            seen = ""
            with anyio.fail_after(60):
                async for chunk in TextReceiveStream(proc.stdout):
                    seen += chunk
                    if "started\n" in seen:
                        break
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(60):
                code = await proc.wait()
        return code, seen, time.monotonic() - sent


async def test_sigterm_is_143_and_removes_the_container(outcomes: Any) -> None:
    code, seen, waited = outcome(outcomes, "sigterm")
    assert code == 143
    assert seen == "started\n"
    assert waited < 30
