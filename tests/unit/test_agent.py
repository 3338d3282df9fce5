"""covey.agent: the service covey deploys on every node (its follow is tested on a real
cluster in tests/engine/test_clusters.py)."""

from __future__ import annotations

import ast
import json
from types import SimpleNamespace
from typing import Any

import pytest

from covey.agent import (
    IMAGE_LABEL,
    SOCKET_TARGET,
    TARGET,
    config_name,
    program,
    service_body,
    service_name,
)


def test_the_agent_program_ships_with_covey_and_is_named_by_its_content() -> None:
    data = program()
    ast.parse(data)
    assert b"def main" in data
    assert config_name("abc", data) == config_name("abc", data)
    assert config_name("abc", data) != config_name("abc", data + b"\n")
    assert config_name("abc", data).startswith("covey-agent-abc-")


def test_the_agent_runs_once_per_node_and_its_container_is_no_job() -> None:
    body = service_body("abc", "python:3.12-slim", "/run/{{.Node.Hostname}}.sock", "cid", "cfg")
    assert body["Name"] == service_name("abc") == "covey-agent-abc"
    assert body["Mode"] == {"Global": {}}
    assert body["Labels"]["covey.store"] == "abc"  # covey prune finds it
    assert body["Labels"][IMAGE_LABEL] == "python:3.12-slim"
    spec = body["TaskTemplate"]["ContainerSpec"]
    assert "Labels" not in spec  # its own events never match covey.store=abc
    assert spec["Command"] == ["python3", TARGET]
    assert "COVEY_AGENT_STORE=abc" in spec["Env"]
    assert spec["Mounts"] == [
        {"Type": "bind", "Source": "/run/{{.Node.Hostname}}.sock", "Target": SOCKET_TARGET}
    ]
    assert spec["Configs"][0]["File"]["Name"] == TARGET
    assert body["TaskTemplate"]["RestartPolicy"]["Condition"] == "any"


class Look:
    def __init__(self) -> None:
        self.times = 0

    def set(self) -> None:
        self.times += 1


async def test_the_follower_applies_other_nodes_events_and_tracks_who_is_heard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from covey import agent
    from covey.retrying import Backoff

    applied: list[tuple[str, str, bool]] = []

    async def on_event(ctx: object, event: Any, killed: set[str], *, local: bool) -> None:
        applied.append((event.action, event.attributes.get("covey.attempt", ""), local))

    monkeypatch.setattr(agent, "on_event", on_event)
    ctx: Any = SimpleNamespace(agent_nodes=set(), look=Look())
    follower = agent.Follower(ctx, "manager", Backoff())
    ev = {"k": "ev", "action": "die", "id": "c1", "attrs": {"covey.attempt": "a1", "exitCode": "0"}}
    for line in (
        {"k": "hello", "node": "w1", "v": 1},
        {**ev, "node": "w1"},
        {**ev, "node": "manager"},  # the manager's own stream has it already
        {"k": "beat", "node": "w2", "seq": 1, "up": True},
        {"k": "down", "node": "w1", "err": "x"},
    ):
        await follower._line(json.dumps(line).encode())
    await follower._line(b"Traceback (most recent call last):")  # not one of its lines
    assert applied == [("die", "a1", False)]
    assert ctx.agent_nodes == {"w2"}
    assert ctx.look.times == 3  # w1's hello, w2's first beat, w1's down: list now
