"""What every group of the store's methods stands on.

:class:`~covey.store.handle.Store` opens the connections and runs the transactions; the
groups of thin methods over :mod:`~covey.store.reads` and :mod:`~covey.store.writes`
(:mod:`~covey.store.queries`, :mod:`~covey.store.running`, :mod:`~covey.store.steering`,
:mod:`~covey.store.holding`) are mixins that reach them through this protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from covey.store.gate import GateResult
from covey.store.writer import Tx, Write


class Facade(Protocol):
    """The open store as its groups of methods see it."""

    path: Path
    _read: Tx
    """The read connection: committed data only, never behind this process's writes."""

    async def _txn(self, fn: Any) -> Any:
        """Run ``fn(tx)`` in a write transaction (group commit, covey's lock patience)."""
        ...

    def _later(self, fn: Write) -> None:
        """Defer ``fn(tx)`` to the next commit."""
        ...

    def _gated(self, result: GateResult) -> None:
        """Tell :attr:`~covey.store.handle.Store.on_gate` what the pipeline gate did."""
        ...
