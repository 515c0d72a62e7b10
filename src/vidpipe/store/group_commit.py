"""Group commit: write units that arrive together share one transaction.

On SQLite one transaction writes at a time, so concurrent requests that each write
a little (``POST /v1/videos``: a job, a step, an event) queue for the write lock and
each pays for its own BEGIN IMMEDIATE, COMMIT and connection. Here they queue for a
*batch* instead: while one batch commits, the units that arrive wait, and the next
batch takes all of them (up to ``max_units``) in one transaction. Nothing waits for
a timer: a lone request is a batch of one.

What each caller can rely on:
- ``run`` returns only after the transaction holding its unit has committed, or
  raises what its own unit raised;
- the outcome of every unit is the outcome it has in some serial order of the units:
  when unit *k* of a batch raises, the batch is rolled back; units ``0..k-1`` are
  committed together again, unit *k* then runs alone (in its own transaction, after
  them: what it raises there is its answer), then the rest as a batch. A failing
  request therefore never fails its batch-mates, and a refusal (a budget, a limit)
  is decided on the same state it would be decided on without batching;
- a unit may run more than once (its batch was rolled back): it must do nothing
  but database work in the connection it is given, and may not commit;
- a failure of BEGIN or COMMIT itself is nobody's unit's: each unit of the batch is
  then run alone.

PostgreSQL runs transactions side by side, so batching them would only couple the
row and advisory locks of unrelated requests (two API processes' batches could wait
on each other's tenants' budget rows); there every unit is its own transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.store.db import Database

T = TypeVar("T")
Unit = Callable[[AsyncConnection], Awaitable[T]]

MAX_UNITS = 64


@dataclass
class _Pending(Generic[T]):
    unit: Unit[T]
    future: asyncio.Future[T]
    result: Any = field(default=None)


class _UnitFailed(Exception):
    def __init__(self, index: int) -> None:
        self.index = index


class GroupCommit:
    """Runs write units of one process in shared transactions (SQLite only)."""

    def __init__(self, db: Database, *, max_units: int = MAX_UNITS) -> None:
        self.db = db
        self.max_units = max_units
        self.transactions = 0  # committed, for tests and benchmarks
        self._queue: list[_Pending[Any]] = []
        self._batch: list[_Pending[Any]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def run(self, unit: Unit[T]) -> T:
        """Run ``unit`` in a write transaction; return its result once committed."""
        if not self.db.is_sqlite:
            async with self.db.write() as conn:
                result = await unit(conn)
            self.transactions += 1
            return result
        loop = asyncio.get_running_loop()
        pending: _Pending[T] = _Pending(unit, loop.create_future())
        self._queue.append(pending)
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await pending.future

    async def _drain(self) -> None:
        try:
            while self._queue:
                # A caller that gave up (cancelled) before its batch began: skipped.
                self._batch = [p for p in self._queue[: self.max_units] if not p.future.done()]
                del self._queue[: self.max_units]
                await self._commit(self._batch)
        except BaseException as exc:  # cancelled (the loop is closing): fail the waiters
            for pending in [*self._batch, *self._queue]:
                _fail(pending, exc)
            self._queue.clear()
            raise
        finally:
            self._batch = []

    async def _commit(self, batch: list[_Pending[Any]]) -> None:
        while batch:
            try:
                await self._transaction(batch)
            except _UnitFailed as failed:
                k = failed.index
                await self._commit(batch[:k])
                await self._alone(batch[k])
                batch = batch[k + 1 :]
                continue
            except Exception as exc:  # BEGIN or COMMIT failed, not a unit
                if len(batch) == 1:
                    _fail(batch[0], exc)
                else:
                    for pending in batch:
                        await self._alone(pending)
                return
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_result(pending.result)
            return

    async def _transaction(self, batch: list[_Pending[Any]]) -> None:
        """All units of ``batch`` in one transaction; _UnitFailed(k) if unit k raised."""
        async with self.db.write() as conn:
            for index, pending in enumerate(batch):
                try:
                    pending.result = await pending.unit(conn)
                except Exception as exc:
                    if len(batch) == 1:
                        raise
                    raise _UnitFailed(index) from exc
        self.transactions += 1

    async def _alone(self, pending: _Pending[Any]) -> None:
        try:
            await self._transaction([pending])
        except Exception as exc:
            _fail(pending, exc)
        else:
            if not pending.future.done():
                pending.future.set_result(pending.result)


def _fail(pending: _Pending[Any], exc: BaseException) -> None:
    if pending.future.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        pending.future.cancel()
    else:
        pending.future.set_exception(exc)
