"""The commands that read and steer the store: ``ls``, ``show``, ``logs``, ``timeline``,
``cancel``, ``retry``, ``wait``, ``prune``, ``throttle``, ``pause``, ``resume``, and the web
dashboard ``ui``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from covey import commands
from covey.cli.app import DbOpt, Mode, _db, app, execute
from covey.cli.options import UiTokenFileOpt, UiTokenOpt, ui_address
from covey.errors import SpecError
from covey.flags import (
    parse_duration,
)

# -- the web dashboard ---------------------------------------------------------------------------


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

        address, token = ui_address(addr, ui_token, ui_token_file, what="ui")
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
