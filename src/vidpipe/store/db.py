"""The database handle: one async engine, transactions, and the two dialects' quirks.

Everything dialect-specific lives here: SQLite's pragmas and ``BEGIN IMMEDIATE`` for
write transactions (so two writers queue on the busy timeout instead of failing on a
lock upgrade), PostgreSQL's ``NOTIFY`` and advisory locks.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Table, event, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from vidpipe.config import normalize_database_url

NOTIFY_CHANNEL = "vidpipe_steps"
_IMMEDIATE = "vidpipe_sqlite_immediate"


class Database:
    """Owns the engine; hands out read and write transactions."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = normalize_database_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.is_postgres = self.url.startswith("postgresql")
        kwargs: dict[str, Any] = {}
        if self.is_postgres:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that will write. On SQLite it takes the write lock at BEGIN."""
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                await conn.execution_options(**{_IMMEDIATE: True})
            async with conn.begin():
                yield conn

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
            "PRAGMA busy_timeout=10000",
            "PRAGMA foreign_keys=ON",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: SyncConnection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
