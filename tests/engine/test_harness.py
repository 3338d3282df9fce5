"""The test harness itself: the private engines and cluster answer and clean up after themselves."""

from __future__ import annotations

import json
import os
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


def docker_proc(
    host: str,
    *args: str,
    timeout: float = 60,
    config: Path | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``docker -H HOST ARGS``, not checked; ``config`` is the CLI's DOCKER_CONFIG directory."""
    env = dict(os.environ)
    if config is not None:
        env["DOCKER_CONFIG"] = str(config)
    return subprocess.run(
        ["docker", "-H", host, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        env=env,
    )


def docker(host: str, *args: str, timeout: float = 60, config: Path | None = None) -> str:
    proc = docker_proc(host, *args, timeout=timeout, config=config)
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
        # every node answers on its own socket
        assert docker(node.docker_host, "info", "--format", "{{.Name}}") == node.hostname
    # only the manager has the local test image: workers pull from the cluster's registry
    assert docker(cluster.docker_host, "image", "inspect", "--format", "{{.Id}}", IMAGE)
    for node in cluster.workers:
        assert docker_proc(node.docker_host, "image", "inspect", IMAGE).returncode != 0


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
    docker(cl.workers[0].docker_host, "run", "-d", cl.image, "sleep", "600")
    cl.kill_node("worker1")

    cl.down()
    assert _leftovers(name) == []
    assert _host_veths() == veths_before
    cl.down()  # idempotent


# -- the cluster's registries --------------------------------------------------------------------


@pytest.fixture
def docker_config(tmp_path: Path) -> Path:
    """A throwaway DOCKER_CONFIG. Its "auths" entry keeps the CLI to this file (with none, it
    would use a credential helper of the host's if it found one)."""
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"auths": {"10.231.0.2:5001": {}}}))
    return config


def _rmi(host: str, *images: str) -> None:
    """Untag IMAGES if present (-f: a stopped task's container may still use one)."""
    docker_proc(host, "rmi", "-f", *images)


def test_registry_worker_runs_the_open_registry_image(cluster: Cluster) -> None:
    assert (cluster.registry, cluster.private_registry) == ("10.231.0.2:5000", "10.231.0.2:5001")
    assert cluster.registry_user == "covey"
    assert len(cluster.registry_password) >= 16
    assert cluster.image == "10.231.0.2:5000/covey-test/busybox:latest"
    worker = cluster.workers[0]
    _rmi(worker.docker_host, cluster.image)
    # a swarm task on a worker: the worker pulls the image from the registry, by its tag as
    # covey's services name it (the CLI would pin a digest without --no-resolve-image)
    name = f"harness-{uuid.uuid4().hex[:8]}"
    docker(
        cluster.docker_host,
        *("service", "create", "--quiet", "--detach", "--restart-condition", "none"),
        "--no-resolve-image",
        *("--constraint", f"node.hostname=={worker.hostname}"),
        *("--name", name, cluster.image, "sh", "-c", "echo pulled"),
    )
    try:

        def final_state() -> str | None:
            out = docker(
                cluster.docker_host, "service", "ps", "--format", "{{.CurrentState}}", name
            )
            state = out.split(" ")[0].lower()
            return state if state in ("complete", "failed", "rejected", "shutdown") else None

        assert wait_for(final_state) == "complete"
        assert docker(cluster.docker_host, "service", "logs", "--raw", name) == "pulled"
        assert docker(worker.docker_host, "image", "inspect", "--format", "{{.Id}}", cluster.image)
    finally:
        docker(cluster.docker_host, "service", "rm", name)
        _rmi(worker.docker_host, cluster.image)


def test_private_registry_refuses_pulls_without_credentials(
    cluster: Cluster, docker_config: Path
) -> None:
    worker = cluster.workers[-1]
    _rmi(worker.docker_host, cluster.private_image)
    refused = docker_proc(worker.docker_host, "pull", cluster.private_image, config=docker_config)
    assert refused.returncode != 0
    assert "no basic auth credentials" in refused.stderr or "unauthorized" in refused.stderr
    login = ("login", "--username", cluster.registry_user, "--password-stdin")
    wrong = docker_proc(
        worker.docker_host, *login, cluster.private_registry, config=docker_config, input="nope"
    )
    assert wrong.returncode != 0
    assert "401" in wrong.stderr or "unauthorized" in wrong.stderr.lower()
    ok = docker_proc(
        worker.docker_host,
        *login,
        cluster.private_registry,
        config=docker_config,
        input=cluster.registry_password,
    )
    assert ok.returncode == 0, ok.stderr
    try:
        docker(worker.docker_host, "pull", "--quiet", cluster.private_image, config=docker_config)
    finally:
        _rmi(worker.docker_host, cluster.private_image)


def test_registry_push_of_a_new_tag(cluster: Cluster, docker_config: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    open_dest = f"{cluster.registry}/covey-test/pushed:{tag}"
    private_dest = f"{cluster.private_registry}/covey-test/pushed:{tag}"
    cluster.push(IMAGE, open_dest)
    cluster.push(IMAGE, private_dest)
    manager_id = docker(cluster.docker_host, "image", "inspect", "--format", "{{.Id}}", IMAGE)
    # the manager keeps no registry name: a node has one only by pulling it
    assert docker_proc(cluster.docker_host, "image", "inspect", open_dest).returncode != 0
    worker = cluster.workers[0]
    try:
        docker(worker.docker_host, "pull", "--quiet", open_dest, config=docker_config)
        pulled = docker(worker.docker_host, "image", "inspect", "--format", "{{.Id}}", open_dest)
        assert pulled == manager_id
        refused = docker_proc(worker.docker_host, "pull", private_dest, config=docker_config)
        assert refused.returncode != 0
        docker_proc(
            worker.docker_host,
            *("login", "--username", cluster.registry_user, "--password-stdin"),
            cluster.private_registry,
            config=docker_config,
            input=cluster.registry_password,
        )
        docker(worker.docker_host, "pull", "--quiet", private_dest, config=docker_config)
    finally:
        _rmi(worker.docker_host, open_dest, private_dest)
