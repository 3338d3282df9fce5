"""The pure parts of engine.py: log frames, the engine's own log complaints, records."""

from __future__ import annotations

import struct

from covey.engine import daemon_log_errors, demux, node_record, request_kind, task_record


def frame(kind: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", kind, len(data)) + data


def test_demux_keeps_streams_apart_and_reports_an_incomplete_tail() -> None:
    data = frame(1, b"out1\n") + frame(2, b"err\n") + frame(1, b"out2\n")
    out, err, rest = demux(data + frame(1, b"partial")[:6])
    assert out == b"out1\nout2\n"
    assert err == b"err\n"
    assert rest == 6


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
