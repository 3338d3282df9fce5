"""The watcher: container events of the swarm's other nodes, where the operator says their
engines can be reached (``--node-host``, ``COVEY_NODE_HOSTS``).

A manager's event stream carries only its own node's containers: a job on a worker ends
unseen until a task listing shows it (measured: p50 0.9-2.2 s after its exit). Each node
engine named here is followed like the manager's stream, with the same rules (a zero exit
nobody signalled is recorded at once; anything else wakes a listing), so a job's end is
recorded about as fast on every node as on the manager, and the manager is asked nothing
more: the requests go to the nodes.

The task list stays the truth and polling never stops. A node engine that cannot be
reached, drops its stream, or stops answering its ping (a partition leaves a TCP stream
open and silent) only costs the speed: its jobs are found by the listings, as without
a watcher, while the watcher reconnects with backoff.
"""

from __future__ import annotations

from typing import Literal

import anyio
from anyio.abc import TaskStatus

from covey.context import Context, log
from covey.engine import Engine
from covey.errors import EngineError
from covey.retrying import Backoff
from covey.tracker import on_event

PING_INTERVAL = 5.0  # a silent stream is told from a quiet one by a ping this often
PING_TIMEOUT = 3.0


class Silent(EngineError):
    """The node engine stopped answering while its event stream stayed open."""


async def run(ctx: Context, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Follow every node engine of ``--node-host`` until cancelled."""
    hosts = ctx.options.node_hosts
    own = await own_node(ctx, "--node-host", bool(hosts), task_status)
    if own is False:
        return
    async with anyio.create_task_group() as tg:
        for host in hosts:
            tg.start_soon(_follow, ctx, host, own)


async def own_node(
    ctx: Context, flag: str, asked: bool, task_status: TaskStatus[None]
) -> str | Literal[False] | None:
    """Started; the node id of the engine covey talks to (whose events its own stream has
    already), ``None`` if unknown, or ``False`` when there is nothing to follow."""
    task_status.started()
    if not asked or ctx.backend.mode != "swarm":
        if asked:
            log.warning("%s is for swarm mode: ignored in container mode", flag)
        return False
    try:
        return (await ctx.engine.info()).node_id
    except EngineError:
        return None  # its own events, if followed this way too, are applied twice: harmless


async def _follow(ctx: Context, host: str, own: str | None) -> None:
    """One node engine's events, reconnecting with backoff for as long as covey runs."""
    backoff = Backoff(first=0.5, cap=10.0)
    warned = False
    while True:
        node: str | None = None
        try:
            async with Engine(host) as engine:
                info = await engine.info()
                node = info.node_id
                if node is not None and node == own:
                    log.info("--node-host %s is the engine covey talks to: followed already", host)
                    return
                if node is None:
                    log.warning("--node-host %s is not a node of a swarm: not followed", host)
                    return
                ctx.watched.add(node)
                log.info("following the events of node %s (%s)", info.name, host)
                warned = False
                await _stream(ctx, engine, backoff)
        except EngineError as exc:
            if not warned:  # once per outage, not once per retry
                log.warning("node engine %s: %s; its jobs are found by polling", host, exc)
                warned = True
        finally:
            if node is not None:
                ctx.watched.discard(node)
        ctx.look.set()  # what happened there while it was not followed: list now
        await backoff.sleep()


async def _stream(ctx: Context, engine: Engine, backoff: Backoff) -> None:
    """Apply the node's events until its stream ends or the engine stops answering."""
    killed: set[str] = set()

    async def pinged() -> None:
        while True:
            await anyio.sleep(PING_INTERVAL)
            try:
                with anyio.fail_after(PING_TIMEOUT):
                    await engine.ping(timeout=PING_TIMEOUT)
            except (TimeoutError, EngineError):
                raise Silent(f"no answer to a ping within {PING_TIMEOUT:g}s") from None

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pinged)
            async for event in engine.events(ctx.backend.event_filters()):
                backoff.reset()
                await on_event(ctx, event, killed, local=False)
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # anyio wraps what the stream or the ping raised
        raise _engine_error(group) or group from None


def _engine_error(group: BaseExceptionGroup[BaseException]) -> EngineError | None:
    for exc in group.exceptions:
        if isinstance(exc, EngineError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _engine_error(exc)
            if found is not None:
                return found
    return None
