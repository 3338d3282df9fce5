"""Who holds work in a store, and whether that process still exists.

A foreground ``covey batch``/``covey run`` and the supervisor each register as a *holder*.
Nothing may stay owned by a process that is gone (kill -9, a crash, a lost machine): the
supervisor hands a dead holder's unfinished batches to the queue and adopts them, and a
second supervisor on the same store is refused while the first one lives.

A SQLite store in WAL mode can only be shared by processes of one host, so liveness is a
local question: the pid exists *and* was started when the holder said (a pid reused by
another program does not keep the work hostage). The heartbeat only matters for a store
written from another host, which SQLite does not support but a user may try (NFS).
"""

from __future__ import annotations

import os
import secrets
import socket
import time

import psutil

from covey.store.rows import HolderRow

HEARTBEAT = 5.0
"""Seconds between a holder's heartbeats."""
FOREIGN_TTL = 60.0
"""A holder of another host is taken as gone after this long without a heartbeat."""


def host() -> str:
    return socket.gethostname()


class _Unknown(Exception):
    """The process exists but its start time cannot be read (another user's, say)."""


def _started(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied as exc:
        raise _Unknown(str(exc)) from exc


def _own_start() -> float | None:
    try:
        return _started(os.getpid())
    except _Unknown:
        return None


def this_process(role: str, now: float | None = None) -> HolderRow:
    """A holder row for the calling process."""
    at = time.time() if now is None else now
    pid = os.getpid()
    return HolderRow(
        id=secrets.token_hex(6),
        role=role,
        pid=pid,
        host=host(),
        proc_started=_own_start() or at,
        since=at,
        heartbeat=at,
    )


def alive(holder: HolderRow, now: float | None = None) -> bool:
    """Whether the process behind ``holder`` still exists."""
    if holder.host != host():
        at = time.time() if now is None else now
        return at - holder.heartbeat < FOREIGN_TTL
    try:
        started = _started(holder.pid)
    except _Unknown:
        return True  # it exists; without its start time, taking its work would be a guess
    if started is None and holder.pid == os.getpid():
        return True  # our own start time unreadable: this_process recorded the clock instead
    # our own pid is no exception: in a container a restarted covey often gets the pid of
    # the one that was killed, and must not take that one's row for its own
    return started is not None and abs(started - holder.proc_started) < 1.0


def describe(holder: HolderRow) -> str:
    """``pid 123 on host x, since 2026-12-01 15:00:00 UTC`` for error messages."""
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.since))
    return f"pid {holder.pid} on {holder.host}, since {since}"
