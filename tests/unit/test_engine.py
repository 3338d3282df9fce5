"""engine.py without Docker: the engine's own log complaints, records, and how
an error answer is classified (refused or unavailable), against a fake engine on a socket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiodocker.exceptions import DockerError
from aiohttp import web

from covey.engine import (
    Conflict,
    Engine,
    NotFound,
    Unavailable,
    _error,
    daemon_log_errors,
    node_record,
    request_kind,
    task_record,
)
from covey.errors import EngineError


def test_daemon_log_errors_are_not_the_jobs_output() -> None:
    data = b"line 1\nError grabbing logs: node x is not available\nline 2\n"
    kept, errors = daemon_log_errors(data)
    assert kept == b"line 1\nline 2\n"
    assert errors == ["node x is not available"]
    assert daemon_log_errors(b"plain\n") == (b"plain\n", [])


def test_request_kinds_stay_few() -> None:
    assert request_kind("GET", "services/abc123/logs") == "GET /services/{id}/logs"
    assert request_kind("POST", "services/create") == "POST /services/create"
    assert request_kind("GET", "tasks") == "GET /tasks"


def test_task_record_reads_what_covey_decides_on() -> None:
    raw = {
        "ID": "t1",
        "ServiceID": "s1",
        "NodeID": "n1",
        "DesiredState": "shutdown",
        "UpdatedAt": "2026-11-23T10:00:00Z",
        "Status": {
            "State": "failed",
            "Err": "task: non-zero exit (3)",
            "ContainerStatus": {"ContainerID": "c1", "ExitCode": 3},
        },
        "Spec": {
            "ContainerSpec": {"Labels": {"covey.attempt": "job-1"}},
            "Resources": {"Reservations": {"NanoCPUs": 500_000_000, "MemoryBytes": 64}},
        },
    }
    task = task_record(raw)
    assert (task.state, task.exit_code, task.attempt, task.node_id) == ("failed", 3, "job-1", "n1")
    assert (task.reserve_nano_cpus, task.reserve_memory) == (500_000_000, 64)


def test_node_record_reads_capacity_and_labels() -> None:
    raw = {
        "ID": "n1",
        "Spec": {"Role": "worker", "Availability": "drain", "Labels": {"disk": "ssd"}},
        "Description": {
            "Hostname": "w1",
            "Resources": {"NanoCPUs": 2_000_000_000, "MemoryBytes": 1024},
            "Engine": {"Labels": {"zone": "a"}},
            "Platform": {"OS": "linux", "Architecture": "x86_64"},
        },
        "Status": {"State": "ready"},
    }
    node = node_record(raw)
    assert node.hostname == "w1"
    assert node.labels == {"disk": "ssd"}
    assert node.engine_labels == {"zone": "a"}
    assert not node.usable


# -- refused or unavailable: what the engine says, and whether it answers a ping ----------------


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (404, "no such service: x", NotFound),
        (409, "name conflicts with an existing object", Conflict),
        (503, "This node is not a swarm manager. Manager is being prepared", Unavailable),
        (502, "bad gateway", Unavailable),
        (900, "Cannot connect to Docker", Unavailable),
        (
            500,
            "rpc error: code = Unknown desc = The swarm does not have a leader. It's possible "
            "that too few managers are online. Make sure more than half of the managers are "
            "online.",
            Unavailable,
        ),
        (500, "rpc error: code = DeadlineExceeded desc = context deadline exceeded", Unavailable),
        (500, "rpc error: code = Unavailable desc = transport is closing", Unavailable),
        (500, "raft: failed to process the request: node lost leader status", Unavailable),
        (500, "network no-such-net not found", EngineError),
        (500, "This node is not a swarm manager. Worker nodes can't be used", EngineError),
        (400, "invalid mount config", EngineError),
        (501, "not implemented", EngineError),
    ],
)
def test_an_engine_that_answers_is_unavailable_only_when_it_says_so(
    status: int, message: str, expected: type[EngineError]
) -> None:
    error = _error(DockerError(status, message), "create service")
    assert type(error) is expected
    assert str(error) == f"create service: {message}"


def test_a_500_from_an_engine_that_no_longer_answers_a_ping_is_unavailable() -> None:
    error = _error(DockerError(500, "network x not found"), "create service", alive=False)
    assert type(error) is Unavailable


class FakeEngine:
    """An HTTP server on a unix socket that answers like a Docker engine: ``_ping`` 200
    (until ``sick``), and every other request with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        self.sick = False
        self.pings = 0

    async def handle(self, request: web.Request) -> web.Response:
        if request.path.endswith("/_ping"):
            self.pings += 1
            if self.sick:
                return web.json_response({"message": "sick"}, status=500)
            return web.Response(text="OK")
        return web.json_response({"message": self.message}, status=self.status)

    @contextlib.asynccontextmanager
    async def serving(self, path: Path) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.UnixSite(runner, str(path)).start()
        try:
            yield f"unix://{path}"
        finally:
            await runner.cleanup()


async def test_a_create_the_engine_refuses_is_a_refusal_not_unavailable(tmp_path: Path) -> None:
    fake = FakeEngine(500, "network no-such-net not found")
    async with fake.serving(tmp_path / "e.sock") as host, Engine(host) as engine:
        with pytest.raises(EngineError) as info:
            await engine.create_service({"Name": "x"})
        pings = fake.pings
        fake.sick = True
        with pytest.raises(Unavailable):
            await engine.create_service({"Name": "x"})
    assert type(info.value) is EngineError
    assert "network no-such-net not found" in str(info.value)
    assert pings == 2  # one at open, one to tell the refusal from a sick engine


async def test_a_transient_500_is_unavailable_without_a_ping(tmp_path: Path) -> None:
    fake = FakeEngine(500, "rpc error: code = Unknown desc = The swarm does not have a leader.")
    async with fake.serving(tmp_path / "e.sock") as host, Engine(host) as engine:
        with pytest.raises(Unavailable):
            await engine.tasks({})
    assert fake.pings == 1  # only the one at open


async def test_no_engine_anywhere_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without DOCKER_HOST, a docker context or a socket at a usual place, aiodocker only
    asserts: covey says what it looked for instead of a traceback."""
    import aiodocker.docker

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(aiodocker.docker, "_sock_search_paths", [tmp_path / "docker.sock"])
    with pytest.raises(EngineError, match="DOCKER_HOST is not set"):
        await Engine().open()
