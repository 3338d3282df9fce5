"""The benchmark's surroundings: its private engine, the machine, the die-event log, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.api import ApiError, Docker

REPO = Path(__file__).resolve().parent.parent
ENGINE_SCRIPT = REPO / "scripts" / "engine.sh"
RUN_LABEL = "bench.run"
APPROACH_LABEL = "bench.approach"


@contextlib.contextmanager
def private_engine(name: str, *, keep: bool = False) -> Iterator[str]:
    """``scripts/engine.sh up --name NAME``; yields DOCKER_HOST; takes it down afterwards."""
    out = subprocess.run(
        [str(ENGINE_SCRIPT), "up", "--name", name],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    host = ""
    for line in out.splitlines():
        if line.startswith("export DOCKER_HOST="):
            host = line.split("=", 1)[1].strip()
    if not host:
        raise RuntimeError(f"engine.sh up printed no DOCKER_HOST: {out!r}")
    try:
        yield host
    finally:
        if not keep:
            subprocess.run([str(ENGINE_SCRIPT), "down", "--name", name], check=False)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def code_version() -> dict[str, Any]:
    """The commit measured, and which files under src/ differed from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_src": git("status", "--porcelain", "--", "src").splitlines(),
    }


async def machine(docker: Docker) -> dict[str, Any]:
    """What the results were measured on."""
    version = await docker.get("version")
    info = await docker.get("info")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": _mem_total(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "docker_version": version.get("Version"),
        "docker_api": version.get("ApiVersion"),
        "engine_ncpu": info.get("NCPU"),
        "storage_driver": info.get("Driver"),
        "loadavg_start": os.getloadavg(),
    }


@dataclass
class DieLog:
    """Every ``die`` event of this run's containers, read straight from the engine socket."""

    run_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: int = 0

    async def follow(self, docker: Docker) -> None:
        filters = {
            "type": ["container"],
            "event": ["die"],
            "label": [RUN_LABEL + "=" + self.run_id],
        }
        while True:
            try:
                stream = docker.events(filters)
                self.ready.set()
                async for raw in stream:
                    attrs = (raw.get("Actor") or {}).get("Attributes") or {}
                    self.events.append(
                        {
                            "time_nano": int(raw.get("timeNano") or 0),
                            "seen": time.time(),
                            "attempt": attrs.get("covey.attempt"),
                            "service": attrs.get("com.docker.swarm.service.name"),
                            "approach": attrs.get(APPROACH_LABEL),
                            "exit_code": attrs.get("exitCode"),
                        }
                    )
            except Exception as exc:  # ApiError, aiohttp's ClientError, OSError, timeouts
                self.dropped += 1
                print(f"bench: die-event stream dropped ({type(exc).__name__}); resubscribing")
                await asyncio.sleep(0.2)

    def for_approach(self, approach: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["approach"] == approach]


async def cleanup(docker: Docker, run_id: str) -> dict[str, int]:
    """Remove this run's services and containers (never anything else on the engine)."""
    label = f"{RUN_LABEL}={run_id}"
    services = await docker.get("services", filters={"label": [label]})
    for s in services:
        with contextlib.suppress(ApiError):
            await docker.delete(f"services/{s['ID']}")
    containers: list[Any] = []
    for _ in range(50):  # swarm removes a service's containers asynchronously
        containers = await docker.get("containers/json", all=1, filters={"label": [label]})
        running = [c for c in containers if c.get("State") == "running"]
        if not containers or not running:
            break
        await asyncio.sleep(0.2)
    for c in containers:
        with contextlib.suppress(ApiError):
            await docker.delete(f"containers/{c['Id']}", force=1, v=1)
    return {"services": len(services), "containers": len(containers)}


async def quiesce(docker: Docker, run_id: str, timeout: float = 60.0) -> None:
    """Wait until none of this run's services or containers are left."""
    label = f"{RUN_LABEL}={run_id}"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        services = await docker.get("services", filters={"label": [label]})
        containers = await docker.get("containers/json", all=1, filters={"label": [label]})
        if not services and not containers:
            return
        await cleanup(docker, run_id)
        await asyncio.sleep(0.5)
