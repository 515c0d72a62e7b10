"""The database handle: one async engine, transactions, and the two dialects' quirks.

Everything dialect-specific lives here: SQLite's pragmas and ``BEGIN IMMEDIATE`` for
write transactions (so two writers queue on the busy timeout instead of failing on a
lock upgrade), PostgreSQL's ``NOTIFY`` and advisory locks.

SQLite allows one writer at a time. Within a process, write transactions queue on an
``asyncio.Lock`` before they take a connection and ``BEGIN IMMEDIATE``: the next writer
is woken the moment the lock is released. Without it, every waiting writer sleeps and
retries in SQLite's busy handler (1, 2, 5 … 100 ms), which under load took the p99 of a
POST to seconds.

On a SQLite file, write transactions run on their own (sync) engine that calls SQLite
on the event loop's thread (``store/sqlite_inline.py``: no thread hand-off per call) with
``busy_timeout = 0``; when another process holds the write lock, ``BEGIN IMMEDIATE``
answers "locked" at once and is retried after a short asyncio sleep (0.25 ms doubling to
4 ms), so the loop never blocks on another process and a waiting writer is at most a few
milliseconds late when the lock frees (SQLite's own busy handler sleeps up to 100 ms).
Reads, which can be long scans, stay on aiosqlite's threads, except the point reads of
the worker's hot path (``point_read``: a step's attempt, a job row, a lease), which
also run inline: in WAL mode a reader never waits for a writer, and those thread
hand-offs were the largest single cost of a worker's job. Before that BEGIN, the
writers of all vidpipe processes on the file queue on a ``flock`` with a kernel
wake-up (``store/writer_lock.py``), so the retries are for writers outside vidpipe.
"""

from __future__ import annotations

import asyncio
import sqlite3
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Table, event, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncTransaction,
    create_async_engine,
)

from vidpipe.config import normalize_database_url
from vidpipe.store import writer_lock
from vidpipe.store.cache import CACHE_TTL_S, ReadCache
from vidpipe.store.sqlite_inline import (
    Checkpointer,
    HeldConnections,
    InlineAsyncConnection,
    inline_engine,
)
from vidpipe.store.writer_lock import WriterLock, WriterLockTimeout

NOTIFY_CHANNEL = "vidpipe_steps"
_IMMEDIATE = "vidpipe_sqlite_immediate"
# How long a writer waits for the database: SQLite's busy timeout, and as long for this
# process's write lock (a writer never waits forever, as before the lock).
SQLITE_BUSY_TIMEOUT_S = 10.0
# Retry pauses of a write BEGIN that found another process holding the lock.
_BEGIN_RETRY_FIRST_S = 0.00025
_BEGIN_RETRY_MAX_S = 0.004
_POINT_READ_BUSY_MS = 200
_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)


class Database:
    """Owns the engine; hands out read and write transactions."""

    def __init__(self, url: str, *, pool_size: int = 10, cache_ttl_s: float = CACHE_TTL_S) -> None:
        self.url = normalize_database_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.is_postgres = self.url.startswith("postgresql")
        kwargs: dict[str, Any] = {}
        file_db = self.is_sqlite and make_url(self.url).database not in (None, "", ":memory:")
        if self.is_postgres:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False)
        elif file_db:
            # A file database gets a queue pool: sized like PostgreSQL's, or SQLAlchemy's
            # 5 (+10 overflow) is smaller than a worker's concurrent actions and every
            # overflow connection opened and closed costs a thread, the file and pragmas.
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        # On a SQLite file, write transactions and point reads run on sync engines of
        # inline connections (store/sqlite_inline.py); elsewhere on ``engine``.
        self.inline_writes: Engine | None = None
        self.inline_reads: Engine | None = None
        self._held_writes: HeldConnections | None = None
        self._held_reads: HeldConnections | None = None
        self.checkpointer: Checkpointer | None = None
        self.writer_lock: WriterLock | None = None
        if file_db:
            path = str(make_url(self.url).database)
            self.checkpointer = Checkpointer(path)
            if writer_lock.AVAILABLE:
                self.writer_lock = WriterLock(f"{path}.writer.lock")
            # One writer at a time per process (the lock below): one connection kept.
            self.inline_writes = _inline_engine(path, busy_timeout_ms=0, begin="BEGIN IMMEDIATE")
            # A WAL reader waits only in rare moments (recovering the WAL index after a
            # crash): briefly, on the loop's thread. As many kept connections as the
            # pool's size: one past them is opened (file, pragmas) and closed per use.
            self.inline_reads = _inline_engine(
                path, busy_timeout_ms=_POINT_READ_BUSY_MS, begin="BEGIN"
            )
            self._held_writes = HeldConnections(self.inline_writes, keep=1)
            self._held_reads = HeldConnections(self.inline_reads, keep=pool_size)
        # Rarely written rows read on every request (see store/cache.py).
        self.cache = ReadCache(cache_ttl_s)
        for sync_engine in self.sync_engines():
            self.cache.attach(sync_engine)
        self._write_lock: asyncio.Lock | None = None
        self._write_lock_loop: asyncio.AbstractEventLoop | None = None

    def sync_engines(self) -> list[Engine]:
        """Every engine this Database runs statements on (one, or three on a SQLite
        file), as event targets."""
        extra = [e for e in (self.inline_writes, self.inline_reads) if e is not None]
        return [self.engine.sync_engine, *extra]

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that will write. On SQLite it takes the write lock at BEGIN,
        after this process's other writers (see the module's docstring)."""
        if not self.is_sqlite:
            async with self.engine.connect() as conn:
                try:
                    async with conn.begin():
                        yield conn
                finally:
                    self.cache.settle(conn)
            return
        lock = self._sqlite_write_lock()
        if lock.locked():
            try:
                async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_S):
                    await lock.acquire()
            except TimeoutError:
                raise _locked("this process's writers") from None
        else:
            await lock.acquire()
        try:
            await self._acquire_writer_lock()
            try:
                if self._held_writes is not None:
                    async with self._inline_write(self._held_writes) as conn:
                        yield conn
                else:
                    async with self._threaded_write() as conn:
                        yield conn
            finally:
                if self.writer_lock is not None:
                    self.writer_lock.release()
        finally:
            lock.release()

    @asynccontextmanager
    async def _inline_write(self, held: HeldConnections) -> AsyncIterator[AsyncConnection]:
        conn = await self._begin_inline(held)
        try:
            try:
                yield conn
            except BaseException:
                conn.sync.rollback()
                raise
            conn.sync.commit()
            if self.checkpointer is not None:
                self.checkpointer.after_commit()
        finally:
            self.cache.settle(conn)
            held.release(conn)

    @asynccontextmanager
    async def _threaded_write(self) -> AsyncIterator[AsyncConnection]:
        """A write on aiosqlite's threads (an in-memory database)."""
        conn, transaction = await self._begin_immediate()
        try:
            try:
                yield conn
            except BaseException:
                await transaction.rollback()
                raise
            await transaction.commit()
        finally:
            self.cache.settle(conn)
            await conn.close()

    async def _acquire_writer_lock(self) -> None:
        """The writers of all processes on this file queue here (store/writer_lock.py)."""
        if self.writer_lock is None:
            return
        try:
            await self.writer_lock.acquire(SQLITE_BUSY_TIMEOUT_S)
        except WriterLockTimeout:
            raise _locked("another process's writers") from None

    async def _begin_inline(self, held: HeldConnections) -> InlineAsyncConnection:
        """An inline connection in a ``BEGIN IMMEDIATE`` transaction, waiting (without
        blocking the loop) while another process writes; "locked" after
        SQLITE_BUSY_TIMEOUT_S."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SQLITE_BUSY_TIMEOUT_S
        pause = _BEGIN_RETRY_FIRST_S
        while True:
            conn = held.take()
            try:
                conn.sync.begin()
                return conn
            except OperationalError as exc:
                held.discard(conn)
                if not _is_locked(exc) or loop.time() + pause > deadline:
                    raise
            except BaseException:
                held.discard(conn)
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, _BEGIN_RETRY_MAX_S)

    async def _begin_immediate(self) -> tuple[AsyncConnection, AsyncTransaction]:
        """An aiosqlite connection in a ``BEGIN IMMEDIATE`` transaction (the in-memory
        database: one process, its writers queued on the asyncio lock)."""
        conn = await self.engine.connect()
        try:
            await conn.execution_options(**{_IMMEDIATE: True})
            return conn, await conn.begin()
        except BaseException:
            await conn.close()
            raise

    def _sqlite_write_lock(self) -> asyncio.Lock:
        # An asyncio.Lock belongs to one event loop; a Database used from a later loop
        # (a second asyncio.run) gets a fresh one.
        loop = asyncio.get_running_loop()
        if self._write_lock is None or self._write_lock_loop is not loop:
            self._write_lock = asyncio.Lock()
            self._write_lock_loop = loop
        return self._write_lock

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    @asynccontextmanager
    async def point_read(self) -> AsyncIterator[AsyncConnection]:
        """A read of a few rows by key (never a scan or a list): on a SQLite file it
        runs on the event loop's thread, without aiosqlite's thread hand-off per call."""
        held = self._held_reads
        if held is None:
            async with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        conn = held.take()
        try:
            # No explicit begin: the first statement begins the transaction (SQLAlchemy's
            # autobegin, through the dialect's BEGIN), so a read that a cache answers
            # costs no BEGIN and ROLLBACK. A deferred BEGIN takes its snapshot at the
            # first read anyway.
            yield conn
        finally:
            held.release(conn)  # ends the read transaction, if one began

    async def notify(self, conn: AsyncConnection) -> None:
        """Wake listening workers when this transaction commits (PostgreSQL only)."""
        if self.is_postgres:
            await conn.execute(text("SELECT pg_notify(:c, '')"), {"c": NOTIFY_CHANNEL})

    async def lock_for(self, conn: AsyncConnection, name: str) -> None:
        """Serialize this transaction with others locking the same name.

        SQLite transactions that write are already serialized by BEGIN IMMEDIATE.
        """
        if self.is_postgres:
            key = zlib.crc32(name.encode())
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    async def insert_ignore(
        self, conn: AsyncConnection, table: Table, values: dict[str, Any]
    ) -> bool:
        """INSERT unless the primary key exists (ON CONFLICT DO NOTHING); True if inserted."""
        if self.is_postgres:
            stmt: Any = postgresql_insert(table).values(**values).on_conflict_do_nothing()
        else:
            stmt = sqlite_insert(table).values(**values).on_conflict_do_nothing()
        result = await conn.execute(stmt)
        return bool(result.rowcount == 1)

    def raw_postgres_dsn(self) -> str:
        """The URL asyncpg.connect() understands (no SQLAlchemy driver suffix)."""
        return self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def release_held_connections(self) -> None:
        """Close the inline connections kept between uses (not those in use: they are
        kept or closed when given back); the next use opens new ones."""
        for held in (self._held_writes, self._held_reads):
            if held is not None:
                held.close()

    async def dispose(self) -> None:
        await self.engine.dispose()
        self.release_held_connections()
        for engine in (self.inline_writes, self.inline_reads):
            if engine is not None:
                engine.dispose()
        if self.checkpointer is not None:
            await self.checkpointer.close()
        if self.writer_lock is not None:
            self.writer_lock.close()


def _locked(by: str) -> OperationalError:
    """What a writer that waited SQLITE_BUSY_TIMEOUT_S raises: SQLite's own error."""
    return OperationalError(
        "BEGIN IMMEDIATE", None, sqlite3.OperationalError(f"database is locked ({by})")
    )


def _is_locked(exc: OperationalError) -> bool:
    return isinstance(exc.orig, sqlite3.OperationalError) and "locked" in str(exc.orig)


def _inline_engine(path: str, *, busy_timeout_ms: int, begin: str) -> Engine:
    """A sync engine of ``sqlite_inline`` connections (calls on the loop's thread)."""
    return inline_engine(
        path,
        pragmas=(
            *_SQLITE_PRAGMAS,
            f"PRAGMA busy_timeout={busy_timeout_ms}",
            "PRAGMA wal_autocheckpoint=0",  # see Checkpointer
        ),
        begin=begin,
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from the driver: it would otherwise BEGIN
        # deferred transactions lazily, and a deferred reader that later writes
        # fails with "database is locked" instead of waiting.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        for pragma in (
            *_SQLITE_PRAGMAS,
            f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
