"""The database handle: one async engine, transactions, and the two dialects' quirks.

Everything dialect-specific lives here: SQLite's pragmas and ``BEGIN IMMEDIATE`` for
write transactions (so two writers queue on the busy timeout instead of failing on a
lock upgrade), PostgreSQL's ``NOTIFY`` and advisory locks.

SQLite allows one writer at a time. Within a process, write transactions queue on an
``asyncio.Lock`` before they take a connection and ``BEGIN IMMEDIATE``: the next writer
is woken the moment the lock is released. Without it, every waiting writer sleeps and
retries in SQLite's busy handler (1, 2, 5 … 100 ms), which under load took the p99 of a
POST to seconds. Writers in other processes still meet in the busy handler.
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
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from vidpipe.config import normalize_database_url
from vidpipe.store.cache import CACHE_TTL_S, ReadCache

NOTIFY_CHANNEL = "vidpipe_steps"
_IMMEDIATE = "vidpipe_sqlite_immediate"
# How long a writer waits for the database: SQLite's busy timeout, and as long for this
# process's write lock (a writer never waits forever, as before the lock).
SQLITE_BUSY_TIMEOUT_S = 10.0


class Database:
    """Owns the engine; hands out read and write transactions."""

    def __init__(self, url: str, *, pool_size: int = 10, cache_ttl_s: float = CACHE_TTL_S) -> None:
        self.url = normalize_database_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.is_postgres = self.url.startswith("postgresql")
        kwargs: dict[str, Any] = {}
        if self.is_postgres:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False)
        elif self.is_sqlite and make_url(self.url).database not in (None, "", ":memory:"):
            # A file database gets a queue pool: sized like PostgreSQL's, or SQLAlchemy's
            # 5 (+10 overflow) is smaller than a worker's concurrent actions and every
            # overflow connection opened and closed costs a thread, the file and pragmas.
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        # Rarely written rows read on every request (see store/cache.py).
        self.cache = ReadCache(cache_ttl_s)
        self.cache.attach(self.engine.sync_engine)
        self._write_lock: asyncio.Lock | None = None
        self._write_lock_loop: asyncio.AbstractEventLoop | None = None

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
                raise OperationalError(
                    "BEGIN IMMEDIATE",
                    None,
                    sqlite3.OperationalError("database is locked (this process's writers)"),
                ) from None
        else:
            await lock.acquire()
        try:
            async with self.engine.connect() as conn:
                await conn.execution_options(**{_IMMEDIATE: True})
                try:
                    async with conn.begin():
                        yield conn
                finally:
                    self.cache.settle(conn)
        finally:
            lock.release()

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

    async def dispose(self) -> None:
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from the driver: it would otherwise BEGIN
        # deferred transactions lazily, and a deferred reader that later writes fails
        # with "database is locked" instead of waiting.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}",
            "PRAGMA foreign_keys=ON",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: SyncConnection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
