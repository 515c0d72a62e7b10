"""SQLite connections that run each call on the calling thread (the event loop's), for
write transactions and point reads.

aiosqlite hands every DBAPI call (cursor, execute, fetch, close, commit) to the
connection's own thread and back: about 40 µs of CPU per call on a 2-core VM, a loop
wake-up each, ~10 calls per ``POST /v1/videos`` and ~200 per job in a worker. A write
transaction's statements are short indexed inserts and updates that SQLite runs in
microseconds, so handing them to a thread costs more than running them. Here a sync
SQLAlchemy engine (the ``pysqlite`` dialect on ``sqlite3``) runs them, and
:class:`InlineAsyncConnection` gives the store the ``AsyncConnection`` interface it is
written against without the asyncio proxy's greenlet hand-off per call.

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

from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, CursorResult, Engine, ScalarResult
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.expression import Executable


class BufferedCursor:
    """A DBAPI cursor over a ``sqlite3.Cursor`` that reads a statement's rows when it
    runs, as the asyncio drivers do: a result stays readable after its connection went
    back to the pool (code written for ``AsyncConnection`` may read it there)."""

    __slots__ = ("_cursor", "_next", "_rows")

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor
        self._rows: list[Any] = []
        self._next = 0

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

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> BufferedCursor:
        cursor = self._cursor
        cursor.execute(sql, parameters)
        self._rows = cursor.fetchall() if cursor.description is not None else []
        self._next = 0
        return self

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> BufferedCursor:
        self._cursor.executemany(sql, parameters)
        self._rows = []
        self._next = 0
        return self

    def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        row = self._rows[self._next]
        self._next += 1
        return row

    def fetchmany(self, size: int | None = None) -> list[Any]:
        start = self._next
        self._next = min(len(self._rows), start + (size or self._cursor.arraysize))
        return self._rows[start : self._next]

    def fetchall(self) -> list[Any]:
        rows = self._rows[self._next :] if self._next else self._rows
        self._rows = []
        self._next = 0
        return rows

    def close(self) -> None:
        self._cursor.close()


class BufferedConnection(sqlite3.Connection):
    """A ``sqlite3.Connection`` whose cursors are :class:`BufferedCursor`."""

    def cursor(self, *_args: Any, **_kwargs: Any) -> Any:
        return BufferedCursor(super().cursor())


def inline_creator(path: str, *, pragmas: Sequence[str]) -> Callable[[], sqlite3.Connection]:
    """A ``creator`` for a sync engine of inline connections to ``path``."""

    def create() -> sqlite3.Connection:
        # Transactions are begun by the engine's dialect (BEGIN / BEGIN IMMEDIATE, see
        # inline_engine), never lazily by the driver. check_same_thread off: the pool
        # may close a connection from the garbage collector's thread; every statement
        # runs on the loop's thread.
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, factory=BufferedConnection
        )
        for pragma in pragmas:
            conn.execute(pragma)
        return conn

    return create


class InlineAsyncConnection(AsyncConnection):
    """An ``AsyncConnection`` whose calls run a sync SQLAlchemy ``Connection`` directly.

    Its driver (sqlite3) never suspends, so the asyncio proxy's greenlet hand-off per
    call (``greenlet_spawn``, the adapter's ``await_only``) is pure cost: measured on a
    2-core VM, a point read's connect + BEGIN + SELECT + release took 430 µs of CPU
    through the asyncio engine and 180 µs through the sync one, a SELECT alone 101
    against 50 µs. The methods the store calls (``execute``, ``scalar``, ``scalars``,
    ``exec_driver_sql``) are direct; the others inherit the proxy's, which run the sync
    call in a greenlet and work the same, a little slower.
    """

    __slots__ = ("_sync",)

    def __init__(self, sync_connection: Connection) -> None:
        # Not AsyncConnection.__init__: it wants an AsyncEngine, which refuses a sync
        # driver. ``engine`` (the AsyncEngine) stays unset: there is none.
        self._sync = sync_connection
        self.sync_connection = sync_connection
        self.sync_engine = sync_connection.engine

    @property
    def sync(self) -> Connection:
        """The sync connection (``sync_connection``, never None here)."""
        return self._sync

    async def execute(
        self,
        statement: Executable,
        parameters: Any = None,
        *,
        execution_options: Any = None,
    ) -> CursorResult[Any]:
        return self._sync.execute(statement, parameters, execution_options=execution_options)

    async def scalar(
        self, statement: Executable, parameters: Any = None, *, execution_options: Any = None
    ) -> Any:
        return self._sync.execute(
            statement, parameters, execution_options=execution_options
        ).scalar()

    async def scalars(
        self, statement: Executable, parameters: Any = None, *, execution_options: Any = None
    ) -> ScalarResult[Any]:
        return self._sync.execute(
            statement, parameters, execution_options=execution_options
        ).scalars()

    async def exec_driver_sql(
        self, statement: str, parameters: Any = None, execution_options: Any = None
    ) -> CursorResult[Any]:
        return self._sync.exec_driver_sql(statement, parameters, execution_options)

    async def commit(self) -> None:
        self._sync.commit()

    async def rollback(self) -> None:
        self._sync.rollback()

    async def close(self) -> None:
        self._sync.close()


class HeldConnections:
    """Inline connections kept open between uses, up to ``keep`` of them.

    A checkout from SQLAlchemy's pool and the return to it (the fairy, its events, the
    ``Connection`` object) cost more than the transaction of a point read: measured on a
    2-core VM, an empty point read took 108 µs of CPU through the pool and 40 µs on a
    kept connection. Every use runs on one thread at a time (the event loop's), and a
    connection is in one user's hands between :meth:`take` and :meth:`release`.
    """

    def __init__(self, engine: Engine, keep: int) -> None:
        self.engine = engine
        self.keep = keep
        self._idle: list[InlineAsyncConnection] = []

    def take(self) -> InlineAsyncConnection:
        if self._idle:
            return self._idle.pop()
        return InlineAsyncConnection(self.engine.connect())

    def release(self, conn: InlineAsyncConnection) -> None:
        """Ends the transaction still open on ``conn`` (rolled back) and keeps the
        connection for the next user, or closes it when it failed or enough are kept."""
        sync = conn.sync
        try:
            if sync.in_transaction():
                sync.rollback()
        except Exception:
            # Called on the way out of a failed transaction too: that error is the one
            # to raise; this connection is not reused.
            sync.close()
            return
        if sync.invalidated or len(self._idle) >= self.keep:
            sync.close()
        else:
            self._idle.append(conn)

    def discard(self, conn: InlineAsyncConnection) -> None:
        conn.sync.close()

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.sync.close()


def inline_engine(path: str, *, pragmas: Sequence[str], begin: str) -> Engine:
    """A sync engine of inline connections to ``path`` whose transactions start with
    ``begin`` (``BEGIN`` or ``BEGIN IMMEDIATE``).

    No pool: :class:`HeldConnections` keeps the connections. A bounded pool would make
    a checkout past its bound wait, blocking the event loop's thread while the
    connections it waits for can only be given back by that loop.
    """
    engine = create_engine(
        f"sqlite:///{path}",
        creator=inline_creator(path, pragmas=pragmas),
        poolclass=NullPool,
        # Every use ends its transaction (commit, or rollback on the way out): a
        # rollback on return would find nothing to do.
        pool_reset_on_return=None,
    )

    # The dialect's own BEGIN (pysqlite's does nothing: the driver's lazy BEGIN is off)
    # rather than a "begin" event listener: an engine with any listener makes every
    # statement go through SQLAlchemy's event dispatch (before/after execute, before/
    # after cursor execute), empty or not.
    def do_begin(dbapi_connection: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(begin)
        finally:
            cursor.close()

    engine.dialect.do_begin = do_begin  # type: ignore[method-assign]
    return engine


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
