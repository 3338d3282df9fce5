"""cli.options: the orchestrator's knobs from the flags of run, batch and supervise."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from covey.cli import app, options
from covey.errors import SpecError


def test_pull_timeout_reaches_the_orchestrator() -> None:
    assert options().pull_timeout == 900.0  # 15 minutes unless asked
    assert options(pull_timeout="5m").pull_timeout == 300.0
    assert options(pull_timeout="90").pull_timeout == 90.0


@pytest.mark.parametrize("bad", ["0", "soon", "-1"])
def test_a_bad_pull_timeout_names_the_flag(bad: str) -> None:
    with pytest.raises(SpecError, match="--pull-timeout"):
        options(pull_timeout=bad)


WHERE = [("run", True), ("batch", True), ("supervise", True), ("submit", False)]


@pytest.mark.parametrize(("command", "has"), WHERE)
def test_pull_timeout_is_a_flag_where_jobs_run(command: str, has: bool) -> None:
    """`submit` only queues: the supervisor's flag decides for it."""
    shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    assert ("--pull-timeout" in shown) is has
