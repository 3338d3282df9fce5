"""``covey run`` held against ``docker run`` on the same engine, for a corpus of commands.

For each case both run the same image and command (covey as a swarm service, and for
some cases also as a plain container: ``--mode container``); the exit code, the stdout bytes and the
stderr bytes must be identical. The only differences allowed are the tools' own error lines,
named per case below (``docker: Error response from daemon: ...`` against ``covey: job ID
failed: ...`` when the command cannot be started). Every case, covey and docker, runs at
once as a subprocess with a store of its own, so the module takes seconds, not minutes.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
IMAGE = "covey-test/busybox:latest"
PARALLEL = 8  # processes at once: each covey costs ~0.7 s of CPU on this 2-core machine
ALL_BYTES = "".join(f"\\{i:03o}" for i in range(256))  # printf's octal escapes, 0 to 255
LINE_100 = "0123456789" * 9 + "abcdefghi"  # 99 bytes: 100 with yes's newline

# The tools' own lines when a command cannot be started (docker run's 126/127).
DOCKER_START_ERROR = (
    r"docker: Error response from daemon: failed to create shim task: .*",
    r"",
    r"Run 'docker run --help' for more information",
)
COVEY_START_ERROR = (
    r"covey: job [0-9a-f]{12} failed: (starting container failed|start container \w+): .*",
)
# Also held in container mode (plain containers instead of services on the same engine).
IN_CONTAINER_MODE = {
    "exit_42",
    "sigkill_child",
    "missing_command",
    "interleaved",
    "byte_ff_and_nul",
    "all_256_bytes",
    "ten_megabytes",
}


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    docker_lines: tuple[str, ...] = ()  # docker's own stderr lines (regexes), not the job's
    covey_lines: tuple[str, ...] = ()  # covey's own stderr lines


def sh(name: str, script: str, **kw: tuple[str, ...]) -> Case:
    return Case(name, ("sh", "-c", script), **kw)


CASES = [
    sh("exit_0", "echo ok"),
    sh("exit_1", "echo out; echo err >&2; exit 1"),
    sh("exit_2", "exit 2"),
    sh("exit_42", "echo forty-two; exit 42"),
    sh("exit_255", "exit 255"),
    # as PID 1 the shell ignores signals it has no handler for; in a child they kill it
    sh("sigterm_pid1", "echo before; kill -TERM $$; echo after"),
    sh("sigkill_pid1", "echo before; kill -KILL $$; echo after"),
    sh("sigterm_child", "echo before; sh -c 'kill -TERM $$'; exit $?"),
    sh("sigkill_child", "sh -c 'echo child; kill -KILL $$'; exit $?"),
    Case(
        "missing_command",
        ("no-such-command",),
        docker_lines=DOCKER_START_ERROR,
        covey_lines=COVEY_START_ERROR,
    ),
    Case(
        "not_executable",
        ("/etc/passwd",),
        docker_lines=DOCKER_START_ERROR,
        covey_lines=COVEY_START_ERROR,
    ),
    sh("interleaved", "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; echo end"),
    sh("no_trailing_newline", "printf 'out, no newline'; printf 'err, no newline' >&2"),
    sh("byte_ff_and_nul", r"printf '\377\000\377x\000'; printf '\377' >&2"),
    sh("all_256_bytes", f"printf '{ALL_BYTES}'; printf '{ALL_BYTES}' >&2"),
    sh(
        "utf8",
        "printf 'h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c \U0001f600\\n'; echo '\u00fc' >&2",
    ),
    sh("ten_megabytes", f"yes {LINE_100} | head -c 10000000; echo done >&2"),
    sh("empty_lines_and_crs", r"printf '\n\n\r\n \r'; printf '\r' >&2"),
    sh(
        "stdout_closed",
        "echo before; exec 1>&-; echo after-close >&2; echo lost; echo rc=$? >&2; exit 3",
    ),
]


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: bytes
    stderr: bytes
    seconds: float


def _env(host: str, db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COVEY_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    env["DOCKER_HOST"] = host
    env["COVEY_DB"] = str(db)
    return env


async def _run(argv: list[str], env: dict[str, str], limiter: anyio.CapacityLimiter) -> Ran:
    async with limiter:
        started = time.monotonic()
        with anyio.fail_after(120):
            done = await anyio.run_process(argv, env=env, check=False)
        return Ran(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


RUNS = [(c, "swarm") for c in CASES] + [
    (c, "container") for c in CASES if c.name in IN_CONTAINER_MODE
]


@pytest.fixture(scope="module")
async def ran(swarm_host: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Ran]:
    """Every case through both tools at once: ``{"swarm:NAME": Ran, "container:NAME": Ran,
    "docker:NAME": Ran}``, and the wall time of it all (``"wall"``)."""
    tmp = tmp_path_factory.mktemp("differential")
    limiter = anyio.CapacityLimiter(PARALLEL)
    results: dict[str, Ran] = {}

    async def one(key: str, argv: list[str]) -> None:
        env = _env(swarm_host, tmp / f"{key.replace(':', '-')}.db")
        results[key] = await _run(argv, env, limiter)

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for case, mode in RUNS:
            covey = [sys.executable, "-m", "covey", "run", "--mode", mode, IMAGE, *case.argv]
            tg.start_soon(one, f"{mode}:{case.name}", covey)
        for case in CASES:
            tg.start_soon(one, f"docker:{case.name}", ["docker", "run", "--rm", IMAGE, *case.argv])
    results["wall"] = Ran(0, b"", b"", time.monotonic() - started)
    return results


def _without(stderr: bytes, patterns: tuple[str, ...], who: str) -> bytes:
    """``stderr`` without the tool's own lines, each of which must be there, in order."""
    lines = stderr.split(b"\n")
    at = 0
    for pattern in patterns:
        regex = re.compile(pattern.encode())
        found = next((i for i in range(at, len(lines)) if regex.fullmatch(lines[i])), None)
        assert found is not None, f"{who}: no line matching {pattern!r} in {stderr!r}"
        del lines[found]
        at = found
    return b"\n".join(lines)


def _same(what: str, covey: bytes, docker: bytes) -> Iterator[str]:
    if covey == docker:
        return
    at = next((i for i, (a, b) in enumerate(zip(covey, docker, strict=False)) if a != b), None)
    at = min(len(covey), len(docker)) if at is None else at
    yield (
        f"{what}: covey {len(covey)} bytes, docker {len(docker)} bytes, first difference at "
        f"{at}: covey {covey[at : at + 40]!r} docker {docker[at : at + 40]!r}"
    )


@pytest.mark.parametrize(("case", "mode"), RUNS, ids=[f"{m}-{c.name}" for c, m in RUNS])
def test_covey_run_is_docker_run(ran: dict[str, Ran], case: Case, mode: str) -> None:
    covey, docker = ran[f"{mode}:{case.name}"], ran[f"docker:{case.name}"]
    problems = [f"exit code: covey {covey.code}, docker {docker.code}"] * (
        covey.code != docker.code
    )
    problems += _same("stdout", covey.stdout, docker.stdout)
    problems += _same(
        "stderr",
        _without(covey.stderr, case.covey_lines, "covey"),
        _without(docker.stderr, case.docker_lines, "docker"),
    )
    assert not problems, "\n".join(problems) + f"\n(covey stderr: {covey.stderr[-400:]!r})"


def test_the_corpus_means_what_it_says(ran: dict[str, Ran]) -> None:
    """The cases test what they are named for (on docker's side, the reference)."""
    docker = {c.name: ran[f"docker:{c.name}"] for c in CASES}
    codes = {n: docker[n].code for n in ("exit_0", "exit_1", "exit_2", "exit_42", "exit_255")}
    assert codes == {"exit_0": 0, "exit_1": 1, "exit_2": 2, "exit_42": 42, "exit_255": 255}
    assert docker["sigterm_child"].code == 143
    assert docker["sigkill_child"].code == 137
    assert docker["missing_command"].code == 127
    assert docker["not_executable"].code == 126
    assert docker["all_256_bytes"].stdout == bytes(range(256))
    assert docker["byte_ff_and_nul"].stdout == b"\xff\x00\xffx\x00"
    assert len(docker["ten_megabytes"].stdout) == 10_000_000
    assert not docker["no_trailing_newline"].stdout.endswith(b"\n")


def test_the_cases_ran_at_once(ran: dict[str, Ran]) -> None:
    """Concurrent subprocesses: the module's wall time is far below the sum of the runs'."""
    total = sum(r.seconds for key, r in ran.items() if key != "wall")
    assert ran["wall"].seconds < total / 3, (ran["wall"].seconds, total)
