"""The ``covey`` typer application and what every command shares: the global options
(``--db``, ``--debug``), the store path, and how an async command is run and its errors
become one line and an exit code."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import anyio
import typer

from covey.errors import CoveyError

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
