"""The agent: every node's container events, through the manager, with nothing to reach.

Where the nodes' engines cannot be reached from covey (the usual case), covey deploys a
small agent as a *global* service (``--agent IMAGE``: one task per node, the node's docker
socket bind-mounted; the Portainer-agent pattern). The agent (``covey/agent_main.py``, the
standard library only, delivered as a swarm config, so any image with ``python3`` runs it)
prints the node's covey container events as JSON lines, and a heartbeat every second. covey
follows the agent service's logs through the manager (one stream for all nodes), and applies
each event with the manager's own rules (covey.tracker.on_event).

The task list stays the truth and polling never stops. A node whose agent says nothing for
``SILENT_AFTER`` seconds (its dockerd died, the node was cut off, the agent crashed: its log
lines stop with it) is reported and listed at once; when an agent says hello again (swarm
restarted it) the tasks are listed again, for the events it could not see. The service and
its config carry this store's label: ``covey prune`` removes them (covey leaves the agent
running between runs, so that the next run need not wait for it on every node).
"""

from __future__ import annotations

import hashlib
import json
import time
from importlib import resources
from typing import Any

import anyio
from anyio.abc import TaskStatus

from covey.backend import AGENT_LABEL, MANAGED_LABEL, STORE_LABEL
from covey.context import Context, log
from covey.engine import Conflict, NotFound
from covey.errors import EngineError
from covey.records import EngineEvent
from covey.retrying import Backoff
from covey.tracker import on_event
from covey.watcher import own_node

IMAGE_LABEL = "covey.agent.image"
BEAT = 1.0  # the agent's heartbeat period (seconds)
SILENT_AFTER = 4.0  # no line from a node's agent for this long: that node is not followed
TARGET = "/covey-agent.py"
SOCKET_TARGET = "/var/run/docker.sock"
MEMORY_LIMIT = 64 * 1024 * 1024


def program() -> bytes:
    """The agent's source, as this covey ships it."""
    return resources.files("covey").joinpath("agent_main.py").read_bytes()


def service_name(store_id: str) -> str:
    return f"covey-agent-{store_id}"


def config_name(store_id: str, data: bytes) -> str:
    """Configs cannot change: a new agent version is a new config (and a new service)."""
    return f"covey-agent-{store_id}-{hashlib.sha256(data).hexdigest()[:12]}"


def service_body(store_id: str, image: str, socket: str, config_id: str, config: str) -> Any:
    """A global service running the agent on every node. The container has no covey labels:
    its own events are not a job's."""
    labels = {
        MANAGED_LABEL: "true",
        STORE_LABEL: store_id,
        AGENT_LABEL: config,
        IMAGE_LABEL: image,
    }
    return {
        "Name": service_name(store_id),
        "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": image,
                "Command": ["python3", TARGET],
                "Env": [f"COVEY_AGENT_STORE={store_id}", f"COVEY_AGENT_BEAT={BEAT:g}"],
                "Mounts": [{"Type": "bind", "Source": socket, "Target": SOCKET_TARGET}],
                "Configs": [
                    {
                        "File": {"Name": TARGET, "UID": "0", "GID": "0", "Mode": 0o444},
                        "ConfigID": config_id,
                        "ConfigName": config,
                    }
                ],
                "StopGracePeriod": 2_000_000_000,
            },
            "Resources": {"Limits": {"MemoryBytes": MEMORY_LIMIT}},
            "RestartPolicy": {"Condition": "any", "Delay": 1_000_000_000},
        },
        "Mode": {"Global": {}},
    }


async def ensure(ctx: Context) -> str:
    """The agent service of this store, made if missing (or of another version or image);
    its id. Two covey processes on one store share it."""
    engine, store_id = ctx.engine, ctx.store.id
    image, socket = ctx.options.agent_image, ctx.options.agent_socket
    assert image is not None
    data = program()
    config = config_name(store_id, data)
    try:
        found = await engine.service(service_name(store_id))
    except NotFound:
        found = None
    if found is not None:
        if found.labels.get(AGENT_LABEL) == config and found.labels.get(IMAGE_LABEL) == image:
            return found.id
        log.info("replacing the agent service %s (another version or image)", found.name)
        await engine.remove_service(found.id)
    labels = {MANAGED_LABEL: "true", STORE_LABEL: store_id, AGENT_LABEL: config}
    try:
        config_id = await engine.create_config(config, data, labels)
    except Conflict:
        config_id = (await engine.config(config)).id
    body = service_body(store_id, image, socket, config_id, config)
    try:
        return await engine.create_service(body)
    except Conflict:  # another covey process of this store made it just now
        return (await engine.service(service_name(store_id))).id


async def run(ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Deploy the agent and follow it for as long as covey runs (``--agent IMAGE``)."""
    own = await own_node(ctx, "--agent", ctx.options.agent_image is not None, task_status)
    if own is False:
        return
    backoff = Backoff(first=0.5, cap=10.0)
    warned = False
    while True:
        try:
            ident = await ensure(ctx)
            await Follower(ctx, own or None, backoff).follow(ident)
        except EngineError as exc:
            if not warned:
                log.warning("the covey agent: %s; jobs on other nodes are found by polling", exc)
                warned = True
        ctx.agent_nodes.clear()
        ctx.look.set()
        await backoff.sleep()


class Follower:
    """The agent service's log stream: lines from every node's agent, as they come."""

    def __init__(self, ctx: Context, own: str | None, backoff: Backoff) -> None:
        self.ctx = ctx
        self.own = own
        self.backoff = backoff
        self.heard: dict[str, float] = {}  # node -> monotonic time of its last line
        self.killed: dict[str, set[str]] = {}  # node -> containers sent a signal there

    async def follow(self, ident: str) -> None:
        """Until the stream ends; what was logged before now is not read again (a replay
        of old events would name attempts long settled)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watchdog)
            buffer = b""
            stream = self.ctx.engine.follow_service_logs(ident, since=time.time() - 1.0)
            async for kind, data in stream:
                if kind != 1:  # the agent's stderr: a traceback, say
                    log.info("covey agent: %s", data.decode(errors="replace").rstrip())
                    continue
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    await self._line(line)
            tg.cancel_scope.cancel()
        raise EngineError("its log stream ended")

    async def _line(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
            node = str(msg["node"])
            kind = msg["k"]
        except (ValueError, KeyError, TypeError):
            return  # not one of the agent's lines
        self.heard[node] = time.monotonic()
        if node == self.own:
            return  # the manager's own stream has these
        if kind in ("hello", "beat") and node not in self.ctx.agent_nodes:
            self.ctx.agent_nodes.add(node)
            self.ctx.look.set()  # what it could not report before: list now
            if kind == "hello":
                self.backoff.reset()
        elif kind in ("down", "bye"):
            self.ctx.agent_nodes.discard(node)
            self.ctx.look.set()
        elif kind == "ev":
            event = EngineEvent(
                type="container",
                action=str(msg.get("action", "")),
                actor_id=str(msg.get("id", "")),
                attributes={str(k): str(v) for k, v in (msg.get("attrs") or {}).items()},
                time_nano=int(msg.get("t") or 0),
            )
            await on_event(self.ctx, event, self.killed.setdefault(node, set()), local=False)

    async def _watchdog(self) -> None:
        """A node whose agent fell silent is no longer followed: say so, list now."""
        while True:
            await anyio.sleep(1.0)
            now = time.monotonic()
            for node in list(self.ctx.agent_nodes):
                if now - self.heard.get(node, now) > SILENT_AFTER:
                    self.ctx.agent_nodes.discard(node)
                    log.info("the covey agent on node %s fell silent: polling", node)
                    self.ctx.look.set()
