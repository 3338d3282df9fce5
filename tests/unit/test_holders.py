"""Whether the process behind a holder row still exists (pid, start time, heartbeat)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time

import psutil
import pytest

from covey import holders
from covey.holders import FOREIGN_TTL, alive, describe, host, this_process
from covey.store.rows import HolderRow


def row(pid: int, proc_started: float, *, on: str | None = None, beat: float = 0.0) -> HolderRow:
    now = time.time()
    return HolderRow("h1", "run", pid, on or host(), proc_started, now, beat or now)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    assert not psutil.pid_exists(child.pid)
    return child.pid


def test_this_process_is_alive() -> None:
    ours = this_process("supervisor")
    assert (ours.role, ours.pid, ours.host) == ("supervisor", os.getpid(), host())
    assert ours.proc_started == pytest.approx(psutil.Process().create_time())
    assert len(ours.id) == 12
    assert alive(ours)
    assert this_process("supervisor").id != ours.id


def test_a_process_that_exited_is_gone() -> None:
    pid = dead_pid()
    assert not alive(row(pid, time.time()))
    assert not alive(row(2**22 + 12345, time.time()))  # above any pid_max


def test_a_live_pid_started_at_another_time_is_pid_reuse() -> None:
    parent = os.getppid()
    started = psutil.Process(parent).create_time()
    assert alive(row(parent, started))
    assert alive(row(parent, started + 0.3))  # clock granularity
    assert not alive(row(parent, started - 100))
    assert not alive(row(parent, started + 100))


def test_our_own_pid_started_at_another_time_is_not_us() -> None:
    """In a container a restarted covey often gets the pid of the one that was killed: the
    dead one's row must not look alive (a supervisor would refuse to start, forever)."""
    ours = this_process("supervisor")
    assert alive(ours)
    assert not alive(dataclasses.replace(ours, proc_started=ours.proc_started - 3600))


def test_our_own_pid_is_trusted_when_its_start_time_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(holders, "_started", lambda pid: None)
    ours = this_process("run", now=1234.0)
    assert ours.proc_started == 1234.0
    assert alive(ours)
    assert not alive(row(os.getppid(), ours.proc_started))  # another pid: unknown is gone


def test_a_holder_on_another_host_lives_by_its_heartbeat() -> None:
    now = time.time()
    # the pid says nothing on another host: ours, a dead one, it does not matter
    for pid in (os.getpid(), dead_pid()):
        fresh = row(pid, 0.0, on="elsewhere", beat=now - FOREIGN_TTL + 5)
        stale = row(pid, psutil.Process().create_time(), on="elsewhere", beat=now - FOREIGN_TTL - 1)
        assert alive(fresh, now=now)
        assert not alive(stale, now=now)
    beat = now - 10
    assert alive(row(1, 0.0, on="elsewhere", beat=beat), now=beat + FOREIGN_TTL - 0.1)
    assert not alive(row(1, 0.0, on="elsewhere", beat=beat), now=beat + FOREIGN_TTL + 0.1)


def test_describe_names_pid_host_and_start() -> None:
    held = HolderRow("h1", "supervisor", 4242, "box", 0.0, 1_800_000_000.0, 0.0)
    assert describe(held) == "pid 4242 on box, since 2027-01-15 08:00:00 UTC"


def test_a_process_whose_start_time_may_not_be_read_is_not_called_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another user's process: psutil says AccessDenied. Taking its work would be a guess."""

    def denied(pid: int) -> float:
        raise holders._Unknown("access denied")

    monkeypatch.setattr(holders, "_started", denied)
    assert alive(row(os.getppid(), 0.0))
