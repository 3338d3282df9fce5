"""Developer sessions: lint, typecheck, tests, browser, soak, bench (``nox -s NAME``)."""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: style and the complexity cap on every Python file we ship or run."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", "src", "tests", "bench", "soak", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "bench", "soak", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and the soak driver."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "typecheck"))
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests, then the real-engine tests (the engines are started by tests/conftest.py)."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "test"))
    session.run("pytest", *session.posargs)


BROWSER_PACKAGES = ("chromium", "chromium-driver")


@nox.session
def browser(session: nox.Session) -> None:
    """The web dashboard in a real browser: Debian's headless chromium driven through its
    chromedriver (selenium), against real jobs on the private engine covey-t (CI runs it).

    Installs chromium and chromium-driver with apt when missing (as root, one installer at a
    time: the engine scripts' lock on /var/lib/apt). ``COVEY_SCREENSHOTS=docs nox -s browser``
    also renews the README's pictures.
    """
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        root = [] if os.geteuid() == 0 else ["sudo", "-n"]
        session.run(
            *root,
            "bash",
            "-c",
            "set -e; exec 8</var/lib/apt; flock -w 900 8;"
            " export DEBIAN_FRONTEND=noninteractive; apt-get update -qq </dev/null;"
            ' apt-get install -y -qq --no-install-recommends "$@" </dev/null',
            "apt",
            *BROWSER_PACKAGES,
            external=True,
        )
    session.install(
        "-e",
        ".",
        *nox.project.dependency_groups(PYPROJECT, "test"),
        *nox.project.dependency_groups(PYPROJECT, "browser"),
    )
    session.run("pytest", "tests/browser", *session.posargs, env={"COVEY_BROWSER_TESTS": "1"})


@nox.session
def soak(session: nox.Session) -> None:
    """The soak (soak/driver.py; its own private engine "soak"): 300 jobs through
    ``covey supervise`` with 10 kill -9 of it, a dockerd restart, a cut event stream and cancels
    of single jobs, then an audit of the store against the jobs' side effects. CI runs it.

    ``nox -s soak -- --seed N`` repeats a run; any ``python -m soak`` flag after ``--``.
    """
    session.install("-e", ".")
    session.run("python", "-m", "soak", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite (starts and stops its own private engine "bench"); see BENCHMARKS.md.

    ``nox -s bench -- --smoke`` for a quick check; any ``python -m bench`` flag after ``--``.
    """
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "bench"))
    session.run("python", "-m", "bench", *session.posargs)
