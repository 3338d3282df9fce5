"""The test harness itself: the private engines and cluster answer and clean up after themselves."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Cluster

REPO = Path(__file__).resolve().parents[2]
IMAGE = "covey-test/busybox:latest"


def docker(host: str, *args: str, timeout: float = 60) -> str:
    proc = subprocess.run(
        ["docker", "-H", host, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s")
        time.sleep(interval)


def test_swarm_engine_is_a_manager_with_the_test_image(swarm_host: str) -> None:
    info = json.loads(docker(swarm_host, "info", "--format", "{{json .Swarm}}"))
    assert info["LocalNodeState"] == "active"
    assert info["ControlAvailable"] is True
    assert docker(swarm_host, "image", "inspect", "--format", "{{.Id}}", IMAGE)
    assert docker(swarm_host, "image", "inspect", "--format", "{{.Id}}", "busybox:latest")


def test_one_shot_service_reports_its_exit_code(swarm_host: str) -> None:
    name = f"harness-{uuid.uuid4().hex[:8]}"
    docker(
        swarm_host,
        *("service", "create", "--quiet", "--detach", "--restart-condition", "none"),
        *("--name", name, IMAGE, "sh", "-c", "echo hi; exit 3"),
    )
    try:

        def final_task() -> dict[str, Any] | None:
            ids = docker(swarm_host, "service", "ps", "--quiet", "--no-trunc", name).split()
            if not ids:
                return None
            task: dict[str, Any] = json.loads(
                docker(swarm_host, "inspect", "--format", "{{json .}}", ids[0])
            )
            final = ("complete", "failed", "rejected", "shutdown")
            return task if task["Status"]["State"] in final else None

        task = wait_for(final_task)
        assert task["Status"]["State"] == "failed"
        assert task["Status"]["ContainerStatus"]["ExitCode"] == 3
        assert "hi" in docker(swarm_host, "service", "logs", "--raw", name)
    finally:
        docker(swarm_host, "service", "rm", name)


def test_plain_engine_is_no_swarm_member(plain_host: str) -> None:
    assert docker(plain_host, "info", "--format", "{{.Swarm.LocalNodeState}}") == "inactive"
    out = docker(plain_host, "run", "--rm", IMAGE, "sh", "-c", "echo ok; id -u")
    assert out.split() == ["ok", "0"]


def test_cluster_has_three_ready_labelled_nodes(cluster: Cluster) -> None:
    assert [n.hostname for n in cluster.nodes] == ["cl-manager", "cl-worker1", "cl-worker2"]
    for node in cluster.nodes:
        inspected = json.loads(docker(cluster.docker_host, "node", "inspect", node.node_id))[0]
        assert inspected["Description"]["Hostname"] == node.hostname
        assert inspected["Status"]["State"] == "ready"
        assert inspected["Spec"]["Labels"]["covey.node"] == node.hostname
        # every node answers on its own socket and has the test image
        assert docker(node.docker_host, "image", "inspect", "--format", "{{.Id}}", IMAGE)


def _host_veths() -> set[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True, check=False
    ).stdout
    return {line.split(":")[1].strip() for line in out.splitlines() if ":" in line}


def _leftovers(name: str) -> list[str]:
    """Anything on the host that still belongs to cluster NAME."""
    prefix = f"covey-{name}-"
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    left = [f"netns {ns}" for ns in netns.stdout.split() if ns.startswith(prefix)]
    state = REPO / ".engine" / f"{name}.cluster"
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(state) in cmdline or f"/run/{prefix}" in cmdline:
            left.append(f"process {proc.name}: {cmdline}")
    mounts = Path("/proc/self/mountinfo").read_text()
    left += [f"mount {line}" for line in mounts.splitlines() if str(state) in line]
    for depth in ("*/", "*/*/", "*/*/*/"):
        left += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"{depth}{prefix}*")]
    if state.exists():
        left.append(f"state dir {state}")
    return left


def test_cluster_down_leaves_nothing_behind(cluster_factory: Callable[..., Cluster]) -> None:
    name = "clh"
    veths_before = _host_veths()
    cl = cluster_factory(name, workers=1)
    assert [n.hostname for n in cl.nodes] == ["clh-manager", "clh-worker1"]
    status = docker(cl.docker_host, "node", "ls", "--format", "{{.Hostname}} {{.Status}}")
    assert sorted(status.splitlines()) == ["clh-manager Ready", "clh-worker1 Ready"]
    assert _host_veths() == veths_before, "the cluster must not put links into the host netns"
    # leave a container running and a dockerd SIGKILLed: down must clean up all the same
    docker(cl.workers[0].docker_host, "run", "-d", IMAGE, "sleep", "600")
    cl.kill_node("worker1")

    cl.down()
    assert _leftovers(name) == []
    assert _host_veths() == veths_before
    cl.down()  # idempotent
