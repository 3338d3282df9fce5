"""``covey schedule add|ls|rm|pause|resume``: the supervisor's schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from covey.cli.app import DbOpt, _db, app, execute

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
