"""Shared fixtures: private Docker engines started once per test session.

The engines come from ``scripts/engine.sh`` and ``scripts/cluster.sh``; they start lazily, the
first time a test asks for them, and go down at the end of the session.

Fixtures
  swarm_host    DOCKER_HOST of a private single-node swarm (``engine.sh up --name covey-t``)
  plain_host    DOCKER_HOST of a private engine that is not a swarm member (``--name covey-p``)
  cluster       a 3-node swarm (``cluster.sh up --name cl``): manager + 2 workers, with
                fault injection (kill_node, start_node, cut, heal, drain, activate); whatever a
                test breaks is repaired after it. Its registries: ``cluster.image`` (open) and
                ``cluster.private_image`` (basic auth: ``registry_user``/``registry_password``)
                are what workers can run; only the manager has covey-test/busybox:latest
  cluster_factory  a test's own small cluster (another name), taken down after the test
  covey_cli     runs ``python -m covey ARGS`` in a subprocess

Environment
  COVEY_TEST_DOCKER_HOST=unix:///...  use that engine for ``swarm_host``; nothing is started or
                                      stopped, and tests that need the other engines are skipped
  COVEY_KEEP_ENGINE=1                 leave the engines running at the end (fast re-runs: the
                                      next session finds them up and reuses them)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parent.parent
ENGINE_SH = REPO / "scripts" / "engine.sh"
CLUSTER_SH = REPO / "scripts" / "cluster.sh"

SWARM_ENGINE = "covey-t"
PLAIN_ENGINE = "covey-p"
CLUSTER_NAME = "cl"

UP_TIMEOUT = 900  # the first `up` on a fresh machine installs packages
DOWN_TIMEOUT = 180
FAULT_TIMEOUT = 180


class EngineError(RuntimeError):
    """A harness script failed."""


def run_script(script: Path, *args: str, timeout: float = UP_TIMEOUT) -> str:
    """Run an engine script; return its stdout, raise EngineError with its stderr on failure."""
    cmd = ["bash", str(script), *args]
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"{' '.join(cmd)} timed out after {timeout}s") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-40:])
        raise EngineError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return proc.stdout


def parse_docker_host(stdout: str) -> str:
    prefix = "export DOCKER_HOST="
    for line in stdout.splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise EngineError(f"no DOCKER_HOST line in {stdout!r}")


def keep_engines() -> bool:
    return os.environ.get("COVEY_KEEP_ENGINE", "") not in ("", "0")


def foreign_engine() -> str | None:
    return os.environ.get("COVEY_TEST_DOCKER_HOST") or None


def skip_if_foreign_engine(what: str) -> None:
    if foreign_engine():
        pytest.skip(f"COVEY_TEST_DOCKER_HOST is set: not starting {what}")


@contextlib.contextmanager
def started(script: Path, name: str, *up_args: str) -> Iterator[str]:
    """``script up --name NAME UP_ARGS`` ... ``script down --name NAME``; yields up's stdout.

    A failed or interrupted ``up`` is cleaned up at once; ``down`` is skipped when
    COVEY_KEEP_ENGINE is set.
    """
    try:
        out = run_script(script, "up", "--name", name, *up_args)
    except BaseException:
        with contextlib.suppress(Exception):
            run_script(script, "down", "--name", name, timeout=DOWN_TIMEOUT)
        raise
    try:
        yield out
    finally:
        if not keep_engines():
            run_script(script, "down", "--name", name, timeout=DOWN_TIMEOUT)


@pytest.fixture(scope="session")
def swarm_host() -> Iterator[str]:
    """DOCKER_HOST of a private single-node swarm manager with covey-test/busybox:latest."""
    override = foreign_engine()
    if override:
        yield override
        return
    with started(ENGINE_SH, SWARM_ENGINE) as out:
        yield parse_docker_host(out)


@pytest.fixture(scope="session")
def plain_host() -> Iterator[str]:
    """DOCKER_HOST of a private engine that is not part of a swarm ("container mode")."""
    skip_if_foreign_engine("the plain engine")
    with started(ENGINE_SH, PLAIN_ENGINE, "--no-swarm") as out:
        yield parse_docker_host(out)


class Node(NamedTuple):
    hostname: str
    node_id: str
    docker_host: str
    ip: str


def parse_exports(stdout: str) -> dict[str, str]:
    """The ``export NAME=VALUE`` lines of a script's stdout."""
    exports = {}
    for line in stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line.removeprefix("export ").partition("=")
            exports[key.strip()] = value.strip()
    return exports


@dataclass
class Cluster:
    """A private swarm of one manager and some workers, with fault injection.

    The nodes pull images from the cluster's two registries (plain HTTP, in the cluster's own
    network): ``registry`` is open, ``private_registry`` wants ``registry_user`` and
    ``registry_password``. Only the manager has the local covey-test/busybox:latest; jobs that
    may land on a worker use ``image`` (or ``private_image``, with credentials).
    """

    name: str
    docker_host: str
    nodes: list[Node]
    registry: str = ""
    private_registry: str = ""
    registry_user: str = ""
    registry_password: str = field(default="", repr=False)
    agent_socket: str = ""  # each node's docker socket, with {{.Node.Hostname}} in it
    _faults: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _agent_image: str | None = field(default=None, repr=False)

    @classmethod
    def from_up_output(cls, name: str, stdout: str) -> Cluster:
        nodes = [
            Node(*line.split()[1:5]) for line in stdout.splitlines() if line.startswith("NODE ")
        ]
        exports = parse_exports(stdout)
        return cls(
            name=name,
            docker_host=parse_docker_host(stdout),
            nodes=nodes,
            registry=exports.get("COVEY_REGISTRY", ""),
            private_registry=exports.get("COVEY_PRIVATE_REGISTRY", ""),
            registry_user=exports.get("COVEY_REGISTRY_USER", ""),
            registry_password=exports.get("COVEY_REGISTRY_PASSWORD", ""),
            agent_socket=exports.get("COVEY_AGENT_SOCKET", ""),
        )

    @property
    def image(self) -> str:
        """The test image on the open registry (every node can pull it)."""
        return f"{self.registry}/covey-test/busybox:latest"

    @property
    def private_image(self) -> str:
        """The test image on the private registry (pulls need the credentials)."""
        return f"{self.private_registry}/covey-test/private:latest"

    def agent_image(self) -> str:
        """covey's agent image on the open registry (``cluster.sh agent-image``: built from
        Debian's python3 the first time, then cached)."""
        if self._agent_image is None:
            out = run_script(CLUSTER_SH, "agent-image", "--name", self.name)
            self._agent_image = parse_exports(out)["COVEY_AGENT_IMAGE"]
        return self._agent_image

    def push(self, src: str, dest: str) -> None:
        """Tag the manager's local image ``src`` as ``dest`` (on one of the cluster's
        registries) and push it; the manager keeps no ``dest`` name (nodes pull it)."""
        run_script(CLUSTER_SH, "push", src, dest, "--name", self.name, timeout=FAULT_TIMEOUT)

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    def node(self, name: str) -> Node:
        """A node by hostname (``cl-worker1``) or short name (``worker1``)."""
        for node in self.nodes:
            if name in (node.hostname, node.hostname.removeprefix(f"{self.name}-")):
                return node
        raise KeyError(name)

    def _run(self, command: str, node: str | Node) -> None:
        hostname = node.hostname if isinstance(node, Node) else self.node(node).hostname
        run_script(CLUSTER_SH, command, hostname, "--name", self.name, timeout=FAULT_TIMEOUT)
        undo = {"kill-node": "start-node", "cut": "heal", "drain": "activate"}
        if command in undo:
            self._faults.setdefault(hostname, set()).add(undo[command])
        elif hostname in self._faults:
            self._faults[hostname].discard(command)

    def kill_node(self, node: str | Node) -> None:
        """SIGKILL the node's dockerd (its containers keep running)."""
        self._run("kill-node", node)

    def start_node(self, node: str | Node) -> None:
        """Start a killed node again and wait until the manager sees it Ready."""
        self._run("start-node", node)

    def cut(self, node: str | Node) -> None:
        """Partition the node from the others (its link goes down)."""
        self._run("cut", node)

    def heal(self, node: str | Node) -> None:
        self._run("heal", node)

    def drain(self, node: str | Node) -> None:
        self._run("drain", node)

    def activate(self, node: str | Node) -> None:
        self._run("activate", node)

    def down(self) -> None:
        """Take the whole cluster down (idempotent)."""
        cluster_down(self.name)

    def repair(self) -> None:
        """Undo every fault injected through this object (heal, start, activate)."""
        for hostname, undos in list(self._faults.items()):
            for command in ("heal", "start-node", "activate"):
                if command in undos:
                    self._run(command, hostname)
        self._faults.clear()


def cluster_up(name: str, workers: int = 2) -> Cluster:
    """``cluster.sh up`` (cleaned up at once if it fails); see also ``cluster_factory``."""
    try:
        out = run_script(CLUSTER_SH, "up", "--name", name, "--workers", str(workers))
    except BaseException:
        with contextlib.suppress(Exception):
            cluster_down(name)
        raise
    return Cluster.from_up_output(name, out)


def cluster_down(name: str) -> None:
    run_script(CLUSTER_SH, "down", "--name", name, timeout=DOWN_TIMEOUT)


@pytest.fixture
def cluster_factory() -> Iterator[Callable[..., Cluster]]:
    """``cluster_factory(name, workers=1)``: a test's own cluster, taken down after the test."""
    skip_if_foreign_engine("a cluster")
    names: list[str] = []

    def up(name: str, workers: int = 1) -> Cluster:
        if name == CLUSTER_NAME:
            raise ValueError(f"{CLUSTER_NAME!r} is the shared cluster's name")
        names.append(name)
        return cluster_up(name, workers)

    yield up
    for name in names:
        cluster_down(name)


@pytest.fixture(scope="session")
def _cluster_session() -> Iterator[Cluster]:
    skip_if_foreign_engine("the cluster")
    with started(CLUSTER_SH, CLUSTER_NAME, "--workers", "2") as out:
        yield Cluster.from_up_output(CLUSTER_NAME, out)


@pytest.fixture
def cluster(_cluster_session: Cluster) -> Iterator[Cluster]:
    """The shared 3-node cluster; faults a test injects through it are undone afterwards."""
    yield _cluster_session
    _cluster_session.repair()


CliRunner = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def covey_cli() -> CliRunner:
    """``covey_cli(*args, docker_host=None, env=None, timeout=120, input=None)``.

    Runs ``python -m covey ARGS`` (this interpreter, the working tree's package) and returns the
    CompletedProcess (text, not checked). ``docker_host`` sets DOCKER_HOST; ``env`` adds to or
    overrides the environment.
    """

    def run(
        *args: str,
        docker_host: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        input: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = dict(os.environ)
        src = str(REPO / "src")
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (src, full_env.get("PYTHONPATH", "")) if p
        )
        if docker_host is not None:
            full_env["DOCKER_HOST"] = docker_host
        if env:
            full_env.update(env)
        return subprocess.run(
            [sys.executable, "-m", "covey", *args],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            check=False,
        )

    return run


_MARKERS = {
    "swarm_host": "engine",
    "plain_host": "plain",
    "cluster": "cluster",
    "cluster_factory": "cluster",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/engine get the marker of the engine fixture they use."""
    engine_dir = REPO / "tests" / "engine"
    for item in items:
        if engine_dir not in Path(str(item.path)).parents:
            continue
        for fixture, marker in _MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(getattr(pytest.mark, marker))
