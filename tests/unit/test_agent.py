"""covey.agent: the service covey deploys on every node (its follow is tested on a real
cluster in tests/engine/test_clusters.py)."""

from __future__ import annotations

import ast

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
