"""Typed records of what the engine reports.

Only :mod:`covey.engine` builds these from the Docker API's JSON; every other module
(states, governor, tracker, ...) sees these small frozen records instead of dicts, so the
pure decisions can be tested without Docker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

NANO = 1_000_000_000
"""Docker counts CPUs in billionths (``NanoCPUs``); the one definition in covey."""


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What ``GET /info`` says about the engine covey talks to."""

    name: str
    server_version: str
    swarm_manager: bool
    node_id: str | None
    ncpu: int
    memory: int


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A swarm node: its capacity and whether the scheduler may use it."""

    id: str
    hostname: str
    role: str
    availability: str
    state: str
    nano_cpus: int
    memory: int
    labels: Mapping[str, str] = field(default_factory=dict)
    engine_labels: Mapping[str, str] = field(default_factory=dict)
    os: str = "linux"
    arch: str = "x86_64"

    @property
    def usable(self) -> bool:
        """Ready and active: the scheduler may place new tasks here."""
        return self.state == "ready" and self.availability == "active"


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One swarm task, reduced to what covey decides on."""

    id: str
    service_id: str
    node_id: str | None
    state: str
    desired_state: str
    err: str | None
    message: str | None
    exit_code: int | None
    container_id: str | None
    attempt: str | None
    reserve_nano_cpus: int = 0
    reserve_memory: int = 0
    updated_at: str = ""
    status_at: float | None = None  # when the task reached its current state (the engine's)


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    """A plain container (container mode), from a list or an inspect."""

    id: str
    name: str
    state: str
    exit_code: int | None
    error: str | None
    oom_killed: bool
    attempt: str | None
    finished_at: float | None = None  # when it exited (the engine's clock)


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """A service covey may own: only its labels decide that."""

    id: str
    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """One line of ``GET /events``."""

    type: str
    action: str
    actor_id: str
    attributes: Mapping[str, str]
    time_nano: int
