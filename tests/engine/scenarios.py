"""The scenario harness shared by the ``covey run`` tests (swarm and container mode).

Every scenario is a real ``python -m covey`` process with its own store (``COVEY_DB``) and
``DOCKER_HOST``. Scenarios are slow (seconds each, mostly the engine's), so a module's
fixture starts all of them at once (``Scenarios.run``) and each test then checks its own
outcome.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Run:
    """One finished ``covey`` process."""

    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:  # shown by pytest when an assertion fails
        return (
            f"exit {self.code} after {self.seconds:.1f}s\n"
            f"--stdout--\n{self.stdout}--stderr--\n{self.stderr}"
        )


@dataclass
class Harness:
    """Runs covey and docker against one engine, each covey run with a store of its own.

    ``parallel`` bounds the covey processes at once: each costs ~0.7 s of CPU on 2 cores.
    """

    host: str
    tmp: Path
    parallel: int = 8
    limiter: anyio.CapacityLimiter = field(init=False)
    _n: int = 0

    def __post_init__(self) -> None:
        self.limiter = anyio.CapacityLimiter(self.parallel)

    def db(self) -> Path:
        self._n += 1
        return self.tmp / f"store-{self._n}.db"

    def env(self, db: Path | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COVEY_"))}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p
        )
        env["DOCKER_HOST"] = self.host
        env["COVEY_DB"] = str(db or self.db())
        env.update(extra)
        return env

    async def covey(
        self, *args: str, db: Path | None = None, env: dict[str, str] | None = None
    ) -> Run:
        async with self.limiter:
            started = time.monotonic()
            with anyio.fail_after(120):
                done = await anyio.run_process(
                    [sys.executable, "-m", "covey", *args],
                    env=self.env(db, **(env or {})),
                    check=False,
                )
            return Run(
                done.returncode,
                done.stdout.decode(errors="replace"),
                done.stderr.decode(errors="replace"),
                time.monotonic() - started,
            )

    async def docker(self, *args: str, check: bool = True) -> str:
        done = await anyio.run_process(["docker", *args], env=self.env(), check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {done.stderr.decode()}")
        return done.stdout.decode()

    async def _inspects(self, *args: str) -> bool:
        done = await anyio.run_process(["docker", *args], env=self.env(), check=False)
        return done.returncode == 0

    async def exists(self, service: str) -> bool:
        return await self._inspects("service", "inspect", service)

    async def container_exists(self, name: str) -> bool:
        return await self._inspects("container", "inspect", name)

    async def hostname(self) -> str:
        return (await self.docker("info", "--format", "{{.Name}}")).strip()


Scenario = Callable[[Harness], Awaitable[Any]]
Outcomes = dict[str, tuple[bool, Any]]


class Scenarios:
    """A module's scenarios: registered with ``@scenarios.add``, all run at once by ``run``."""

    def __init__(self) -> None:
        self.registered: dict[str, Scenario] = {}

    def add(self, fn: Scenario) -> Scenario:
        self.registered[fn.__name__] = fn
        return fn

    async def run(self, harness: Harness) -> Outcomes:
        """name -> (ok, value or the exception the owning test re-raises)."""
        results: Outcomes = {}

        async def one(name: str, fn: Scenario) -> None:
            try:
                results[name] = (True, await fn(harness))
            except Exception as exc:  # re-raised by the test that owns the scenario
                results[name] = (False, exc)

        async with anyio.create_task_group() as tg:
            for name, fn in self.registered.items():
                tg.start_soon(one, name, fn)
        return results


async def gather(*aws: Awaitable[Any]) -> list[Any]:
    """Await all at once; results in order."""
    results: list[Any] = [None] * len(aws)

    async def one(i: int, aw: Awaitable[Any]) -> None:
        results[i] = await aw

    async with anyio.create_task_group() as tg:
        for i, aw in enumerate(aws):
            tg.start_soon(one, i, aw)
    return results


def outcome(outcomes: Outcomes, name: str) -> Any:
    ok, value = outcomes[name]
    if not ok:
        raise value
    return value


def one_line(text: str) -> bool:
    return len(text.splitlines()) == 1 and text.endswith("\n")
