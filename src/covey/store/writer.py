"""Group commit over aiosqlite's public API.

Every write is an ``async`` function of a :class:`Tx`. Writes that meet in time share one
``BEGIN IMMEDIATE`` transaction: with a thousand jobs in flight, a job's end and the next
job's admission (whose room that end frees) are committed together, and a WAL commit per
write would be most of covey's store cost. If one write of a shared transaction fails,
the transaction is rolled back and the others are committed again without it, so a bad
write fails only its own caller; that is why a write function must do nothing but SQL through
its ``Tx`` (it may run twice, and only the committed run counts).

Writes are shielded from cancellation: a Ctrl-C or a cancelled task group never leaves half
a transition behind. Deferred writes (:meth:`GroupWriter.later`) are bookkeeping that
reconcile redoes after a crash; nobody waits for them, they ride with the next commit.
What must not run inside a transaction (``VACUUM``, a WAL checkpoint) takes its turn between
commits with :meth:`GroupWriter.alone`, never on the connection behind the writer's back.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import aiosqlite
import anyio
import anyio.lowlevel

T = TypeVar("T")
log = logging.getLogger("covey")


class Tx:
    """One transaction's statements. Each call is one hop to aiosqlite's worker thread;
    ``RETURNING`` is used where a statement must say whether it changed a row."""

    __slots__ = ("_conn",)

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return list(await self._conn.execute_fetchall(sql, args))

    async def one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        rows = await self.all(sql, args)
        return rows[0] if rows else None

    async def run(self, sql: str, args: Sequence[Any] = ()) -> None:
        await self._conn.execute_fetchall(sql, args)

    async def changed(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Rows changed by an ``UPDATE``/``DELETE``/``INSERT`` that ends in ``RETURNING 1``."""
        return len(await self.all(sql, args))

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            cursor = await self._conn.executemany(sql, rows)
            await cursor.close()


Write = Callable[[Tx], Awaitable[Any]]


Alone = Callable[[aiosqlite.Connection], Awaitable[Any]]


class _Pending:
    """One caller's write in a group commit, and what became of it."""

    __slots__ = ("alone", "error", "finished", "fn", "result", "turn", "waited")

    def __init__(self, fn: Write, *, waited: bool = True, alone: Alone | None = None) -> None:
        self.fn = fn
        self.waited = waited
        self.alone = alone  # run on the connection after the commit, before the next one
        # set when finished, or when this caller is to lead; made only for a caller that
        # has to wait (most writes lead their own commit, deferred ones are not waited for)
        self.turn: anyio.Event | None = None
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupWriter:
    """Queues writes and commits them in shared transactions (see the module docstring)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._tx = Tx(conn)
        self._queue: list[_Pending] = []
        self._writing = False  # a commit is under way (its leader hands on the lead)

    async def write(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        """Run ``fn`` atomically; return its result once it is committed."""
        return cast(T, await self._wait(_Pending(fn)))

    async def alone(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` on the connection with no transaction open and none begun until it
        returns (what is queued is committed first): for statements that cannot run inside a
        transaction, or would commit one (``executescript``)."""
        return cast(T, await self._wait(_Pending(_nothing, alone=fn)))

    async def _wait(self, pending: _Pending) -> Any:
        self._queue.append(pending)
        with anyio.CancelScope(shield=True):
            if self._writing:
                pending.turn = anyio.Event()
                await pending.turn.wait()  # done by the leader, or handed the lead
            if not pending.finished:
                await self._lead()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def later(self, fn: Write) -> None:
        """Queue a write nobody waits for: committed with the next one, or by :meth:`flush`."""
        self._queue.append(_Pending(fn, waited=False))

    @property
    def queued(self) -> bool:
        return bool(self._queue)

    async def flush(self) -> None:
        if self._queue:
            await self.write(_nothing)

    async def _lead(self) -> None:
        """Commit everything queued, then hand the lead to whoever came meanwhile.

        The leader first lets the tasks that are ready run (one checkpoint): writes caused by
        the same wake-up then share this commit instead of queueing for the next.
        """
        self._writing = True
        await anyio.lowlevel.checkpoint()
        batch, self._queue = self._queue, []
        try:
            try:
                await self._commit(batch)
            except BaseException as exc:  # cancelled natively mid-transaction: rolled back
                for pending in batch:
                    pending.error = pending.error or exc
                raise
            for pending in batch:
                if pending.alone is not None and pending.error is None:
                    try:
                        pending.result = await pending.alone(self._conn)
                    except Exception as exc:
                        pending.error = exc
        finally:
            for pending in batch:
                pending.finished = True
                if pending.turn is not None:
                    pending.turn.set()
                if pending.error is not None and not pending.waited:
                    log.warning("store: a deferred write failed: %s", pending.error)
            turn = next((p.turn for p in self._queue if p.turn is not None), None)
            if turn is not None:
                turn.set()  # still "writing": that caller leads the next commit
            else:
                self._writing = False

    async def _commit(self, batch: list[_Pending]) -> None:
        """One transaction for the batch; a write that raises is dropped from it (its error
        is its caller's) and the others are committed together without it."""
        left = list(batch)
        while left:
            try:
                await self._transaction(left)
                return
            except _OneFailed as failed:
                left.remove(failed.pending)
                for pending in left:
                    pending.error = None
            except Exception as exc:  # BEGIN or COMMIT itself failed: all of them did
                for pending in left:
                    if pending.waited:
                        pending.error = pending.error or exc
                    else:  # nobody waits to retry it: it rides with the next commit again
                        self._queue.append(_Pending(pending.fn, waited=False))
                return

    async def _transaction(self, batch: list[_Pending]) -> None:
        await self._tx.run("BEGIN IMMEDIATE")
        try:
            for pending in batch:
                try:
                    pending.result = await pending.fn(self._tx)
                except Exception as exc:
                    pending.error = exc
                    raise _OneFailed(pending) from exc
            await self._tx.run("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                await self._tx.run("ROLLBACK")
            raise


class _OneFailed(Exception):
    """A write of the transaction raised: roll back, and commit the others without it."""

    def __init__(self, pending: _Pending) -> None:
        super().__init__()
        self.pending = pending


async def _nothing(tx: Tx) -> None:
    return None


__all__ = ["GroupWriter", "Tx", "Write"]
