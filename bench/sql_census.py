"""Census: database work per ``POST /v1/videos`` and per job through the worker loop.

Counts, independent of how busy the machine is: transactions, SQL statements (by verb
and table), new DBAPI connections, and on SQLite the calls handed to aiosqlite's
thread (each one a thread round trip costing tens of microseconds of CPU). Time-based
figures move with load; these do not, so they show what a change to src saved.

In one process: the real FastAPI app over an in-process ASGI transport with a real
API key (the whole request path, without sockets) for the POSTs, then a worker with
validation and derivatives off, as in orchestration.py, for the jobs.

    python bench/sql_census.py [--db sqlite|postgres] [--jobs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import aiosqlite.core
import httpx
from benchlib import clear_vidpipe_env, emit, exit_on_sigterm, scratch_database, scratch_dir
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import create_async_engine

from vidpipe.api.app import create_app
from vidpipe.config import Settings
from vidpipe.core.runtime import Runtime
from vidpipe.store import tenants as tenant_q
from vidpipe.store.schema import jobs

BODY = {"prompt": "bench", "seconds": 4, "size": "720x1280", "model": "instant/test"}
TERMINAL = ("completed", "failed", "canceled", "expired")
_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", re.IGNORECASE)


class Census:
    def __init__(self) -> None:
        self.statements: collections.Counter[str] = collections.Counter()
        self.transactions = 0
        self.connections = 0
        self.dbapi_calls = 0

    def snapshot(self) -> tuple[collections.Counter[str], int, int, int]:
        return (
            collections.Counter(self.statements),
            self.transactions,
            self.connections,
            self.dbapi_calls,
        )

    def since(self, before: tuple[collections.Counter[str], int, int, int], n: int) -> Any:
        statements, transactions, connections, calls = before
        delta = self.statements - statements
        return {
            "transactions": round((self.transactions - transactions) / n, 2),
            "statements": round(sum(delta.values()) / n, 2),
            "dbapi_thread_calls": round((self.dbapi_calls - calls) / n, 2),
            "new_connections": round((self.connections - connections) / n, 3),
            "by_statement": {k: round(v / n, 2) for k, v in sorted(delta.items())},
        }


def statement_kind(sql: str) -> str:
    words = sql.split()
    if not words:
        return "?"
    verb = words[0].upper()
    if verb in ("BEGIN", "COMMIT", "ROLLBACK"):
        return " ".join(w.upper() for w in words[:2])
    table = _TABLE.search(sql)
    if verb == "SELECT" and "pg_" in sql:
        return " ".join(words[:2])[:40]
    return f"{verb} {table.group(1) if table else '?'}"


def instrument(runtime: Runtime, census: Census) -> None:
    # SQLite files have two engines: reads on aiosqlite, writes inline (store/db.py).
    db = runtime.db
    for sync_engine in db.sync_engines():
        _count_on(sync_engine, census)
    # Thread hand-offs (aiosqlite's reads); the inline writer makes none.
    original = cast(Callable[..., Awaitable[Any]], aiosqlite.core.Connection._execute)

    async def counted(self: aiosqlite.core.Connection, fn: Any, *a: Any, **k: Any) -> Any:
        census.dbapi_calls += 1
        return await original(self, fn, *a, **k)

    aiosqlite.core.Connection._execute = counted  # type: ignore[method-assign]


def _count_on(engine: Any, census: Census) -> None:
    @event.listens_for(engine, "before_cursor_execute")
    def _statement(*args: Any) -> None:
        census.statements[statement_kind(str(args[2]))] += 1

    @event.listens_for(engine, "begin")
    def _begin(_conn: Any) -> None:
        census.transactions += 1

    @event.listens_for(engine.pool, "connect")
    def _connect(*_args: Any) -> None:
        census.connections += 1


async def wait_terminal(count: Callable[[], Coroutine[Any, Any, int]], total: int) -> None:
    deadline = time.monotonic() + 300
    while await count() < total:
        if time.monotonic() > deadline:
            raise TimeoutError("jobs did not finish in 300 s")
        await asyncio.sleep(0.05)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    clear_vidpipe_env()
    with scratch_dir("census") as home:
        async with scratch_database(args.db) as database_url:
            settings = Settings(
                home=home,
                database_url=database_url,
                instant_provider=True,
                derivatives=False,
                rate_limit_per_s=0,
            )
            runtime = await Runtime.open(settings)
            # Our own polling goes through a second engine, so it is not counted.
            watcher = create_async_engine(settings.resolved_database_url)

            async def terminal() -> int:
                async with watcher.connect() as conn:
                    value = await conn.scalar(
                        select(func.count()).select_from(jobs).where(jobs.c.status.in_(TERMINAL))
                    )
                    return int(value or 0)

            try:
                async with runtime.db.write() as conn:
                    tenant = await tenant_q.ensure_tenant(conn, "bench", time.time())
                    _record, key = await tenant_q.create_api_key(
                        conn, tenant.id, scope="user", name="bench", now=time.time()
                    )
                app = create_app(runtime)
                transport = httpx.ASGITransport(app=app)
                census = Census()
                instrument(runtime, census)
                async with httpx.AsyncClient(
                    transport=transport,
                    base_url="http://127.0.0.1",
                    headers={"Authorization": f"Bearer {key}"},
                ) as client:
                    for _ in range(args.warmup):  # caches: the key, prices, statements
                        response = await client.post("/v1/videos", json=BODY)
                        response.raise_for_status()
                    before = census.snapshot()
                    for _ in range(args.jobs):
                        response = await client.post("/v1/videos", json=BODY)
                        if response.status_code != 202:
                            raise RuntimeError(f"POST answered {response.status_code}")
                    per_post = census.since(before, args.jobs)
                total = args.warmup + args.jobs
                before = census.snapshot()
                worker = runtime.new_worker(validate=False)
                stop = asyncio.Event()
                task = asyncio.create_task(worker.run(stop))
                try:
                    await wait_terminal(terminal, total)
                finally:
                    stop.set()
                    await task
                per_job = census.since(before, total)
                per_job["step_actions"] = round(worker.steps_done / total, 2)
            finally:
                await watcher.dispose()
                await runtime.close()
    return {
        "bench": "sql_census",
        "db": args.db,
        "jobs": args.jobs,
        "per_post": per_post,
        "per_job_worker": per_job,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    exit_on_sigterm()
    emit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
