"""The database handle: SQLite's in-process write queue, its pool, and the read cache."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from vidpipe.money.catalog import Price, PriceBook
from vidpipe.money.prices import price_for, set_override
from vidpipe.store import db as db_module
from vidpipe.store import tenants as tenant_q
from vidpipe.store.db import Database

pytestmark = pytest.mark.timeout(60)


def _no_busy_wait(db: Database) -> None:
    """SQLite fails a second writer at once instead of retrying in its busy handler."""

    @event.listens_for(db.engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()


async def test_sqlite_writers_of_one_process_queue_in_python(sqlite_url: str) -> None:
    """With no busy timeout at all, 30 overlapping write transactions (each yielding to
    the others while it holds the write lock) all commit: they waited for each other in
    the process, not in SQLite's busy handler."""
    db = Database(sqlite_url)
    _no_busy_wait(db)
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE counter (n INTEGER)"))
            await conn.execute(text("INSERT INTO counter VALUES (0)"))

        async def bump() -> None:
            async with db.write() as conn:
                n = await conn.scalar(text("SELECT n FROM counter"))
                await asyncio.sleep(0.002)
                await conn.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})

        await asyncio.gather(*(bump() for _ in range(30)))
        async with db.read() as conn:
            assert await conn.scalar(text("SELECT n FROM counter")) == 30
    finally:
        await db.dispose()


async def test_a_writer_that_waits_too_long_fails_like_a_locked_database(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_S", 0.05)
    db = Database(sqlite_url)
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with db.write():
            held.set()
            await release.wait()

    task = asyncio.create_task(holder())
    try:
        await held.wait()
        with pytest.raises(OperationalError, match="database is locked"):
            async with db.write():
                pass
        release.set()
        await task
        async with db.write() as conn:  # the lock is free again
            assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        release.set()
        await task
        await db.dispose()


async def test_a_failed_sqlite_write_releases_the_lock(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        with pytest.raises(RuntimeError):
            async with db.write():
                raise RuntimeError("rolled back")
        async with asyncio.timeout(5), db.write() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        await db.dispose()


async def test_the_sqlite_pool_is_sized_like_postgresql(sqlite_url: str) -> None:
    db = Database(sqlite_url, pool_size=24)
    try:
        assert db.engine.pool.size() == 24  # type: ignore[attr-defined]
    finally:
        await db.dispose()


async def test_a_write_by_another_process_is_seen_within_the_cache_ttl(db_url: str) -> None:
    """Two Database objects on one database stand for two processes."""
    here = Database(db_url, cache_ttl_s=0.3)
    there = Database(db_url, cache_ttl_s=0.3)
    book = PriceBook()
    dear = Price(unit="second", usd=0.25)
    try:
        async with here.read() as conn:
            assert (await price_for(conn, book, "instant/test")) == book.price("instant/test")
        async with there.write() as conn:
            await set_override(conn, "instant/test", dear.model_dump(mode="json"), 1.0)
        async with there.read() as conn:  # the writer's process: at once
            assert await price_for(conn, book, "instant/test") == dear
        async with here.read() as conn:  # elsewhere: not yet
            assert (await price_for(conn, book, "instant/test")) == book.price("instant/test")
        await asyncio.sleep(0.35)
        async with here.read() as conn:  # elsewhere: after the TTL
            assert await price_for(conn, book, "instant/test") == dear
    finally:
        await here.dispose()
        await there.dispose()


async def test_what_a_rolled_back_transaction_read_of_its_own_writes_is_not_kept(
    db_url: str,
) -> None:
    db = Database(db_url)
    try:
        async with db.write() as conn:
            tenant = await tenant_q.create_tenant(conn, "acme", 1.0)
        async with db.read() as conn:
            assert (await tenant_q.tenant_settings(conn, tenant.id)).limits is None

        async def change_then_fail() -> None:
            async with db.write() as conn:
                await tenant_q.update_tenant(conn, tenant.id, {"limits": {"max_seconds": 2}})
                seen = await tenant_q.tenant_settings(conn, tenant.id)
                assert seen.limits == {"max_seconds": 2}
                raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            await change_then_fail()
        async with db.read() as conn:
            assert (await tenant_q.tenant_settings(conn, tenant.id)).limits is None
        async with db.write() as conn:
            await tenant_q.update_tenant(conn, tenant.id, {"require_review": 1})
        async with db.read() as conn:
            assert (await tenant_q.tenant_settings(conn, tenant.id)).require_review is True
    finally:
        await db.dispose()
