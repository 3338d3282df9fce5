"""The store: every job, attempt, state change and log covey knows, in one SQLite file.

One module per part: :mod:`~covey.store.schema` (tables and migrations),
:mod:`~covey.store.rows` (what reads hand out), :mod:`~covey.store.writer` (group commit),
:mod:`~covey.store.writes` (every write transaction, guarded by :mod:`covey.lifecycle`),
:mod:`~covey.store.reads` (every read), :mod:`~covey.store.handle` (the open store), whose
methods come by role from :mod:`~covey.store.queries`, :mod:`~covey.store.running`,
:mod:`~covey.store.steering` and :mod:`~covey.store.holding` (over :mod:`~covey.store.facade`).
"""

from covey.lifecycle import EndDecision
from covey.store.handle import Store, default_path
from covey.store.reads import Scope
from covey.store.rows import (
    AttemptRow,
    BatchRow,
    HolderRow,
    JobRow,
    JobSnapshot,
    LogRecord,
    ScheduleRow,
    StageRow,
    Transition,
    attempt_id,
    new_id,
)
from covey.store.running import DEFAULT_LOG_CAP
from covey.store.schema import SCHEMA_VERSION
from covey.store.writes import AttemptEnd, StreamLog

__all__ = [
    "DEFAULT_LOG_CAP",
    "SCHEMA_VERSION",
    "AttemptEnd",
    "AttemptRow",
    "BatchRow",
    "EndDecision",
    "HolderRow",
    "JobRow",
    "JobSnapshot",
    "LogRecord",
    "ScheduleRow",
    "Scope",
    "StageRow",
    "Store",
    "StreamLog",
    "Transition",
    "attempt_id",
    "default_path",
    "new_id",
]
