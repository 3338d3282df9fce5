"""The orchestrator's flags (``--max-concurrent``, timeouts, ``--node-host``, ``--agent``,
the dashboard's token ...) as typer option types, and :func:`options`, which turns them into
:class:`covey.context.Options`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from covey.context import Options
from covey.errors import SpecError
from covey.flags import (
    parse_duration,
    parse_image,
    parse_node_hosts,
    parse_size,
)


def options(
    *,
    max_concurrent: int | None = None,
    keep: bool = False,
    keep_failed: str | None = None,
    log_cap: str | None = None,
    pending_timeout: str | None = None,
    engine_timeout: str | None = None,
    pull_timeout: str | None = None,
    node_hosts: Sequence[str] = (),
    agent: str | None = None,
    agent_socket: str | None = None,
) -> Options:
    opts = Options(max_concurrent=max_concurrent, keep=keep)
    opts.node_hosts = parse_node_hosts(node_hosts, os.environ)
    agent = agent or os.environ.get("COVEY_AGENT_IMAGE") or None
    if agent is not None:
        opts.agent_image = parse_image(agent, what="--agent")
    agent_socket = agent_socket or os.environ.get("COVEY_AGENT_SOCKET") or None
    if agent_socket is not None:
        if not agent_socket.startswith("/"):
            raise SpecError(
                f"--agent-socket: {agent_socket!r} is not an absolute path (the docker socket"
                " on every node; {{.Node.Hostname}} may be part of it)"
            )
        opts.agent_socket = agent_socket
    if max_concurrent is not None and max_concurrent < 1:
        raise SpecError("--max-concurrent: must be at least 1")
    if keep_failed is not None:
        opts.keep_failed = parse_duration(keep_failed, what="--keep-failed")
    if log_cap is not None:
        opts.log_cap = parse_size(log_cap, what="--log-cap")
    if pending_timeout is not None:
        opts.pending_timeout = parse_duration(
            pending_timeout, what="--pending-timeout", allow_zero=False
        )
    if engine_timeout is not None:
        opts.engine_timeout = parse_duration(engine_timeout, what="--engine-timeout")
    if pull_timeout is not None:
        opts.pull_timeout = parse_duration(pull_timeout, what="--pull-timeout", allow_zero=False)
    return opts


EngineTimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--engine-timeout",
        help="How long to retry a create or removal while the engine is unavailable (2m).",
    ),
]
NodeHostOpt = Annotated[
    list[str],
    typer.Option(
        "--node-host",
        help="Another node's engine (unix://, tcp://): follow its events (also COVEY_NODE_HOSTS).",
    ),
]
AgentOpt = Annotated[
    str | None,
    typer.Option(
        "--agent",
        help="Run covey's agent (this image, with python3) on every node for their events"
        " (also COVEY_AGENT_IMAGE).",
    ),
]
AgentSocketOpt = Annotated[
    str | None,
    typer.Option(
        "--agent-socket",
        help="The docker socket on each node, for --agent (/var/run/docker.sock).",
    ),
]
RegistryAuthOpt = Annotated[
    bool,
    typer.Option(
        "--with-registry-auth",
        help="Send the docker CLI's credentials for the image's registry, so any node can pull.",
    ),
]
NoResolveOpt = Annotated[
    bool,
    typer.Option("--no-resolve-image", help="Do not pin the image's tag to one digest."),
]
PullTimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--pull-timeout",
        help="Give up on a job whose node is still pulling its image after this long (15m).",
    ),
]
UiTokenOpt = Annotated[
    str | None,
    typer.Option(
        "--ui-token",
        help="The dashboard's token (needed when it listens beyond localhost; also"
        " COVEY_UI_TOKEN).",
    ),
]
UiTokenFileOpt = Annotated[
    Path | None,
    typer.Option("--ui-token-file", help="Read the dashboard's token from this file."),
]


def ui_address(
    addr: str, token: str | None, token_file: Path | None, what: str = "--ui"
) -> tuple[Any, str | None]:
    """Where the dashboard listens and its token; refused (exit 125) before anything
    starts when it would listen beyond loopback without one."""
    from covey.dashboard import parse_address, read_token, require_token

    address = parse_address(addr, what=what)
    secret = read_token(token, token_file)
    require_token(address, secret, what=what)
    return address, secret
