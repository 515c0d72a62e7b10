"""A SQLite driver for SQLAlchemy's asyncio engine that runs each call on the calling
thread, for write transactions and point reads.

aiosqlite hands every DBAPI call (cursor, execute, fetch, close, commit) to the
connection's own thread and back: about 40 µs of CPU per call on a 2-core VM, a loop
wake-up each, ~10 calls per ``POST /v1/videos`` and ~200 per job in a worker. A write
transaction's statements are short indexed inserts and updates that SQLite runs in
microseconds, so handing them to a thread costs more than running them. This module
offers the small part of aiosqlite's interface that SQLAlchemy's ``sqlite+aiosqlite``
dialect uses, with coroutines that finish without suspending.

What keeps the event loop from blocking:
- the only statement of a write transaction that can wait for another connection is
  its ``BEGIN IMMEDIATE`` (WAL: readers never wait, and a writer that holds the write
  lock does not wait on commit). These connections have ``busy_timeout = 0``: a locked
  database answers at once, and ``Database.write`` retries with short asyncio sleeps;
- reads by key (``Database.point_read``) never wait in WAL mode and take microseconds;
  reads that can be long scans (reports, lists) stay on aiosqlite's threads
  (``Database.read``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any


class InlineCursor:
    """An aiosqlite-shaped cursor over a ``sqlite3.Cursor``."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    def __aiter__(self) -> InlineCursor:
        return self

    async def __anext__(self) -> Any:
        row = self._cursor.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        if parameters is None:
            self._cursor.execute(sql)
        else:
            self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        if size is None:
            return self._cursor.fetchmany()
        return self._cursor.fetchmany(size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class _ImmediateQueue:
    """SQLAlchemy's dialect sets ``isolation_level`` by queueing a call for
    aiosqlite's thread (``_tx.put_nowait((future, function))``); here it runs at once."""

    __slots__ = ()

    def put_nowait(self, item: tuple[Any, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)


class InlineConnection:
    """An aiosqlite-shaped connection over a ``sqlite3.Connection``."""

    __slots__ = ("_conn", "_connection", "_tx")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        # The dialect reads ``_connection`` to tell an open connection from a closed one.
        self._connection: sqlite3.Connection | None = conn
        self._tx = _ImmediateQueue()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._conn.isolation_level = value  # type: ignore[assignment]

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor())

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Force-close (SQLAlchemy's terminate): nothing runs elsewhere to stop."""
        if self._connection is not None:
            self._connection = None
            self._conn.close()


def inline_creator(path: str, *, pragmas: Sequence[str]) -> Callable[[], Any]:
    """An ``async_creator`` for ``create_async_engine`` opening ``path`` inline."""

    async def create() -> InlineConnection:
        # check_same_thread off: the pool may close a connection from the garbage
        # collector's thread; every statement runs on the loop's thread.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in pragmas:
            conn.execute(pragma)
        return InlineConnection(conn)

    return create


class Checkpointer:
    """Copies the WAL back into the database file off the event loop's thread.

    SQLite checkpoints on commit by default (when the WAL passes 1,000 pages), in the
    committing connection: for inline writers that is the loop's thread, stalled for the
    copy and its fsync (tens to hundreds of milliseconds, the p99 of a POST under load).
    Inline connections therefore open with ``wal_autocheckpoint = 0`` and call
    :meth:`after_commit`, which runs a PASSIVE checkpoint (it never waits for readers or
    writers) in a thread at most once per ``interval_s``, one at a time.

    A PASSIVE checkpoint copies pages back but never makes the WAL start over: SQLite
    rewinds it only when a write begins while every frame is checkpointed and no
    reader still uses one, and under a steady stream of commits a checkpoint never
    catches up (measured: 167 MB of WAL for an 18 MB database after 25 s of POSTs, and
    growing). So once the WAL passes ``max_wal_bytes`` a TRUNCATE follows the PASSIVE
    pass: it holds new writers off while it waits (at most ``truncate_wait_ms``) for
    readers to leave the WAL, copies what is left and empties the file (measured with two
    API processes under POST load: 61 to 144 ms). Writers meanwhile wait in
    ``Database.write`` as they do for another process's writer. When the readers (or
    another process's checkpoint) do not leave in time, the next TRUNCATE waits
    ``truncate_retry_s``: a stall that frees nothing is not repeated every second.
    """

    def __init__(
        self,
        path: str,
        *,
        interval_s: float = 1.0,
        max_wal_bytes: int = 64 << 20,
        truncate_wait_ms: int = 100,
        truncate_retry_s: float = 10.0,
    ) -> None:
        self.path = path
        self.interval_s = interval_s
        self.max_wal_bytes = max_wal_bytes
        self.truncate_wait_ms = truncate_wait_ms
        self.truncate_retry_s = truncate_retry_s
        self._truncate_after = 0.0  # time.monotonic() before which no TRUNCATE is tried
        self.runs = 0  # completed checkpoints, for tests
        self.truncations = 0  # WAL files emptied, for tests
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._next = 0.0

    def after_commit(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now < self._next or (self._task is not None and not self._task.done()):
            return
        self._next = now + self.interval_s
        self._task = loop.create_task(asyncio.to_thread(self._checkpoint))

    def _checkpoint(self) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute(f"PRAGMA busy_timeout={int(self.truncate_wait_ms)}")
        try:
            wal_bytes = os.path.getsize(f"{self.path}-wal")
        except OSError:
            wal_bytes = 0
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.runs += 1
            if wal_bytes > self.max_wal_bytes and time.monotonic() >= self._truncate_after:
                # Right after the PASSIVE pass almost nothing is left to copy, so the
                # time writers are held off is the wait for readers, an fsync and the
                # truncation. Returns (busy, frames, checkpointed); busy=1 when the
                # readers, a writer or another checkpoint did not leave in time.
                busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                if busy:
                    self._truncate_after = time.monotonic() + self.truncate_retry_s
                else:
                    self.truncations += 1
        except sqlite3.Error:
            pass  # the next commit's checkpoint tries again

    async def close(self) -> None:
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        if self._conn is not None:
            self._conn.close()
            self._conn = None
