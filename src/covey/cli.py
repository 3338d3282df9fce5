"""The ``covey`` command line: thin typer commands over :mod:`covey.foreground` and
:mod:`covey.commands`. Verbs and flags follow ``docker run`` / ``docker service create``.

Exit codes follow ``docker run``: the job's own code, 124 for a deadline, 125 when covey or
the engine failed (also for bad flags: typer's usage errors are mapped from 2 to 125),
126/127 when the command could not be started, 130/143 after SIGINT/SIGTERM; and 125 from
``covey run`` whose job's output could not all be passed through.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import typer

from covey import commands, foreground
from covey.client import Client, Jobs
from covey.context import Options
from covey.errors import CoveyError, SpecError
from covey.flags import (
    parse_constraint,
    parse_cpus,
    parse_duration,
    parse_env,
    parse_env_file,
    parse_exit_codes,
    parse_image,
    parse_label,
    parse_mount,
    parse_node_hosts,
    parse_secret,
    parse_size,
)
from covey.spec import JobSpec, Resources, RetryPolicy, validate_name

T = TypeVar("T")

app = typer.Typer(
    name="covey",
    help="Run one-shot containers on Docker Swarm and bring every one of them home.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Mode(StrEnum):
    auto = "auto"
    swarm = "swarm"
    container = "container"


class State:
    db: Path | None = None
    debug: bool = False


DbOpt = Annotated[
    Path | None,
    typer.Option(
        "--db",
        envvar="COVEY_DB",
        help="The store (SQLite). Default: covey.db in the user data dir.",
    ),
]


@app.callback()
def main_options(
    db: DbOpt = None,
    debug: Annotated[bool, typer.Option("--debug", help="Log every transition to stderr.")] = False,
) -> None:
    """Run one-shot containers on Docker Swarm and bring every one of them home."""
    State.db = db
    State.debug = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not debug:
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def _db(local: Path | None) -> Path | None:
    return local or State.db


def execute(fn: Callable[[], Awaitable[int]]) -> None:
    """Run one async command; user-facing errors become one line and exit code 125."""
    try:
        code = anyio.run(fn)
    except CoveyError as exc:
        print(f"covey: {exc}", file=sys.stderr)
        code = exc.exit_code
    except BaseExceptionGroup as group:  # raised inside a task group: the same one line
        found = covey_error(group)
        if found is None:
            raise
        print(f"covey: {found}", file=sys.stderr)
        code = found.exit_code
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


def covey_error(exc: BaseException) -> CoveyError | None:
    """The first :class:`CoveyError` in ``exc`` or the groups it is wrapped in."""
    if isinstance(exc, CoveyError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = covey_error(inner)
            if found is not None:
                return found
    return None


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


# -- the job flags shared by `run` and `submit` ---------------------------------------------------


def run(
    image: Annotated[str, typer.Argument(help="The image to run.", show_default=False)],
    command: Annotated[list[str] | None, typer.Argument(help="Command and arguments.")] = None,
    env: Annotated[
        list[str], typer.Option("-e", "--env", help="KEY=VALUE, or KEY to copy it.")
    ] = [],  # noqa: B006
    env_file: Annotated[
        list[Path], typer.Option("--env-file", help="Read variables from a file.")
    ] = [],  # noqa: B006
    label: Annotated[list[str], typer.Option("-l", "--label", help="KEY=VALUE label.")] = [],  # noqa: B006
    mount: Annotated[
        list[str], typer.Option("--mount", help="type=bind,source=/a,target=/b[,readonly]")
    ] = [],  # noqa: B006
    network: Annotated[list[str], typer.Option("--network", help="Attach to a network.")] = [],  # noqa: B006
    secret: Annotated[
        list[str], typer.Option("--secret", help="Swarm secret: NAME or source=,target=.")
    ] = [],  # noqa: B006
    constraint: Annotated[
        list[str], typer.Option("--constraint", help="Placement: node.hostname==x")
    ] = [],  # noqa: B006
    reserve_cpu: Annotated[
        str | None, typer.Option("--reserve-cpu", help="CPUs to reserve (0.5).")
    ] = None,
    reserve_memory: Annotated[
        str | None, typer.Option("--reserve-memory", help="Memory to reserve (512M).")
    ] = None,
    limit_cpu: Annotated[str | None, typer.Option("--limit-cpu", help="CPU limit.")] = None,
    limit_memory: Annotated[
        str | None, typer.Option("--limit-memory", help="Memory limit.")
    ] = None,
    user: Annotated[
        str | None, typer.Option("-u", "--user", help="User (name|uid[:group]).")
    ] = None,
    workdir: Annotated[
        str | None, typer.Option("-w", "--workdir", help="Working directory.")
    ] = None,
    entrypoint: Annotated[
        str | None, typer.Option("--entrypoint", help="Override the entrypoint.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Job (and service) name.")] = None,
    timeout: Annotated[
        str | None, typer.Option("--timeout", help="Deadline (90, 5m, 1h30m); exit 124.")
    ] = None,
    pending_timeout: Annotated[
        str | None, typer.Option("--pending-timeout", help="Give up on a task never scheduled.")
    ] = None,
    stop_grace_period: Annotated[
        str | None, typer.Option("--stop-grace-period", help="Time before SIGKILL.")
    ] = None,
    retries: Annotated[int, typer.Option("--retries", help="Retries on failure (0: none).")] = 0,
    priority: Annotated[
        int, typer.Option("--priority", help="Higher first among jobs that could start (0).")
    ] = 0,
    retry_on_exit: Annotated[
        str | None, typer.Option("--retry-on-exit", help="Only these codes: 75,111")
    ] = None,
    detach: Annotated[
        bool, typer.Option("-d", "--detach", help="Print the job id and return.")
    ] = False,
    keep: Annotated[bool, typer.Option("--keep", help="Do not remove the service.")] = False,
    quiet: Annotated[
        bool, typer.Option("-q", "--quiet", help="Do not stream the job's logs.")
    ] = False,
    log_cap: Annotated[
        str | None,
        typer.Option("--log-cap", help="Bytes of logs kept per stream in the store (0: all)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    mode: Annotated[
        Mode, typer.Option("--mode", help="Swarm services or plain containers.")
    ] = Mode.auto,
    with_registry_auth: RegistryAuthOpt = False,
    no_resolve_image: NoResolveOpt = False,
    engine_timeout: EngineTimeoutOpt = None,
    pull_timeout: PullTimeoutOpt = None,
    node_host: NodeHostOpt = [],  # noqa: B006
    agent: AgentOpt = None,
    agent_socket: AgentSocketOpt = None,
    db: DbOpt = None,
) -> None:
    """Run one job, like `docker run`: stream its logs, exit with its exit code."""
    args = dict(locals())

    async def main() -> int:
        spec = spec_from_flags(args, file_hint="covey batch {}")
        opts = options(
            keep=keep,
            pending_timeout=pending_timeout,
            engine_timeout=engine_timeout,
            pull_timeout=pull_timeout,
            log_cap=log_cap,
            node_hosts=node_host,
            agent=agent,
            agent_socket=agent_socket,
        )
        async with Client(db=_db(db), mode=mode.value, options=opts) as client:
            if detach:
                print(await foreground.detach(client, spec, service_name=name))
                return 0
            return await foreground.run_one(
                client, spec, service_name=name, quiet=quiet, as_json=json_out
            )

    execute(main)


def spec_from_flags(a: dict[str, Any], *, file_hint: str) -> JobSpec:
    """Build a :class:`JobSpec` from ``run``'s flags; every problem names its flag.

    ``file_hint`` is the command to suggest when IMAGE is a batch file (see ``parse_image``).
    """
    environ = os.environ
    pairs: list[tuple[str, str]] = []
    for path in a["env_file"]:
        pairs += parse_env_file(path, environ)
    for item in a["env"]:
        pair = parse_env(item, environ)
        if pair is not None:
            pairs.append(pair)

    def opt(key: str, parse: Callable[..., T], what: str) -> T | None:
        return parse(a[key], what=what) if a[key] is not None else None

    retry = RetryPolicy(
        attempts=max(1, a["retries"] + 1),
        on_exit_codes=opt("retry_on_exit", parse_exit_codes, "--retry-on-exit"),
    )
    if a["retries"] < 0:
        raise SpecError("--retries: must be 0 or more")
    if a["name"] is not None:
        validate_name(a["name"], what="--name")
    return JobSpec(
        image=parse_image(a["image"], file_hint=file_hint),
        command=tuple(a["command"] or ()),
        entrypoint=(a["entrypoint"],) if a["entrypoint"] else None,
        env=tuple(pairs),
        labels=tuple(parse_label(x) for x in a["label"]),
        user=a["user"],
        workdir=a["workdir"],
        networks=tuple(a["network"]),
        secrets=tuple(parse_secret(x) for x in a["secret"]),
        mounts=tuple(parse_mount(x) for x in a["mount"]),
        constraints=tuple(parse_constraint(x) for x in a["constraint"]),
        resources=Resources(
            reserve_nano_cpus=opt("reserve_cpu", parse_cpus, "--reserve-cpu") or 0,
            reserve_memory=opt("reserve_memory", parse_size, "--reserve-memory") or 0,
            limit_nano_cpus=opt("limit_cpu", parse_cpus, "--limit-cpu") or 0,
            limit_memory=opt("limit_memory", parse_size, "--limit-memory") or 0,
        ),
        name=a["name"],
        timeout=opt("timeout", parse_duration, "--timeout"),
        pending_timeout=opt("pending_timeout", parse_duration, "--pending-timeout"),
        stop_grace_period=opt("stop_grace_period", parse_duration, "--stop-grace-period"),
        retry=retry,
        registry_auth=a["with_registry_auth"],
        resolve_image=not a["no_resolve_image"],
        priority=a["priority"],
    )


app.command(
    "run",
    context_settings={"allow_interspersed_args": False},
)(run)


# -- submit: run's job flags, queued for `covey supervise` ---------------------------------------

_SUBMIT_ONLY = {
    "detach",
    "keep",
    "quiet",
    "log_cap",
    "json_out",
    "mode",
    "engine_timeout",
    "pull_timeout",
    "node_host",
    "agent",
    "agent_socket",
    "db",
}


def submit(**kw: Any) -> None:
    """Queue jobs for `covey supervise` (run's flags, or --file) and print their ids."""

    async def main() -> int:
        file: Path | None = kw.pop("file")
        key: str | None = kw.pop("idempotency_key")
        as_json: bool = kw.pop("json_out")
        db: Path | None = kw.pop("db")
        if file is not None:
            if kw["image"]:
                raise SpecError("give either --file or IMAGE, not both")
            from covey.batchfile import load_batch

            specs: Jobs = load_batch(file)
        elif kw["image"]:
            specs = [spec_from_flags(kw, file_hint="covey submit -f {}")]
        else:
            raise SpecError("nothing to submit: give IMAGE [COMMAND...] or --file FILE")
        return await commands.submit(
            _db(db), specs, key=key, as_json=as_json, name=file.name if file else None
        )

    execute(main)


def _submit_signature() -> inspect.Signature:
    # eval_str: this module's annotations are strings (PEP 563); typer cannot resolve them
    # from a hand-made __signature__, so hand it the evaluated ones.
    run_params = inspect.signature(run, eval_str=True).parameters
    params = [p for n, p in run_params.items() if n not in _SUBMIT_ONLY]
    image = params[0].replace(
        annotation=Annotated[str | None, typer.Argument(help="The image to run.")], default=None
    )
    params[0] = image
    extra = [
        inspect.Parameter(
            "file",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Path | None, typer.Option("-f", "--file", help="A batch file instead of IMAGE.")
            ],
        ),
        inspect.Parameter(
            "idempotency_key",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                str | None,
                typer.Option("--idempotency-key", help="Same key: same batch, not a second one."),
            ],
        ),
        inspect.Parameter(
            "json_out",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[bool, typer.Option("--json", help="Print {batch, jobs} as JSON.")],
        ),
        inspect.Parameter(
            "db",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=DbOpt,
        ),
    ]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params] + extra
    return inspect.Signature(params)


submit.__signature__ = _submit_signature()  # type: ignore[attr-defined]
app.command("submit", context_settings={"allow_interspersed_args": False})(submit)


# -- batch and supervise --------------------------------------------------------------------------


@app.command("batch")
def batch(
    file: Annotated[Path, typer.Argument(help="The batch file (YAML).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    max_concurrent: Annotated[
        int | None, typer.Option("--max-concurrent", help="Cap on jobs at once.")
    ] = None,
    keep_failed: Annotated[
        str | None,
        typer.Option("--keep-failed", help="Keep failed services (for prune after DURATION)."),
    ] = None,
    log_cap: Annotated[
        str | None, typer.Option("--log-cap", help="Bytes of logs kept per stream and job.")
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    mode: Annotated[
        Mode, typer.Option("--mode", help="Swarm services or plain containers.")
    ] = Mode.auto,
    with_registry_auth: RegistryAuthOpt = False,
    no_resolve_image: NoResolveOpt = False,
    priority: Annotated[
        int | None,
        typer.Option("--priority", help="Every job's priority (the file's otherwise)."),
    ] = None,
    engine_timeout: EngineTimeoutOpt = None,
    pull_timeout: PullTimeoutOpt = None,
    node_host: NodeHostOpt = [],  # noqa: B006
    agent: AgentOpt = None,
    agent_socket: AgentSocketOpt = None,
    db: DbOpt = None,
) -> None:
    """Run every job of a batch file to its end; exit 0 only if all succeeded."""

    async def main() -> int:
        from covey.batchfile import load_batch

        specs = load_batch(file)
        changes: dict[str, bool | int] = {}
        if priority is not None:
            changes["priority"] = priority
        if with_registry_auth:
            changes["registry_auth"] = True
        if no_resolve_image:
            changes["resolve_image"] = False
        if changes:
            specs = specs.map_specs(lambda spec: spec.with_changes(**changes))
        opts = options(
            max_concurrent=max_concurrent,
            keep_failed=keep_failed,
            log_cap=log_cap,
            engine_timeout=engine_timeout,
            pull_timeout=pull_timeout,
            node_hosts=node_host,
            agent=agent,
            agent_socket=agent_socket,
        )
        async with Client(db=_db(db), mode=mode.value, options=opts) as client:
            return await foreground.run_batch(
                client, specs, name=file.name, as_json=json_out, progress=not no_progress
            )

    execute(main)


@app.command("supervise")
def supervise(
    metrics_addr: Annotated[
        str | None,
        typer.Option("--metrics-addr", help="Serve Prometheus metrics on [HOST:]PORT (localhost)."),
    ] = None,
    max_concurrent: Annotated[
        int | None, typer.Option("--max-concurrent", help="Cap on jobs at once.")
    ] = None,
    keep_failed: Annotated[
        str | None, typer.Option("--keep-failed", help="Keep failed services for inspection.")
    ] = None,
    log_cap: Annotated[
        str | None, typer.Option("--log-cap", help="Bytes of logs kept per stream and job.")
    ] = None,
    mode: Annotated[
        Mode, typer.Option("--mode", help="Swarm services or plain containers.")
    ] = Mode.auto,
    standby: Annotated[
        bool,
        typer.Option(
            "--standby",
            help="If another supervisor runs on this store, wait and take over when it is gone.",
        ),
    ] = False,
    retain: Annotated[
        str | None,
        typer.Option(
            "--retain",
            help="Delete jobs that ended longer ago than this (e.g. 30d), hourly, with their logs.",
        ),
    ] = None,
    engine_timeout: EngineTimeoutOpt = None,
    pull_timeout: PullTimeoutOpt = None,
    node_host: NodeHostOpt = [],  # noqa: B006
    agent: AgentOpt = None,
    agent_socket: AgentSocketOpt = None,
    ui: Annotated[
        str | None,
        typer.Option(
            "--ui", help="Serve the web dashboard on [HOST:]PORT too (localhost unless a host)."
        ),
    ] = None,
    ui_token: UiTokenOpt = None,
    ui_token_file: UiTokenFileOpt = None,
    db: DbOpt = None,
) -> None:
    """Run the store's queue forever: adopt what is in flight, then admit, track, reap."""

    async def main() -> int:
        opts = options(
            max_concurrent=max_concurrent,
            keep_failed=keep_failed,
            log_cap=log_cap,
            engine_timeout=engine_timeout,
            pull_timeout=pull_timeout,
            node_hosts=node_host,
            agent=agent,
            agent_socket=agent_socket,
        )
        opts.supervise = True
        if retain is not None:
            opts.retain = parse_duration(retain, what="--retain")
        board = _ui_address(ui, ui_token, ui_token_file) if ui is not None else None
        async with Client(db=_db(db), mode=mode.value, options=opts) as client:
            if board is None:
                return await foreground.supervise(
                    client, metrics_addr=metrics_addr, standby=standby
                )
            from covey import dashboard

            address, token = board
            return await dashboard.beside(
                lambda: foreground.supervise(client, metrics_addr=metrics_addr, standby=standby),
                _db(db),
                address,
                token=token,
                mode=mode.value,
            )

    execute(main)


# -- the web dashboard ---------------------------------------------------------------------------


def _ui_address(
    addr: str, token: str | None, token_file: Path | None, what: str = "--ui"
) -> tuple[Any, str | None]:
    """Where the dashboard listens and its token; refused (exit 125) before anything
    starts when it would listen beyond loopback without one."""
    from covey.dashboard import parse_address, read_token, require_token

    address = parse_address(addr, what=what)
    secret = read_token(token, token_file)
    require_token(address, secret, what=what)
    return address, secret


@app.command("ui")
def ui(
    addr: Annotated[
        str,
        typer.Argument(
            help="[HOST:]PORT to listen on: 127.0.0.1 unless a host is given ([::1]:PORT for"
            " IPv6; port 0: any free one).",
            show_default=False,
        ),
    ],
    ui_token: UiTokenOpt = None,
    ui_token_file: UiTokenFileOpt = None,
    mode: Annotated[
        Mode, typer.Option("--mode", help="The engine's kind, for live logs and cancels.")
    ] = Mode.auto,
    db: DbOpt = None,
) -> None:
    """Serve the web dashboard of a store: batches, jobs, logs, and cancel, retry, throttle,
    pause (no supervisor needs to run)."""

    async def main() -> int:
        from covey import dashboard

        address, token = _ui_address(addr, ui_token, ui_token_file, what="ui")
        return await dashboard.until_signal(_db(db), address, token=token, mode=mode.value)

    execute(main)


# -- reading and steering the store ---------------------------------------------------------------


@app.command("ls")
def ls(
    state: Annotated[list[str], typer.Option("--state", help="Only jobs in this state.")] = [],  # noqa: B006
    batch_id: Annotated[str | None, typer.Option("--batch", help="Only this batch.")] = None,
    label: Annotated[
        list[str], typer.Option("-l", "--label", help="Only jobs with KEY=VALUE.")
    ] = [],  # noqa: B006
    json_out: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
    limit: Annotated[int, typer.Option("-n", "--limit", help="At most this many (newest).")] = 1000,
    db: DbOpt = None,
) -> None:
    """List jobs."""
    execute(lambda: commands.ls(_db(db), state, batch_id, label, json_out, limit))


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="Job or batch id (or job name).")],
    json_out: Annotated[bool, typer.Option("--json", help="JSON.")] = False,
    db: DbOpt = None,
) -> None:
    """Show a job (attempts, nodes, why each ended) or a batch."""
    execute(lambda: commands.show(_db(db), ref, json_out))


@app.command("logs")
def logs(
    ref: Annotated[str, typer.Argument(help="Job id (or name).")],
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Follow while it runs.")] = False,
    attempt: Annotated[
        int | None, typer.Option("--attempt", help="Attempt number (default: last).")
    ] = None,
    db: DbOpt = None,
) -> None:
    """Print a job's stdout and stderr from the store (or follow it on the engine)."""
    execute(lambda: commands.logs(_db(db), ref, follow, attempt))


@app.command("cancel")
def cancel(
    refs: Annotated[list[str], typer.Argument(help="Job or batch ids.")],
    db: DbOpt = None,
) -> None:
    """Cancel jobs: queued ones never start, running ones are removed."""
    execute(lambda: commands.cancel(_db(db), refs))


schedule_app = typer.Typer(
    help="Submit a batch file at the fire times of a cron expression (covey supervise fires).",
    no_args_is_help=True,
)
app.add_typer(schedule_app, name="schedule")


@schedule_app.command("add")
def schedule_add(
    name: Annotated[str, typer.Argument(help="The schedule's name.")],
    cron: Annotated[str, typer.Option("--cron", help='Cron expression, e.g. "0 2 * * *".')],
    file: Annotated[Path, typer.Option("-f", "--file", help="The batch file to submit.")],
    tz: Annotated[str, typer.Option("--tz", help="Time zone of the expression.")] = "UTC",
    db: DbOpt = None,
) -> None:
    """Add a schedule: `covey supervise` submits FILE at every fire time, once."""
    from covey import schedules

    path = file.resolve()  # read again at every fire time, from wherever the supervisor runs
    execute(lambda: schedules.add(_db(db), name, cron, tz, path))


@schedule_app.command("ls")
def schedule_ls(
    json_out: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
    db: DbOpt = None,
) -> None:
    """List schedules: next and last fire times, the last batch submitted."""
    from covey import schedules

    execute(lambda: schedules.listing(_db(db), json_out))


@schedule_app.command("rm")
def schedule_rm(
    name: Annotated[str, typer.Argument(help="The schedule.")], db: DbOpt = None
) -> None:
    """Remove a schedule (batches it submitted stay)."""
    from covey import schedules

    execute(lambda: schedules.remove(_db(db), name))


@schedule_app.command("pause")
def schedule_pause(
    name: Annotated[str, typer.Argument(help="The schedule.")], db: DbOpt = None
) -> None:
    """Stop firing a schedule until it is resumed."""
    from covey import schedules

    execute(lambda: schedules.pause(_db(db), name, True))


@schedule_app.command("resume")
def schedule_resume(
    name: Annotated[str, typer.Argument(help="The schedule.")], db: DbOpt = None
) -> None:
    """Fire a paused schedule again, from its next fire time after now."""
    from covey import schedules

    execute(lambda: schedules.pause(_db(db), name, False))


@app.command("timeline")
def timeline(
    ref: Annotated[str, typer.Argument(help="Batch id, a job of it, or the batch's name.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="The picture: .html (default timeline-BATCH.html here), .png or .svg.",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print {batch, path, attempts, jobs, bytes} as JSON.")
    ] = False,
    db: DbOpt = None,
) -> None:
    """Draw where a batch's time went: a lane per node, a bar per attempt."""
    from covey import timeline as timeline_cmd

    execute(lambda: timeline_cmd.command(_db(db), ref, output, json_out))


@app.command("throttle")
def throttle(
    ref: Annotated[str, typer.Argument(help="The batch (its id, or a unique prefix).")],
    cap: Annotated[
        str, typer.Argument(help="At most this many of its jobs at once ('none': no own cap).")
    ],
    db: DbOpt = None,
) -> None:
    """Change a running batch's cap on jobs at once (effective within a second)."""

    async def main() -> int:
        return await commands.throttle(_db(db), ref, commands.parse_cap(cap))

    execute(main)


@app.command("pause")
def pause(
    ref: Annotated[str, typer.Argument(help="The batch.")],
    db: DbOpt = None,
) -> None:
    """Stop admitting a batch's jobs; those running go on (covey resume undoes it)."""
    execute(lambda: commands.pause(_db(db), ref, True))


@app.command("resume")
def resume(
    ref: Annotated[str, typer.Argument(help="The batch.")],
    db: DbOpt = None,
) -> None:
    """Admit a paused batch's jobs again."""
    execute(lambda: commands.pause(_db(db), ref, False))


@app.command("retry")
def retry(
    refs: Annotated[list[str], typer.Argument(help="Job or batch ids.")],
    db: DbOpt = None,
) -> None:
    """Queue ended, unsuccessful jobs again as new attempts (for `covey supervise`)."""
    execute(lambda: commands.retry(_db(db), refs))


@app.command("wait")
def wait(
    refs: Annotated[list[str], typer.Argument(help="Job or batch ids.")],
    timeout: Annotated[
        str | None, typer.Option("--timeout", help="Give up after this long (exit 124).")
    ] = None,
    db: DbOpt = None,
) -> None:
    """Wait until jobs ended; exit 0 only if every one succeeded."""
    limit = parse_duration(timeout, what="--timeout") if timeout else None
    execute(lambda: commands.wait(_db(db), refs, limit))


@app.command("prune")
def prune(
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="Only what ended this long ago (e.g. 30d).")
    ] = None,
    jobs: Annotated[
        bool,
        typer.Option(
            "--jobs",
            help="Also delete ended jobs (attempts, history, logs) from the store; needs"
            " --older-than.",
        ),
    ] = False,
    db: DbOpt = None,
) -> None:
    """Remove what covey left behind: this store's services/containers that no job needs
    any more (never others), after recording the end of jobs whose covey process is gone;
    with --jobs, old jobs from the store too."""
    if jobs and older_than is None:
        raise SpecError("--jobs: give --older-than too (e.g. --older-than 30d)")
    age = parse_duration(older_than, what="--older-than") if older_than else 0.0
    execute(lambda: commands.prune(_db(db), age, jobs=jobs))


def main() -> None:
    """Entry point: usage errors exit 125, like docker's."""
    try:
        rv = app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("covey: aborted", file=sys.stderr)
        sys.exit(130)
    except CoveyError as exc:
        print(f"covey: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        show = getattr(exc, "show", None)
        if callable(show):
            show()
            sys.exit(125)
        raise
    sys.exit(rv if isinstance(rv, int) else 0)
