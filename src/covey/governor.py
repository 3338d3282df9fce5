"""Pure: admit a job only when some eligible node still has what it reserves.

Capacity is one number pair (nano CPUs, bytes) per node: the node's resources minus the
reservations of every task on it that covey did not admit itself (``foreign``), minus
covey's own bookings. A booking is made on admission (on the node covey expects the
scheduler to choose), moved when the engine reports where the task really went, and
released when the engine confirms the task is over. This mirrors swarmkit's ``nodeinfo``
and keeps the swarm from piling up pending services. No I/O: unit-tested with plain data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from covey.records import NANO, NodeRecord, TaskRecord

TaskLike = TaskRecord


@dataclass(frozen=True, slots=True)
class Demand:
    """What one job reserves, and where it may run."""

    nano_cpus: int = 0
    memory: int = 0
    constraints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """Reserved resources on one node."""

    nano_cpus: int = 0
    memory: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.nano_cpus + other.nano_cpus, self.memory + other.memory)


def _constraint_value(node: NodeRecord, key: str) -> str | None:
    simple = {
        "node.id": node.id,
        "node.hostname": node.hostname,
        "node.role": node.role,
        "node.platform.os": node.os,
        "node.platform.arch": node.arch,
    }
    if key in simple:
        return simple[key]
    if key.startswith("node.labels."):
        return node.labels.get(key.removeprefix("node.labels."))
    if key.startswith("engine.labels."):
        return node.engine_labels.get(key.removeprefix("engine.labels."))
    return None


def matches(node: NodeRecord, constraint: str) -> bool:
    """One docker placement constraint (``key==value`` or ``key!=value``) against a node."""
    negate = "!=" in constraint
    key, _, value = constraint.partition("!=" if negate else "==")
    actual = _constraint_value(node, key.strip())
    equal = actual is not None and actual.lower() == value.strip().lower()
    return not equal if negate else equal


def eligible(node: NodeRecord, demand: Demand) -> bool:
    return all(matches(node, c) for c in demand.constraints)


def human_cpus(nano: int) -> str:
    return f"{nano / NANO:g} CPU"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


class Governor:
    """Per-node free capacity and covey's bookings; the only gate for starting work."""

    def __init__(self, max_concurrent: int | None = None) -> None:
        self.max_concurrent = max_concurrent
        self._nodes: dict[str, NodeRecord] = {}
        self._foreign: dict[str, Usage] = {}
        self._bookings: dict[str, tuple[str, Demand]] = {}
        self._booked: dict[str, Usage] = {}  # per node: the sum of its bookings

    # -- what the engine says ----------------------------------------------------------

    def set_nodes(
        self, nodes: Iterable[NodeRecord], foreign: Mapping[str, Usage] | None = None
    ) -> None:
        """Replace the view of the cluster: nodes and reservations covey did not book."""
        self._nodes = {n.id: n for n in nodes}
        self._foreign = dict(foreign or {})

    @property
    def nodes(self) -> list[NodeRecord]:
        return list(self._nodes.values())

    def node(self, node_id: str | None) -> NodeRecord | None:
        return self._nodes.get(node_id) if node_id else None

    # -- decisions ------------------------------------------------------------------------

    def never_fits(self, demand: Demand) -> str | None:
        """Why this job can never run on this cluster as it is, or ``None``."""
        candidates = [n for n in self._nodes.values() if n.availability != "drain"]
        if not candidates:
            return "the swarm has no active node"
        matching = [n for n in candidates if eligible(n, demand)]
        if not matching:
            wanted = ", ".join(demand.constraints)
            return f"no node matches the constraints ({wanted})"
        if any(self._fits_total(n, demand) for n in matching):
            return None
        largest = max(matching, key=lambda n: (n.nano_cpus, n.memory))
        return (
            f"it reserves {human_cpus(demand.nano_cpus)} and {human_bytes(demand.memory)}, "
            f"but the largest eligible node, {largest.hostname}, has only "
            f"{human_cpus(largest.nano_cpus)} and {human_bytes(largest.memory)}"
        )

    @staticmethod
    def _fits_total(node: NodeRecord, demand: Demand) -> bool:
        return demand.nano_cpus <= node.nano_cpus and demand.memory <= node.memory

    def free(self, node_id: str) -> Usage:
        node = self._nodes[node_id]
        used = self._foreign.get(node_id, Usage()) + self._booked.get(node_id, Usage())
        return Usage(node.nano_cpus - used.nano_cpus, node.memory - used.memory)

    def _book(self, key: str, node_id: str, demand: Demand) -> None:
        """Set ``key``'s booking, keeping the per-node sums (O(1), not a scan per admission)."""
        self._unbook(key)
        self._bookings[key] = (node_id, demand)
        self._booked[node_id] = self._booked.get(node_id, Usage()) + Usage(
            demand.nano_cpus, demand.memory
        )

    def _unbook(self, key: str) -> bool:
        booking = self._bookings.pop(key, None)
        if booking is None:
            return False
        node_id, demand = booking
        left = self._booked.get(node_id, Usage()) + Usage(-demand.nano_cpus, -demand.memory)
        if left == Usage():
            self._booked.pop(node_id, None)
        else:
            self._booked[node_id] = left
        return True

    def room_for(self, demand: Demand) -> str | None:
        """The node (most free CPU first, as swarm's spread) that can take it now."""
        if self.max_concurrent is not None and len(self._bookings) >= self.max_concurrent:
            return None
        best: tuple[int, int, str] | None = None
        for node in self._nodes.values():
            if not node.usable or not eligible(node, demand):
                continue
            free = self.free(node.id)
            if free.nano_cpus >= demand.nano_cpus and free.memory >= demand.memory:
                key = (free.nano_cpus, free.memory, node.id)
                if best is None or key > best:
                    best = key
        return best[2] if best else None

    def admit(self, key: str, demand: Demand) -> str | None:
        """Book ``demand`` under ``key`` if some node has room now; the node id, or ``None``."""
        if key in self._bookings:
            return self._bookings[key][0]
        node_id = self.room_for(demand)
        if node_id is not None:
            self._book(key, node_id, demand)
        return node_id

    def hold(self, key: str, demand: Demand, node_id: str | None) -> None:
        """Book an attempt that already runs (adopted after a restart), room or not."""
        if node_id is None or node_id not in self._nodes:
            node_id = next(iter(self._nodes), "")
        self._book(key, node_id, demand)

    def place(self, key: str, node_id: str | None) -> None:
        """The engine put the task on ``node_id``: move the booking there."""
        booking = self._bookings.get(key)
        if booking and node_id and node_id in self._nodes and booking[0] != node_id:
            self._book(key, node_id, booking[1])

    def release(self, key: str) -> bool:
        return self._unbook(key)

    @property
    def admitted(self) -> int:
        return len(self._bookings)

    def booked(self, key: str) -> bool:
        return key in self._bookings


RESERVING_STATES = frozenset({"assigned", "accepted", "preparing", "ready", "starting", "running"})


def foreign_usage(
    tasks: Iterable[TaskLike], is_ours: Callable[[str | None], bool]
) -> dict[str, Usage]:
    """Reservations per node of live tasks covey did not book itself (other users' services)."""
    usage: dict[str, Usage] = {}
    for task in tasks:
        if task.node_id is None or task.state not in RESERVING_STATES:
            continue
        if task.desired_state != "running" or is_ours(task.attempt):
            continue
        usage[task.node_id] = usage.get(task.node_id, Usage()) + Usage(
            task.reserve_nano_cpus, task.reserve_memory
        )
    return usage
