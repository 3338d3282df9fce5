"""The covey agent program (src/covey/agent_main.py): its lines, and a run against a fake engine
on a unix socket whose event stream breaks once (the agent says ``down``, then resumes with
``since``)."""

from __future__ import annotations

import ast
import http.server
import io
import json
import os
import queue
import signal
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from covey import agent_main
from covey.agent_main import Agent, dumps, event_filters, event_line, since_param

NODE = "node-1"
T0 = 1_700_000_000_123_456_789


def raw_event(action: str, cid: str, t: int, **attrs: str) -> dict[str, Any]:
    """An engine event as ``GET /events`` sends it."""
    return {
        "status": action,
        "id": cid,
        "from": "covey-test/busybox:latest",
        "Type": "container",
        "Action": action,
        "Actor": {"ID": cid, "Attributes": {"image": "covey-test/busybox:latest", **attrs}},
        "scope": "local",
        "time": t // 1_000_000_000,
        "timeNano": t,
    }


def test_the_program_is_python_3_9_and_standard_library_only() -> None:
    tree = ast.parse(Path(agent_main.__file__).read_text(), feature_version=(3, 9))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert imported <= set(sys.stdlib_module_names)


def test_filters_follow_the_store_or_any_store() -> None:
    assert json.loads(event_filters("x")) == {
        "type": ["container"],
        "event": ["start", "kill", "die"],
        "label": ["covey.store=x"],
    }
    assert json.loads(event_filters(""))["label"] == ["covey.store"]


def test_since_keeps_the_nanoseconds() -> None:
    assert since_param(T0) == "1700000000.123456789"
    assert since_param(1_700_000_000_000_000_005) == "1700000000.000000005"


def test_event_line_keeps_only_the_attributes_covey_uses() -> None:
    raw = raw_event(
        "die",
        "c1",
        T0,
        exitCode="3",
        name="job.1.abc",
        signal="15",
        **{
            "covey.attempt": "a1",
            "covey.store": "x",
            "covey.other": "no",
            "com.docker.swarm.node.id": "n1",
            "com.docker.swarm.task.id": "t1",
            "com.docker.swarm.service.id": "s1",
            "com.docker.swarm.service.name": "job",
        },
    )
    line = event_line(NODE, raw)
    assert line == {
        "k": "ev",
        "node": NODE,
        "action": "die",
        "id": "c1",
        "attrs": {
            "covey.attempt": "a1",
            "covey.store": "x",
            "exitCode": "3",
            "com.docker.swarm.node.id": "n1",
            "com.docker.swarm.task.id": "t1",
            "com.docker.swarm.service.id": "s1",
        },
        "t": T0,
    }
    assert dumps(line).startswith('{"k":"ev","node":"node-1","action":"die","id":"c1","attrs":{')
    assert " " not in dumps(line)
    # an old-style event without Actor or Action still gives a line
    assert event_line(NODE, {"status": "start", "id": "c2"}) == {
        "k": "ev",
        "node": NODE,
        "action": "start",
        "id": "c2",
        "attrs": {},
        "t": 0,
    }


def test_a_replayed_event_is_printed_once() -> None:
    out = io.StringIO()
    agent = Agent("/nonexistent", "x", 1.0, out)
    agent.node = NODE
    for raw in [
        raw_event("start", "a", T0),
        raw_event("start", "b", T0 + 5),
        raw_event("die", "b", T0 + 5),  # same instant, another event: printed
        # the replay after a reconnect with since=T0+5
        raw_event("start", "b", T0 + 5),
        raw_event("die", "b", T0 + 5),
        raw_event("die", "a", T0 + 9),
    ]:
        agent.on_event(raw)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(ev["id"], ev["action"], ev["t"]) for ev in lines] == [
        ("a", "start", T0),
        ("b", "start", T0 + 5),
        ("b", "die", T0 + 5),
        ("a", "die", T0 + 9),
    ]
    assert agent.since == T0 + 9


# -- a run against a fake engine -------------------------------------------------------------

EV1 = raw_event("start", "c1", T0, **{"covey.store": "x", "covey.attempt": "a1"})
EV2 = raw_event("die", "c1", T0 + 1000, exitCode="0", **{"covey.store": "x", "covey.attempt": "a1"})
EV3 = raw_event("die", "c2", T0 + 2000, exitCode="1", **{"covey.store": "x", "covey.attempt": "a2"})


class FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """``GET /v1.41/info``, and ``GET /v1.41/events``: the first stream sends EV1, waits until
    the test has seen it arrive, sends EV2 and breaks off mid-stream; the next one replays EV2,
    sends EV3 and stays open until ``done`` is set."""

    daemon_threads = True

    def __init__(self, path: str) -> None:
        super().__init__(path, Handler)
        self.paths: list[str] = []
        self.first_seen = threading.Event()
        self.done = threading.Event()
        self.stalled = False
        self.path = path


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeEngine

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self) -> None:
        engine = self.server
        engine.paths.append(self.path)
        if self.path == "/v1.41/info":
            body = json.dumps({"ID": "ENGINE", "Swarm": {"NodeID": NODE}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        if sum(p.startswith("/v1.41/events") for p in engine.paths) == 1:
            self.chunk(EV1)
            # the agent must print EV1 now, not once more of the stream has come
            engine.stalled = not engine.first_seen.wait(10)
            self.chunk(EV2)
            return  # closes the connection with the chunked body unfinished
        self.chunk(EV2)
        self.chunk(EV3)
        engine.done.wait(10)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[FakeEngine]:
    server = FakeEngine(str(tmp_path / "docker.sock"))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.done.set()
    server.first_seen.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_the_agent_reports_events_at_once_and_resumes_after_a_broken_stream(
    engine: FakeEngine,
) -> None:
    env = dict(os.environ)
    env.update(COVEY_AGENT_SOCKET=engine.path, COVEY_AGENT_STORE="x", COVEY_AGENT_BEAT="0.05")
    env.pop("PYTHONUNBUFFERED", None)  # the agent flushes each line itself
    lines: queue.Queue[dict[str, Any]] = queue.Queue()
    beats: list[dict[str, Any]] = []
    with subprocess.Popen(
        [sys.executable, agent_main.__file__], env=env, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        stdout = proc.stdout

        def read() -> None:
            for line in stdout:
                lines.put(json.loads(line))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        def next_line() -> dict[str, Any]:
            while True:
                line = lines.get(timeout=5)
                if line["k"] != "beat":
                    return line
                beats.append(line)

        try:
            assert next_line() == {"k": "hello", "node": NODE, "v": 1}
            first = next_line()
            engine.first_seen.set()
            assert first == event_line(NODE, EV1)
            assert next_line() == event_line(NODE, EV2)
            down = next_line()
            assert down["k"] == "down"
            assert down["node"] == NODE
            # (http.client ends a chunked body cut short quietly, as if it were complete)
            assert down["err"] == "events stream ended"
            # the replayed EV2 is not printed again
            assert next_line() == event_line(NODE, EV3)
            seen = len(beats)
            while not any(b["up"] for b in beats[seen:]):  # the stream is up again
                beat = lines.get(timeout=5)
                assert beat["k"] == "beat"
                beats.append(beat)
            proc.send_signal(signal.SIGTERM)
            assert next_line() == {"k": "bye", "node": NODE}
            assert proc.wait(5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(5)

    assert not engine.stalled, "the agent held back an event it had received"
    assert [b["seq"] for b in beats] == list(range(1, len(beats) + 1))
    assert any(not b["up"] for b in beats)  # between the streams (0.2 s)
    info, first_stream, second_stream = engine.paths
    assert info == "/v1.41/info"
    for path in first_stream, second_stream:
        url = urlsplit(path)
        assert url.path == "/v1.41/events"
        query = parse_qs(url.query)
        assert json.loads(query["filters"][0]) == json.loads(event_filters("x"))
    assert "since" not in parse_qs(urlsplit(first_stream).query)
    assert parse_qs(urlsplit(second_stream).query)["since"] == [since_param(EV2["timeNano"])]
