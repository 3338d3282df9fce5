"""What the orchestrator's loops share: connections, the governor, and the live attempts.

One :class:`Context` per orchestrator. The loops (submitter, tracker, reaper) each own their
part of a :class:`Live` attempt's life and hand it on; signals between them are
``anyio.Event`` objects swapped on each wake (APScheduler's pattern), never timers alone.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, ValuesView
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from covey.backend import Backend
from covey.capture import Passthrough
from covey.governor import Demand, Governor
from covey.images import Pins
from covey.records import NANO, NodeRecord
from covey.retrying import GIVE_UP_AFTER
from covey.spec import JobSpec
from covey.states import Observation, Phase
from covey.store import DEFAULT_LOG_CAP, AttemptRow, JobRow, JobSnapshot, Scope, Store
from covey.store.gate import GateResult

log = logging.getLogger("covey")

NODES_REFRESH = 5.0
AUTO_PER_CPU = 16
AUTO_MIN = 4


@dataclass
class Options:
    """Knobs of one orchestrator (CLI flags and :class:`covey.Client` arguments)."""

    max_concurrent: int | None = None
    poll_interval: float = 2.0
    log_timeout: float = 30.0
    log_cap: int = DEFAULT_LOG_CAP
    keep: bool = False
    keep_failed: float | None = None
    pending_timeout: float = 120.0
    pull_timeout: float = 900.0  # time a node may spend pulling an image (not "pending")
    # how long a create or removal is retried while the engine is unavailable (covey.retrying)
    engine_timeout: float = GIVE_UP_AFTER
    use_events: bool = True
    supervise: bool = False
    retain: float | None = None  # a supervisor deletes jobs that ended longer ago than this
    # other nodes' engines, whose container events covey follows too (covey.watcher)
    node_hosts: tuple[str, ...] = ()
    # the image of covey's agent on every node (covey.agent), and where a node's socket is
    agent_image: str | None = None
    agent_socket: str = "/var/run/docker.sock"


@dataclass
class Live:
    """One attempt the orchestrator is responsible for, from create to removal."""

    attempt: AttemptRow
    job: JobRow
    demand: Demand
    phase: Phase = Phase.PENDING
    engine_id: str | None = None
    node_id: str | None = None
    since: float = field(default_factory=time.monotonic)
    started: float | None = None
    pending_reason: str | None = None
    stop_reason: str | None = None
    ended: bool = False
    died: bool = False  # a die event was seen: the engine's listing will say so shortly
    container: str | None = None  # its ended container on this engine (from the die event)
    confirmed: anyio.Event = field(default_factory=anyio.Event)
    # The create call is over (or was over before a restart). A fast job's end can arrive in
    # its die event before the create call returns: it must not be settled before that.
    created: anyio.Event = field(default_factory=anyio.Event)
    end: Observation | None = None
    # a foreground follower copying this attempt's output (``covey run``): the reaper holds
    # the removal until it has caught up with the engine's full read (covey.capture)
    passthrough: Passthrough | None = None
    scheduled: bool = False  # the engine has placed it on a node (--pending-timeout is over)
    pull_since: float | None = None  # monotonic: its node started pulling the image

    def pulling(self, now_pulling: bool, now: float) -> None:
        """Note whether the engine says the image is being pulled (see tracker._stuck)."""
        if now_pulling and self.pull_since is None:
            self.pull_since = now
        elif not now_pulling:
            self.pull_since = None

    @property
    def spec(self) -> JobSpec:
        return self.job.spec

    @property
    def reserves(self) -> bool:
        return bool(self.demand.nano_cpus or self.demand.memory)


@dataclass(frozen=True, slots=True)
class Share:
    """For covey.sharer: put ``attempt_id``'s stdout in a config (its job is done, and other
    jobs will read its output)."""

    attempt_id: str
    batch_id: str


@dataclass(frozen=True, slots=True)
class Cleanup:
    """For covey.sharer: the batch is over, remove its shared outputs."""

    batch_id: str


def demand_of(spec: JobSpec) -> Demand:
    r = spec.resources
    return Demand(r.reserve_nano_cpus, r.reserve_memory, spec.constraints)


def auto_concurrency(nodes: list[NodeRecord]) -> int:
    """Default cap for jobs that reserve nothing: a few per usable CPU, so the swarm is never
    flooded with services it cannot start (the engine is CPU-bound in runc/containerd)."""
    cpus = sum(n.nano_cpus for n in nodes if n.usable) // NANO
    return max(AUTO_MIN, AUTO_PER_CPU * cpus)


class Signal:
    """A level-triggered wake-up: ``set`` from anywhere, ``wait`` with a timeout."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        with anyio.move_on_after(max(0.0, timeout)):
            await self._event.wait()
        fired = self._event.is_set()
        if fired:
            self._event = anyio.Event()
        return fired


class LiveTable(MutableMapping[str, "Live"]):
    """The live attempts by attempt id, indexed by job id too: ``for_job`` is O(1), which
    matters with thousands of jobs (the submitter and ``Client.wait`` ask it per job)."""

    def __init__(self) -> None:
        self._by_attempt: dict[str, Live] = {}
        self._by_job: dict[str, dict[str, Live]] = {}  # job id -> its attempts (usually one)

    def __getitem__(self, key: str) -> Live:
        return self._by_attempt[key]

    def __setitem__(self, key: str, live: Live) -> None:
        if key in self._by_attempt:
            del self[key]
        self._by_attempt[key] = live
        self._by_job.setdefault(live.job.id, {})[key] = live

    def __delitem__(self, key: str) -> None:
        live = self._by_attempt.pop(key)
        attempts = self._by_job.get(live.job.id)
        if attempts is not None:
            attempts.pop(key, None)
            if not attempts:
                del self._by_job[live.job.id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_attempt)

    def __len__(self) -> int:
        return len(self._by_attempt)

    def values(self) -> ValuesView[Live]:
        return self._by_attempt.values()

    def for_job(self, job_id: str) -> Live | None:
        """The job's live attempt (the earliest added if there are several), or ``None``."""
        attempts = self._by_job.get(job_id)
        return next(iter(attempts.values())) if attempts else None


@dataclass
class Counters:
    """Numbers the metrics endpoint and the benchmarks read."""

    admissions: int = 0
    event_reconnects: int = 0
    events_up: bool = False
    api_errors: int = 0
    polls: int = 0
    recorded_from_event: int = 0
    recorded_from_poll: int = 0


class Context:
    """Shared by the loops of one orchestrator."""

    def __init__(
        self,
        store: Store,
        backend: Backend,
        options: Options,
        scope: Scope,
        on_settled: Callable[[str, JobSnapshot | None], None] | None = None,
        on_outside_change: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.engine = backend.engine
        self.options = options
        self.scope = scope
        self.governor = Governor(options.max_concurrent)
        # each batch's images, pinned once (covey.images)
        self.pins = Pins(store, backend.engine, lambda: len(self.governor.nodes))
        self.watched: set[str] = set()  # nodes whose events covey.watcher follows now
        self.agent_nodes: set[str] = set()  # nodes whose agent (covey.agent) is heard now
        # batches with a cap of their own or paused: id -> (cap, paused), read from the store
        # by the submitter (covey throttle, pause, resume)
        self.steering: dict[str, tuple[int | None, bool]] = {}
        self.steered_at = -math.inf
        self.live = LiveTable()  # by attempt id
        self.work = Signal()  # the submitter should look for due jobs / free capacity
        self.new_work = True  # jobs were queued or a retry was decided: read the store again
        self.look = Signal()  # the tracker should list tasks now
        self.counters = Counters()
        self.on_settled = on_settled
        # another process committed to the store: jobs in scope it ended since the time given
        # (foreground orchestrators; a supervisor adopts instead, see covey.adoption)
        self.on_outside_change = on_outside_change
        # attempts being begun by the submitter: not in ``live`` yet, not to be adopted
        self.claimed: set[str] = set()
        self.nodes_at = 0.0
        send, receive = anyio.create_memory_object_stream[Live](max_buffer_size=100_000)
        self.to_reaper: MemoryObjectSendStream[Live] = send
        self.reaper_inbox: MemoryObjectReceiveStream[Live] = receive
        # the sharer's work (covey.sharer): outputs to share ahead, batches to clean up
        share, shared = anyio.create_memory_object_stream[Share | Cleanup](math.inf)
        self.to_sharer: MemoryObjectSendStream[Share | Cleanup] = share
        self.sharer_inbox: MemoryObjectReceiveStream[Share | Cleanup] = shared
        self.sharing = 0  # sharer items not done yet (a foreground run waits for them)
        self.shares_in_flight: Counter[str] = Counter()  # per batch (a reader waits for them)
        self.shares_unnoted: set[str] = set()  # batches with shares whose notes are deferred
        store.on_gate = self._gated

    def _gated(self, result: GateResult) -> None:
        """The pipeline gate released, skipped or fanned out jobs in one of our commits:
        released ones are admitted now (not at the next look at the queue); skipped and
        new ones are news for a foreground run waiting for its batch."""
        if result.queued or result.added:
            self.new_work = True
            self.work.set()
        if self.on_settled is not None:
            for job_id in (*result.skipped, *result.added):
                self.on_settled(job_id, None)
        for attempt_id, batch_id in result.outputs:
            self.sharing += 1
            self.shares_in_flight[batch_id] += 1
            self.to_sharer.send_nowait(Share(attempt_id, batch_id))
        for batch_id in result.finished:
            self.sharing += 1
            self.to_sharer.send_nowait(Cleanup(batch_id))

    def release(self, job_id: str) -> None:
        """Give a job's booking back to the governor and wake the submitter if it had one."""
        if self.governor.release(job_id):
            self.work.set()

    def live_for_job(self, job_id: str) -> Live | None:
        return self.live.for_job(job_id)

    def node_name(self, node_id: str | None) -> str | None:
        node = self.governor.node(node_id)
        return node.hostname if node else node_id

    async def refresh_nodes(self, force: bool = False) -> None:
        """Re-read nodes and foreign reservations at most every ``NODES_REFRESH`` seconds."""
        if not force and time.monotonic() - self.nodes_at < NODES_REFRESH:
            return
        ours = {live.attempt.id for live in self.live.values()}
        nodes, foreign = await self.backend.capacity(ours)
        self.governor.set_nodes(nodes, foreign)
        if self.options.max_concurrent is None:
            self.governor.max_concurrent = auto_concurrency(nodes)
        self.nodes_at = time.monotonic()
        self.work.set()
