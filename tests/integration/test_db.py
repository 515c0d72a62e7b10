"""The database handle: SQLite's in-process write queue, its pool, and the read cache."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator
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


@contextlib.asynccontextmanager
async def _write_held(db: Database) -> AsyncIterator[None]:
    """A write transaction of ``db`` held open (by another task) until the block ends."""
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with db.write():
            held.set()
            await release.wait()

    task = asyncio.create_task(holder())
    try:
        await held.wait()
        yield
    finally:
        release.set()
        await task


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
    try:
        async with _write_held(db):
            with pytest.raises(OperationalError, match="database is locked"):
                async with db.write():
                    pass
        async with db.write() as conn:  # the lock is free again
            assert await conn.scalar(text("SELECT 1")) == 1
    finally:
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


async def test_a_writer_of_another_process_waits_without_blocking_the_loop(
    sqlite_url: str,
) -> None:
    """Two Database objects on one file stand for two processes (each has its own
    in-process lock). While one holds the write lock, the other's write waits for it,
    its BEGIN retried on asyncio sleeps, and the event loop keeps running meanwhile."""
    first, second = Database(sqlite_url), Database(sqlite_url)
    held = asyncio.Event()
    ticks = 0
    order: list[str] = []

    async def holder() -> None:
        async with first.write() as conn:
            await conn.execute(text("CREATE TABLE log (who TEXT)"))
            held.set()
            await asyncio.sleep(0.3)
            order.append("first")
            await conn.execute(text("INSERT INTO log VALUES ('first')"))

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    holding = asyncio.create_task(holder())
    ticking = asyncio.create_task(ticker())
    try:
        await held.wait()
        ticks = 0
        async with second.write() as conn:
            order.append("second")
            await conn.execute(text("INSERT INTO log VALUES ('second')"))
        await holding
        # The loop ran ~30 ticks while the second writer waited ~0.3 s for the lock; a
        # writer waiting in SQLite's busy handler on the loop's thread would allow none.
        assert ticks >= 10
        assert order == ["first", "second"]
        async with first.read() as conn:
            rows = (await conn.execute(text("SELECT who FROM log ORDER BY rowid"))).all()
        assert [r[0] for r in rows] == ["first", "second"]
    finally:
        ticking.cancel()
        await asyncio.gather(holding, ticking, return_exceptions=True)
        await first.dispose()
        await second.dispose()


async def test_a_writer_of_another_process_gives_up_as_locked_after_the_timeout(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_S", 0.1)
    first, second = Database(sqlite_url), Database(sqlite_url)
    try:
        async with _write_held(first):
            started = asyncio.get_running_loop().time()
            with pytest.raises(OperationalError, match="locked"):
                async with second.write():
                    pass
            assert asyncio.get_running_loop().time() - started < 2.0
        async with second.write() as conn:  # free again: the same handle writes
            assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        await first.dispose()
        await second.dispose()


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


async def test_inline_writers_checkpoint_the_wal_off_the_loop(sqlite_url: str) -> None:
    """Write connections do not checkpoint on commit (it would stall the loop); the
    Checkpointer does, in a thread, so the WAL is reused instead of growing."""
    db = Database(sqlite_url)
    assert db.checkpointer is not None
    # Often, but not after every commit: a WAL restarts (is reused from its start) only
    # when a write begins while no checkpoint is running, and one started after every
    # commit on a slow disk can still be running when each next write begins.
    db.checkpointer.interval_s = 0.02
    blob = "x" * 4096
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE pages (body TEXT)"))
        for _ in range(300):
            async with db.write() as conn:
                await conn.execute(text("INSERT INTO pages VALUES (:b)"), {"b": blob})
            await asyncio.sleep(0.002)
        async with db.write() as conn:
            autocheckpoint = await conn.scalar(text("PRAGMA wal_autocheckpoint"))
        assert autocheckpoint == 0
        assert db.checkpointer.runs >= 10
        wal_size = await asyncio.to_thread(os.path.getsize, db.checkpointer.path + "-wal")
        # 300 commits of a 4 KiB page each: ~1.3 MB of WAL if nothing moved it back.
        # The file keeps its largest extent, and how often the WAL restarts depends on
        # when each write finds no checkpoint running (seen: 449 KB once under a
        # loaded CI, ~200 KB usually): half of the unmoved size is the bound.
        assert wal_size < 650_000
    finally:
        await db.dispose()


async def test_a_wal_that_cannot_restart_is_emptied_once_past_its_bound(sqlite_url: str) -> None:
    """Readers overlapping every commit (point reads under load) keep SQLite from ever
    rewinding the WAL, so it grew without end; past ``max_wal_bytes`` the checkpointer
    empties it (TRUNCATE), holding writers off meanwhile, and nothing is lost."""
    db = Database(sqlite_url)
    assert db.checkpointer is not None
    db.checkpointer.interval_s = 0.01
    db.checkpointer.max_wal_bytes = 256 * 1024
    db.checkpointer.truncate_retry_s = 0.0
    blob = "x" * 4096
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE pages (body TEXT)"))
        writing = True

        async def read_all_along() -> None:
            # Point reads under load: one is open across nearly every commit.
            while writing:
                async with db.point_read() as reader:
                    await reader.scalar(text("SELECT count(*) FROM pages"))
                    await asyncio.sleep(0.003)

        readers = [asyncio.create_task(read_all_along()) for _ in range(2)]
        try:
            for _ in range(400):
                async with db.write() as conn:
                    await conn.execute(text("INSERT INTO pages VALUES (:b)"), {"b": blob})
                await asyncio.sleep(0.001)
        finally:
            writing = False
            await asyncio.gather(*readers)
        async with db.point_read() as reader:
            rows = await reader.scalar(text("SELECT count(*) FROM pages"))
        assert rows == 400
        assert db.checkpointer.truncations >= 1
        wal_size = await asyncio.to_thread(os.path.getsize, db.checkpointer.path + "-wal")
        # Without the bound: 3.4 MB of WAL here (every commit appends, none rewinds).
        assert wal_size < 800_000, wal_size
    finally:
        await db.dispose()


async def test_writers_of_two_processes_queue_on_the_writer_lock(sqlite_url: str) -> None:
    """The second process's writer waits on the flock (a thread the kernel wakes), not
    on SQLite's lock; it gets in right after the first commits."""
    first, second = Database(sqlite_url), Database(sqlite_url)
    assert first.writer_lock is not None
    assert second.writer_lock is not None
    held = asyncio.Event()
    released_at = 0.0

    async def holder() -> None:
        nonlocal released_at
        async with first.write() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER)"))
            held.set()
            await asyncio.sleep(0.2)
        released_at = asyncio.get_running_loop().time()

    task = asyncio.create_task(holder())
    try:
        await held.wait()
        async with second.write() as conn:
            entered_at = asyncio.get_running_loop().time()
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        await task
        assert second.writer_lock.waits == 1
        assert entered_at >= released_at
    finally:
        await asyncio.gather(task, return_exceptions=True)
        await first.dispose()
        await second.dispose()


async def test_a_writer_cancelled_while_waiting_leaves_no_lock_behind(sqlite_url: str) -> None:
    """Cancelled while its thread still waits for the flock: when the thread gets the
    lock nobody claims it, so it is let go, and a third process can write."""
    first, second, third = Database(sqlite_url), Database(sqlite_url), Database(sqlite_url)

    async def waiter() -> None:
        async with second.write():
            raise AssertionError("must not get in")

    try:
        async with _write_held(first):
            waiting = asyncio.create_task(waiter())
            await asyncio.sleep(0.1)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        async with asyncio.timeout(5):
            async with third.write() as conn:
                assert await conn.scalar(text("SELECT 1")) == 1
            async with second.write() as conn:  # and the cancelled one's process too
                assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        for db in (first, second, third):
            await db.dispose()


async def test_a_point_read_sees_the_last_commit_while_a_writer_holds_its_transaction(
    sqlite_url: str,
) -> None:
    """Point reads run inline on the loop's thread: they must never wait for a writer
    (WAL readers read the last committed state) nor touch aiosqlite's threads."""
    db = Database(sqlite_url)
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        held = asyncio.Event()
        release = asyncio.Event()

        async def writer() -> None:
            async with db.write() as conn:
                await conn.execute(text("INSERT INTO t VALUES (2)"))  # not yet committed
                held.set()
                await release.wait()

        task = asyncio.create_task(writer())
        await held.wait()
        try:
            async with asyncio.timeout(1), db.point_read() as conn:
                assert await conn.scalar(text("SELECT sum(v) FROM t")) == 1
                # The inline driver, not a connection that hands calls to a thread.
                raw = await conn.get_raw_connection()
                assert isinstance(raw.driver_connection, sqlite3.Connection)
        finally:
            release.set()
            await task
        async with db.point_read() as conn:
            assert await conn.scalar(text("SELECT sum(v) FROM t")) == 3
    finally:
        await db.dispose()


async def test_a_result_stays_readable_after_its_inline_read_ended(sqlite_url: str) -> None:
    """Code written for AsyncConnection may read a result after its block: the inline
    connections' cursors read a statement's rows when it runs, as the asyncio drivers
    do, even when its connection was closed meanwhile (two reads at once, one kept)."""
    db = Database(sqlite_url, pool_size=1)
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (1), (2), (3)"))
        gate = asyncio.Event()

        async def read() -> Any:
            async with db.point_read() as conn:
                result = await conn.execute(text("SELECT v FROM t ORDER BY v"))
                await gate.wait()
            return result

        readers = [asyncio.create_task(read()) for _ in range(2)]
        await asyncio.sleep(0.01)
        gate.set()
        results = await asyncio.gather(*readers)
        async with db.write() as conn:
            await conn.execute(text("DELETE FROM t"))
        assert [[row.v for row in result] for result in results] == [[1, 2, 3]] * 2
    finally:
        await db.dispose()


async def test_inline_connections_are_kept_and_a_failed_write_leaves_nothing_open(
    sqlite_url: str,
) -> None:
    db = Database(sqlite_url, pool_size=3)
    assert db.inline_reads is not None
    assert db.inline_writes is not None
    checkouts = {"reads": 0, "writes": 0}
    for name, engine in (("reads", db.inline_reads), ("writes", db.inline_writes)):
        event.listen(
            engine,
            "checkout",
            lambda *_a, name=name: checkouts.__setitem__(name, checkouts[name] + 1),
        )
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))

        async def read_while_others_read(gate: asyncio.Event) -> int:
            async with db.point_read() as conn:
                await gate.wait()  # all five hold a connection at once
                return int(await conn.scalar(text("SELECT count(*) FROM t")))

        gate = asyncio.Event()
        readers = [asyncio.create_task(read_while_others_read(gate)) for _ in range(5)]
        await asyncio.sleep(0.01)
        gate.set()
        assert await asyncio.gather(*readers) == [0] * 5
        assert checkouts["reads"] == 5  # five at once: five connections
        for _ in range(50):
            async with db.point_read() as conn:
                await conn.scalar(text("SELECT count(*) FROM t"))
        assert checkouts["reads"] == 5  # kept (up to pool_size), not checked out again

        async def failing_write() -> None:
            async with db.write() as conn:
                await conn.execute(text("INSERT INTO t VALUES (1)"))
                raise RuntimeError("the caller fails mid-transaction")

        with pytest.raises(RuntimeError):
            await failing_write()
        for _ in range(20):
            async with db.write() as conn:
                await conn.execute(text("INSERT INTO t VALUES (2)"))
        assert checkouts["writes"] == 1  # one write connection, kept throughout
        async with db.point_read() as conn:
            # The failed transaction's row is not there; the kept connection's next
            # transactions committed.
            assert await conn.scalar(text("SELECT count(*) FROM t WHERE v = 1")) == 0
            assert await conn.scalar(text("SELECT count(*) FROM t WHERE v = 2")) == 20
    finally:
        await db.dispose()


async def test_a_point_read_begins_at_its_first_statement_and_reads_one_snapshot(
    sqlite_url: str,
) -> None:
    db = Database(sqlite_url)
    assert db.inline_reads is not None
    begins: list[int] = []
    event.listen(db.inline_reads, "begin", lambda _conn: begins.append(1))
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        async with db.point_read():
            pass  # answered without the database (a cache): no transaction at all
        assert begins == []
        async with db.point_read() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM t")) == 1
            async with db.write() as writer:  # commits while the read is open
                await writer.execute(text("INSERT INTO t VALUES (2)"))
            # The same transaction: the snapshot of its first statement.
            assert await conn.scalar(text("SELECT count(*) FROM t")) == 1
        assert begins == [1]
        async with db.point_read() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM t")) == 2
    finally:
        await db.dispose()
