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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

pytestmark = pytest.mark.plain

REPO = Path(__file__).resolve().parents[2]
IMAGE = "busybox:latest"


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float

    def __str__(self) -> str:  # shown by pytest when an assertion fails
        return (
            f"exit {self.code} after {self.seconds:.1f}s\n"
            f"--stdout--\n{self.stdout}--stderr--\n{self.stderr}"
        )


class Harness:
    """``covey`` processes against one engine, each with a store of its own."""

    def __init__(self, host: str, tmp: Path) -> None:
        self.host = host
        self.tmp = tmp
        self.limiter = anyio.CapacityLimiter(6)
        self._n = 0

    def env(self) -> dict[str, str]:
        self._n += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COVEY_"))}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p
        )
        env["DOCKER_HOST"] = self.host
        env["COVEY_DB"] = str(self.tmp / f"store-{self._n}.db")
        return env

    async def covey(self, *args: str) -> Run:
        async with self.limiter:
            started = time.monotonic()
            with anyio.fail_after(120):
                done = await anyio.run_process(
                    [sys.executable, "-m", "covey", *args], env=self.env(), check=False
                )
            return Run(
                done.returncode,
                done.stdout.decode(errors="replace"),
                done.stderr.decode(errors="replace"),
                time.monotonic() - started,
            )

    async def container_exists(self, name: str) -> bool:
        done = await anyio.run_process(
            ["docker", "container", "inspect", name], env=self.env(), check=False
        )
        return done.returncode == 0


Scenario = Callable[[Harness], Awaitable[Any]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


async def gather(*aws: Awaitable[Any]) -> list[Any]:
    results: list[Any] = [None] * len(aws)

    async def one(i: int, aw: Awaitable[Any]) -> None:
        results[i] = await aw

    async with anyio.create_task_group() as tg:
        for i, aw in enumerate(aws):
            tg.start_soon(one, i, aw)
    return results


@pytest.fixture(scope="session")
def plain_docker_host(request: pytest.FixtureRequest) -> str:
    """COVEY_TEST_PLAIN_HOST (an engine of one's own), else the conftest's ``plain_host``."""
    return os.environ.get("COVEY_TEST_PLAIN_HOST") or request.getfixturevalue("plain_host")


@pytest.fixture(scope="module")
async def outcomes(
    plain_docker_host: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[bool, Any]]:
    """Every scenario of this module, run at once: name -> (ok, value or exception)."""
    harness = Harness(plain_docker_host, tmp_path_factory.mktemp("container-mode"))
    results: dict[str, tuple[bool, Any]] = {}

    async def one(name: str, fn: Scenario) -> None:
        try:
            results[name] = (True, await fn(harness))
        except Exception as exc:  # re-raised by the test that owns the scenario
            results[name] = (False, exc)

    async with anyio.create_task_group() as tg:
        for name, fn in SCENARIOS.items():
            tg.start_soon(one, name, fn)
    return results


@pytest.fixture(autouse=True)
async def no_covey_container_left(plain_docker_host: str) -> AsyncIterator[None]:
    yield
    done = await anyio.run_process(
        ["docker", "ps", "-a", "--filter", "label=covey.managed", "--format", "{{.Names}}"],
        env={**os.environ, "DOCKER_HOST": plain_docker_host},
    )
    assert done.stdout.decode().split() == []


def outcome(outcomes: dict[str, tuple[bool, Any]], name: str) -> Any:
    ok, value = outcomes[name]
    if not ok:
        raise value
    return value


def one_line(text: str) -> bool:
    return len(text.splitlines()) == 1 and text.endswith("\n")


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
