"""Group commit: concurrent write units share transactions on SQLite, and each unit's
outcome is the one it has in a serial order of the units."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.store.db import Database
from vidpipe.store.group_commit import GroupCommit

pytestmark = pytest.mark.timeout(60)


class Full(Exception):
    pass


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    async with database.write() as conn:
        await conn.execute(text("CREATE TABLE gc_rows (name VARCHAR(40) PRIMARY KEY)"))
    yield database
    await database.dispose()


async def _rows(db: Database) -> list[str]:
    async with db.read() as conn:
        return sorted(r[0] for r in await conn.execute(text("SELECT name FROM gc_rows")))


def _insert(name: str) -> Callable[[AsyncConnection], Awaitable[str]]:
    async def unit(conn: AsyncConnection) -> str:
        await conn.execute(text("INSERT INTO gc_rows VALUES (:n)"), {"n": name})
        return name

    return unit


async def test_concurrent_units_share_transactions_on_sqlite(db: Database) -> None:
    writes = GroupCommit(db)
    names = [f"r{i}" for i in range(40)]
    assert await asyncio.gather(*(writes.run(_insert(n)) for n in names)) == names
    assert await _rows(db) == sorted(names)
    if db.is_sqlite:
        assert writes.transactions < 10  # 40 units: a first one alone, then the rest
    else:
        assert writes.transactions == 40  # PostgreSQL: each unit its own transaction


async def test_a_failing_unit_fails_alone(db: Database) -> None:
    writes = GroupCommit(db)

    async def broken(conn: AsyncConnection) -> str:
        await conn.execute(text("INSERT INTO gc_rows VALUES ('broken')"))
        raise ValueError("no")

    units = [_insert("a"), _insert("b"), broken, _insert("c"), _insert("d")]
    results = await asyncio.gather(*(writes.run(u) for u in units), return_exceptions=True)
    assert results[:2] == ["a", "b"]
    assert isinstance(results[2], ValueError)
    assert results[3:] == ["c", "d"]
    assert await _rows(db) == ["a", "b", "c", "d"]  # nothing of the broken unit


async def test_a_refusal_is_decided_on_what_was_committed_before_it(db: Database) -> None:
    """Room for 3: of 12 concurrent units, 3 commit and 9 are refused, as if one
    after the other, although they ran in shared, rolled back and retried batches."""
    writes = GroupCommit(db)

    def bounded(name: str) -> Callable[[AsyncConnection], Awaitable[str]]:
        async def unit(conn: AsyncConnection) -> str:
            await db.lock_for(conn, "gc_rows")  # PostgreSQL: as admission does
            if await conn.scalar(text("SELECT count(*) FROM gc_rows")) >= 3:
                raise Full(name)
            await conn.execute(text("INSERT INTO gc_rows VALUES (:n)"), {"n": name})
            return name

        return unit

    results = await asyncio.gather(
        *(writes.run(bounded(f"r{i}")) for i in range(12)), return_exceptions=True
    )
    admitted = [r for r in results if isinstance(r, str)]
    assert len(admitted) == 3
    assert all(isinstance(r, Full) for r in results if not isinstance(r, str))
    assert await _rows(db) == sorted(admitted)


async def test_a_failed_begin_or_commit_runs_each_unit_alone(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = GroupCommit(db)
    real_write = db.write
    failures = iter([True])

    @asynccontextmanager
    async def flaky_write() -> AsyncIterator[AsyncConnection]:
        async with real_write() as conn:
            yield conn
            if next(failures, False):
                raise OperationalError("COMMIT", None, Exception("disk I/O error"))

    monkeypatch.setattr(db, "write", flaky_write)
    names = [f"r{i}" for i in range(6)]
    results = await asyncio.gather(*(writes.run(_insert(n)) for n in names), return_exceptions=True)
    # The first transaction failed: alone, its one unit fails; in a batch, every
    # unit is retried on its own and succeeds.
    ok = [r for r in results if isinstance(r, str)]
    assert await _rows(db) == sorted(ok)
    assert len(ok) >= 5


async def test_a_failed_transaction_of_one_unit_is_that_units_error(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = GroupCommit(db)
    real_write = db.write

    @asynccontextmanager
    async def failing_write() -> AsyncIterator[AsyncConnection]:
        async with real_write() as conn:
            yield conn
            raise OperationalError("COMMIT", None, Exception("disk I/O error"))

    monkeypatch.setattr(db, "write", failing_write)
    with pytest.raises(OperationalError, match="disk I/O error"):
        await writes.run(_insert("a"))
    monkeypatch.undo()
    assert await writes.run(_insert("b")) == "b"
    assert await _rows(db) == ["b"]
