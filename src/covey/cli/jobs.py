"""The commands that run jobs: ``run`` (with the job flags, shared by ``submit``),
``submit``, ``batch`` and ``supervise``."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from covey import commands, foreground
from covey.cli.app import DbOpt, Mode, _db, app, execute
from covey.cli.options import (
    AgentOpt,
    AgentSocketOpt,
    EngineTimeoutOpt,
    NodeHostOpt,
    NoResolveOpt,
    PullTimeoutOpt,
    RegistryAuthOpt,
    UiTokenFileOpt,
    UiTokenOpt,
    options,
    ui_address,
)
from covey.client import Client, Jobs
from covey.errors import SpecError
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
    parse_secret,
    parse_size,
)
from covey.spec import JobSpec, Resources, RetryPolicy, validate_name

T = TypeVar("T")

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
        board = ui_address(ui, ui_token, ui_token_file) if ui is not None else None
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
