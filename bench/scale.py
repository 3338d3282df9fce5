"""SIMULATED: covey's own tracking and store cost for 10,000 and 100,000 jobs, no engine.

A 2-core engine runs 3-4 jobs a second, so it cannot show what covey itself costs when it
tracks tens of thousands of jobs. Here covey's real code runs unchanged (``Client.map``, the
submitter, tracker, reaper, governor, states, the SQLite store, :class:`~covey.backend.SwarmBackend`
and the JSON parsing of :mod:`covey.engine`); only the transport is replaced:
:class:`SimEngine` overrides ``Engine._json``/``_logs``/``events``/``ping`` and answers from a
simulated swarm whose task JSON is a recorded ``GET /tasks`` entry of Engine 20.10.24.

The simulated swarm starts every created service's task at once (``start`` event), holds the
tasks running until all jobs of the window are tracked at the same time (by default all N:
``max_concurrent=N``), takes a memory reading there, then completes them at ``rate`` jobs/s
(``die`` event, exit 0, task ``complete``). The CPU the simulator itself spends rendering task
JSON is measured and subtracted; HTTP framing (aiohttp) is not simulated, so real requests cost
a little more than shown here.

Run by the benchmark in a child process per size: ``python -m bench.scale --n 10000 --out X``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

import covey.client
from bench.covey_run import fold_ids
from covey import Client, JobSpec, Options
from covey.capture import Captured, LogRead
from covey.engine import Engine
from covey.records import EngineEvent

NODE_ID = "ikv2cn3pbwp3b8jpiibgtn65p"
TICK = 0.01
RSS_EVERY = 0.1
PAGE = os.sysconf("SC_PAGE_SIZE")

# One task of a covey attempt as Engine 20.10.24 lists it (recorded; ids and labels replaced).
TASK_TEMPLATE: dict[str, Any] = {
    "ID": "l9aov8il2q9hdxiwcxylydfx9",
    "Version": {"Index": 54},
    "CreatedAt": "2026-11-23T13:33:24.465464621Z",
    "UpdatedAt": "2026-11-23T13:33:25.265884552Z",
    "Labels": {},
    "Spec": {
        "ContainerSpec": {
            "Image": "busybox:latest",
            "Labels": {},
            "Args": ["true"],
            "Init": False,
            "DNSConfig": {},
            "Isolation": "default",
        },
        "Resources": {"Limits": {}, "Reservations": {}},
        "RestartPolicy": {"Condition": "none", "Delay": 5000000000, "MaxAttempts": 0},
        "Placement": {},
        "ForceUpdate": 0,
    },
    "ServiceID": "vbm9adx386kwwkppljaqarym2",
    "Slot": 1,
    "NodeID": NODE_ID,
    "Status": {
        "Timestamp": "2026-11-23T13:33:25.023505675Z",
        "State": "complete",
        "Message": "finished",
        "ContainerStatus": {
            "ContainerID": "8ba4804f779ccf7b3529bae28bf18493769a155b6d27bec82b42c74fc1539119",
            "PID": 0,
            "ExitCode": 0,
        },
        "PortStatus": {},
    },
    "DesiredState": "shutdown",
}

_TEMPLATE_JSON = json.dumps(TASK_TEMPLATE)

NODE = {
    "ID": NODE_ID,
    "Spec": {"Role": "manager", "Availability": "active", "Labels": {}},
    "Description": {
        "Hostname": "sim",
        "Platform": {"OS": "linux", "Architecture": "x86_64"},
        "Resources": {"NanoCPUs": 2_000_000_000_000, "MemoryBytes": 2**44},
        "Engine": {"EngineVersion": "20.10.24", "Labels": {}},
    },
    "Status": {"State": "ready", "Addr": "127.0.0.1"},
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def smaps_rss() -> list[tuple[str, int]]:
    """Resident KiB per mapping name (anonymous mappings together), largest first."""
    sizes: Counter[str] = Counter()
    name = "?"
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if not head:
                continue
            if "-" in head[0] and len(head) >= 5:
                name = head[5] if len(head) > 5 else "[anonymous]"
            elif head[0] == "Rss:":
                sizes[name] += int(head[1])
    return sizes.most_common()


def _write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data))


class SimTask:
    __slots__ = ("attempt", "container", "labels", "raw", "service", "state", "task")

    def __init__(self, service: str, labels: Mapping[str, str], args: list[str]) -> None:
        self.service = service
        self.task = secrets.token_hex(12)
        self.container = secrets.token_hex(32)
        self.labels = dict(labels)
        self.attempt = self.labels.get("covey.attempt", "")
        self.state = "pending"
        self.raw = b""
        self.render(args)

    def render(self, args: list[str] | None = None) -> None:
        task = json.loads(_TEMPLATE_JSON)  # a fresh copy, faster than deepcopy
        task["ID"] = self.task
        task["ServiceID"] = self.service
        task["Spec"]["ContainerSpec"]["Labels"] = self.labels
        if args is not None:
            task["Spec"]["ContainerSpec"]["Args"] = args
        status = task["Status"]
        status["State"] = self.state
        status["Message"] = {"complete": "finished", "running": "started"}.get(
            self.state, "pending"
        )
        if self.state == "complete":
            task["DesiredState"] = "shutdown"
        else:
            task["DesiredState"] = "running"
            status["ContainerStatus"] = (
                {"ContainerID": self.container, "PID": 4242} if self.state == "running" else {}
            )
        self.raw = json.dumps(task).encode()


class SimEngine(Engine):
    """covey's :class:`Engine` with the transport replaced by a simulated one-node swarm."""

    def __init__(self) -> None:
        super().__init__("unix:///simulated")
        self.services: dict[str, SimTask] = {}
        self.names: dict[str, str] = {}  # service name -> id (the API takes either)
        self.fresh: deque[SimTask] = deque()
        self.running: deque[SimTask] = deque()
        self.completed = 0
        self.sim_cpu = 0.0
        self._send, self._recv = anyio.create_memory_object_stream[EngineEvent](10**7)

    async def open(self) -> None:
        return

    async def close(self) -> None:
        return

    async def ping(self) -> None:
        self.requests["GET ping"] += 1

    async def _json(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
        auth: str | None = None,
    ) -> Any:
        self.requests[f"{method} {what}"] += 1
        if body is not None:
            json.dumps(body)  # what covey's real request does with it
        t = time.process_time()
        raw = self._answer(method, path, params or {}, body)
        self.sim_cpu += time.process_time() - t
        await anyio.lowlevel.checkpoint()  # a real request yields to the event loop
        return json.loads(raw) if raw else None

    def _answer(self, method: str, path: str, params: Mapping[str, Any], body: Any) -> bytes:
        if path == "info":
            return json.dumps(
                {
                    "Name": "sim",
                    "ServerVersion": "20.10.24",
                    "Swarm": {
                        "ControlAvailable": True,
                        "LocalNodeState": "active",
                        "NodeID": NODE_ID,
                    },
                    "NCPU": 2000,
                    "MemTotal": 2**44,
                }
            ).encode()
        if path == "nodes":
            return json.dumps([NODE]).encode()
        if path.startswith("distribution/"):  # the image's registry names one digest
            return json.dumps({"Descriptor": {"digest": "sha256:" + "0" * 64}}).encode()
        if path == "tasks":
            filters = json.loads(params.get("filters", "{}"))
            tasks = self.services.values()
            if "desired-state" in filters:
                tasks = [t for t in tasks if t.state != "complete"]
            return b"[" + b",".join(t.raw for t in tasks) + b"]"
        if path == "services/create" and method == "POST":
            sid = secrets.token_hex(12)
            template = body["TaskTemplate"]["ContainerSpec"]
            task = SimTask(sid, template.get("Labels") or {}, list(template.get("Args") or []))
            self.services[sid] = task
            self.names[body["Name"]] = sid
            self.fresh.append(task)
            return json.dumps({"ID": sid}).encode()
        if path.startswith("services/") and method == "DELETE":
            ref = path.removeprefix("services/")
            self.services.pop(self.names.pop(ref, ref), None)
            return b""
        raise NotImplementedError(f"simulated engine: {method} {path}")

    async def _logs(self, path: str, what: str, idle: float, cap: int) -> LogRead:
        self.requests[f"GET {what}"] += 1
        await anyio.lowlevel.checkpoint()
        return LogRead(Captured.empty(), Captured.empty())

    async def events(
        self, filters: Mapping[str, list[str]], *, since: int | None = None
    ) -> AsyncIterator[EngineEvent]:
        self.requests["GET events"] += 1
        async for event in self._recv:
            yield event

    def _event(self, task: SimTask, action: str) -> EngineEvent:
        attributes = dict(task.labels)
        attributes.update(
            {
                "com.docker.swarm.node.id": NODE_ID,
                "com.docker.swarm.service.id": task.service,
                "com.docker.swarm.task.id": task.task,
                "image": "busybox:latest",
            }
        )
        if action == "die":
            attributes["exitCode"] = "0"
        return EngineEvent("container", action, task.container, attributes, time.time_ns())

    def step(self, release: bool, budget: int) -> None:
        """One tick of the simulated swarm: start new tasks; complete up to ``budget``."""
        t = time.process_time()
        while self.fresh:
            task = self.fresh.popleft()
            task.state = "running"
            task.render()
            self.running.append(task)
            self._send.send_nowait(self._event(task, "start"))
        if release:
            for _ in range(min(budget, len(self.running))):
                task = self.running.popleft()
                task.state = "complete"
                task.render()
                self.completed += 1
                self._send.send_nowait(self._event(task, "die"))
        self.sim_cpu += time.process_time() - t


@contextlib.contextmanager
def simulated_engine(engine: SimEngine) -> Iterator[None]:
    """Make :class:`covey.Client` connect to ``engine``: the one name covey.client looks up."""
    saved = covey.client.Engine
    covey.client.Engine = lambda docker_host=None: engine  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        covey.client.Engine = saved  # type: ignore[misc]


async def simulate(
    n: int,
    rate: float,
    window: int,
    db: Path,
    status: Path | None,
    snapshot: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    engine = SimEngine()
    specs = [JobSpec(image="busybox:latest", command=("true",)) for _ in range(n)]
    options = Options(max_concurrent=window)
    state: dict[str, Any] = {"n": n, "phase": "starting", "done": 0}
    timeline: list[tuple[float, int, int, int, int]] = []
    rss0 = rss_bytes()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    peak = rss0

    async def drive() -> None:
        nonlocal peak
        released = False
        last_status = last_rss = 0.0
        carry = 0.0
        while True:
            await anyio.sleep(TICK)
            tracked = len(engine.running)
            if not released and (tracked >= window or tracked >= n - engine.completed):
                released = True
                state["all_tracked"] = {
                    "tracked": tracked,
                    "rss_bytes": rss_bytes(),
                    "after_s": time.monotonic() - t0,
                    "cpu_s": time.process_time() - cpu0 - engine.sim_cpu,
                }
                t = time.process_time()
                state["all_tracked"]["rss_by_mapping_kib"] = dict(smaps_rss()[:6])
                engine.sim_cpu += time.process_time() - t
                if snapshot is not None:
                    snapshot(state)
            carry += rate * TICK
            budget = int(carry)
            carry -= budget
            engine.step(released, budget)
            now = time.monotonic()
            if now - last_rss >= RSS_EVERY:
                t = time.process_time()
                last_rss = now
                rss = rss_bytes()
                peak = max(peak, rss)
                timeline.append(
                    (round(now - t0, 2), rss, len(engine.services), engine.completed, state["done"])
                )
                engine.sim_cpu += time.process_time() - t
            if status is not None and now - last_status > 1.0:
                last_status = now
                state.update(
                    phase="running",
                    elapsed_s=now - t0,
                    cpu_s=time.process_time() - cpu0 - engine.sim_cpu,
                    rss_bytes=rss_bytes(),
                    completed_by_sim=engine.completed,
                )
                _write(status, state)

    async with anyio.create_task_group() as tg:
        tg.start_soon(drive)
        with simulated_engine(engine):
            async with Client("unix:///simulated", db=db, options=options) as client:
                async for result in client.map(specs):
                    state["done"] += 1
                    if not result.ok:
                        state["not_ok"] = state.get("not_ok", 0) + 1
        tg.cancel_scope.cancel()
    wall = time.monotonic() - t0
    cpu = time.process_time() - cpu0 - engine.sim_cpu
    requests = fold_ids(engine.requests)
    tracked = state.get("all_tracked", {})
    return {
        "simulated": True,
        "n": n,
        "window": window,
        "rate_jobs_per_s": rate,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_ms_per_job": 1000 * cpu / n,
        "sim_cpu_s": engine.sim_cpu,
        "rss_before_bytes": rss0,
        "rss_all_tracked_bytes": tracked.get("rss_bytes"),
        "rss_peak_bytes": peak,
        "growth_per_job_bytes": (tracked["rss_bytes"] - rss0) / max(1, tracked["tracked"])
        if tracked
        else None,
        "all_tracked": tracked,
        "succeeded": state["done"] - state.get("not_ok", 0),
        "requests_per_job": sum(requests.values()) / n,
        "requests": dict(requests),
        "store_bytes": sum(p.stat().st_size for p in db.parent.glob(db.name + "*")),
        "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "timeline": {
            "columns": ["s", "rss_bytes", "services", "completed_by_sim", "results"],
            "rows": timeline[:: max(1, len(timeline) // 200)],
        },
    }


def child_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--window", type=int, default=0, help="jobs tracked at once (0: all)")
    parser.add_argument("--db", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--status", default="")
    parser.add_argument("--profile", default="")
    parser.add_argument("--tracemalloc", default="", help="where to write the top allocations")
    args = parser.parse_args()
    window = args.window or args.n
    status = Path(args.status) if args.status else None
    db = Path(args.db)
    snapshot = None
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(8)

        def snapshot(state: dict[str, Any]) -> None:
            snap = tracemalloc.take_snapshot()
            current, peak = tracemalloc.get_traced_memory()
            lines = [
                f"{state['all_tracked']['tracked']} jobs tracked; Python heap {current / 2**20:.1f}"
                f" MiB (peak so far {peak / 2**20:.1f} MiB), RSS {rss_bytes() / 2**20:.1f} MiB;"
                " by file:"
            ]
            for stat in snap.statistics("filename")[:15]:
                lines.append(
                    f"{stat.size / 1024:10.0f} KiB {stat.count:8d} blocks  {stat.traceback}"
                )
            lines.append("RSS by mapping (/proc/self/smaps):")
            lines += [f"{kib:10d} KiB  {name}" for name, kib in smaps_rss()[:10]]
            lines.append("top allocation sites:")
            top = snap.statistics("traceback")[:15]
            for stat in top:
                lines.append(f"{stat.size / 1024:10.0f} KiB {stat.count:8d} blocks")
                lines += [f"      {frame}" for frame in stat.traceback.format()[-8:]]
            Path(args.tracemalloc).write_text("\n".join(lines) + "\n")

    def go() -> dict[str, Any]:
        return asyncio.run(simulate(args.n, args.rate, window, db, status, snapshot))

    if args.profile:
        from pyinstrument import Profiler

        from bench.covey_run import profile_text

        profiler = Profiler(async_mode="disabled", interval=0.001)
        profiler.start()
        data = go()
        profiler.stop()
        Path(args.profile).write_text(profile_text(profiler))
        data["profiled"] = True
    else:
        data = go()
    Path(args.out).write_text(json.dumps(data))


def run(
    n: int,
    workdir: Path,
    *,
    timeout: float,
    rate: float = 5000.0,
    window: int = 0,
    profile: Path | None = None,
) -> dict[str, Any]:
    """One simulation in a fresh child process (so its memory readings are its own)."""
    db = workdir / f"scale-{n}.db"
    for stale in workdir.glob(f"scale-{n}.db*"):
        stale.unlink()
    out, status = workdir / f"scale-{n}.json", workdir / f"scale-{n}.status.json"
    for path in (out, status):
        path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.scale", "--n", str(n), "--rate", str(rate)]
    cmd += ["--window", str(window), "--db", str(db), "--out", str(out), "--status", str(status)]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    proc = subprocess.Popen(cmd)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        last = json.loads(status.read_text()) if status.exists() else {}
        return {
            "simulated": True,
            "n": n,
            "window": window or n,
            "rate_jobs_per_s": rate,
            "timed_out_after_s": timeout,
            "progress": last,
        }
    if code != 0:
        raise RuntimeError(f"scale simulation of {n} jobs failed (exit {code})")
    data: dict[str, Any] = json.loads(out.read_text())
    return data


if __name__ == "__main__":
    child_main()
