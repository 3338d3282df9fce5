"""cli.options: the orchestrator's knobs from the flags of run, batch and supervise."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from covey.cli import app, options
from covey.errors import SpecError
from covey.flags import parse_node_hosts
from covey.spec import JobSpec


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


def test_node_hosts_come_from_flags_and_the_environment() -> None:
    env = {"COVEY_NODE_HOSTS": "unix:///a.sock, tcp://w2:2376 unix:///a.sock"}
    hosts = parse_node_hosts(["tcp://w1:2376"], env)
    assert hosts == ("tcp://w1:2376", "unix:///a.sock", "tcp://w2:2376")
    assert options().node_hosts == ()


@pytest.mark.parametrize("bad", ["w1:2376", "unix://", "/var/run/docker.sock"])
def test_a_node_host_that_is_no_address_names_the_flag(bad: str) -> None:
    with pytest.raises(SpecError, match=r"--node-host: .* is not an engine address"):
        parse_node_hosts([bad], {})


IMAGE_FLAGS = [
    ("run", True, True),
    ("submit", True, True),
    ("batch", True, True),
    ("supervise", False, True),
]


@pytest.mark.parametrize(("command", "image_flags", "node_host"), IMAGE_FLAGS)
def test_image_and_node_flags_are_where_they_apply(
    command: str, image_flags: bool, node_host: bool
) -> None:
    """A supervisor runs what was submitted as it was submitted; it follows nodes itself."""
    shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    assert ("--with-registry-auth" in shown) is image_flags
    assert ("--no-resolve-image" in shown) is image_flags
    assert ("--node-host" in shown) is (node_host and command != "submit")


def test_run_flags_reach_the_spec() -> None:
    from covey.cli import spec_from_flags

    spec = spec_from_flags(_run_args(with_registry_auth=True, no_resolve_image=True), file_hint="")
    assert (spec.registry_auth, spec.resolve_image) == (True, False)
    plain = spec_from_flags(_run_args(), file_hint="")
    assert (plain.registry_auth, plain.resolve_image) == (False, True)
    assert JobSpec.from_json(spec.to_json()) == spec


def _run_args(**changes: object) -> dict[str, object]:
    import inspect

    from covey.cli import run

    args = {
        name: p.default if p.default is not inspect.Parameter.empty else None
        for name, p in inspect.signature(run).parameters.items()
    }
    return {**args, "image": "busybox", **changes}


@pytest.mark.parametrize("bad", ["0", "lots", "2.5"])
def test_throttle_wants_a_number_of_jobs_or_none(bad: str, tmp_path: object) -> None:
    shown = CliRunner().invoke(app, ["throttle", "b1", bad], env={"COLUMNS": "200"})
    assert shown.exit_code == 125
    assert "is not a number of jobs (1 or more, or 'none')" in shown.output


def test_priority_reaches_the_spec() -> None:
    from covey.cli import spec_from_flags

    assert spec_from_flags(_run_args(priority=7), file_hint="").priority == 7
