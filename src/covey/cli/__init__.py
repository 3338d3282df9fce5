"""The ``covey`` command line: thin typer commands over :mod:`covey.foreground` and
:mod:`covey.commands`. Verbs and flags follow ``docker run`` / ``docker service create``.

Exit codes follow ``docker run``: the job's own code, 124 for a deadline, 125 when covey or
the engine failed (also for bad flags: typer's usage errors are mapped from 2 to 125),
126/127 when the command could not be started, 130/143 after SIGINT/SIGTERM; and 125 from
``covey run`` whose job's output could not all be passed through."""

from __future__ import annotations

import sys

import typer

from covey.cli import jobs, schedule, store  # noqa: F401  (each registers its commands)
from covey.cli.app import app, covey_error, execute
from covey.cli.jobs import run, spec_from_flags
from covey.cli.options import options
from covey.errors import CoveyError

__all__ = ["app", "covey_error", "execute", "main", "options", "run", "spec_from_flags"]


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
