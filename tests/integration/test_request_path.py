"""What ``POST /v1/videos`` costs the database: one write transaction, nothing read back.

The figures bench/sql_census.py reports, held here so a change that adds a round trip
to every request is noticed (see bench/README.md for why each one matters).
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from typing import Any

import pytest
from sqlalchemy import event

from tests.integration.conftest import Harness

pytestmark = pytest.mark.timeout(60)


def _statements(harness: Harness) -> collections.Counter[str]:
    """What the database is asked from now on: on SQLite, what SQLite itself runs (its
    trace callback sees the BEGIN the dialect issues, which no cursor event does)."""
    seen: collections.Counter[str] = collections.Counter()

    def _count(statement: str) -> None:
        words = statement.split()
        if words[0] in ("BEGIN", "COMMIT", "ROLLBACK") or words[1].startswith("pg_"):
            seen[" ".join(words[:2]).split("(")[0]] += 1
        else:
            seen[words[0]] += 1

    db = harness.runtime.db
    if not db.is_sqlite:
        for engine in db.sync_engines():
            event.listen(engine, "before_cursor_execute", lambda _c, _cur, sql, *_a: _count(sql))
        return seen
    # Connections opened from now on are traced; the kept ones are let go so that the
    # next use opens (and traces) a new one.
    for engine in db.sync_engines():
        event.listen(engine, "connect", lambda dbapi, _rec: dbapi.set_trace_callback(_count))
    db.release_held_connections()
    return seen


async def test_a_warm_post_is_one_write_transaction_of_inserts(harness: Harness) -> None:
    body = {"model": "instant/test", "seconds": 1, "size": "640x360"}
    await harness.create(**body)  # warms the key, tenant, price and endpoint caches
    seen = _statements(harness)
    created = await harness.create(**body)
    assert created["status"] == "queued"
    assert created["cost"]["reserved"] == 0
    writes = {"INSERT": 3}  # the job, its step, its video.queued event
    if harness.runtime.db.is_sqlite:
        writes["BEGIN IMMEDIATE"] = 1
        writes["COMMIT"] = 1
    else:
        writes["SELECT pg_notify"] = 1  # wakes the workers
    assert dict(seen) == writes


async def test_the_answer_of_a_post_is_what_a_get_reads_back(harness: Harness) -> None:
    """The response is built from what the transaction wrote, not read back: it must
    agree with the stored job, reservations included."""
    created = await harness.create(model="instant/test")
    got = await harness.client.get(f"/v1/videos/{created['id']}", headers=harness.headers())
    assert got.json() == created


async def test_a_workers_job_reads_by_key_without_thread_hand_offs(harness: Harness) -> None:
    """The worker's reads of a step, its attempt, its job and its lease are point reads:
    inline on SQLite, where each aiosqlite call is a round trip to another thread (the
    largest single cost of a job, bench/README.md session 4)."""
    db = harness.runtime.db
    if not db.is_sqlite:
        pytest.skip("PostgreSQL has one engine")
    begins: collections.Counter[str] = collections.Counter()
    assert db.inline_reads is not None
    for name, engine in (("threaded", db.engine.sync_engine), ("point", db.inline_reads)):
        event.listen(
            engine,
            "begin",
            lambda _c, name=name: begins.__setitem__(name, begins[name] + 1),
        )
    jobs = 20
    created = [await harness.create(model="instant/test") for _ in range(jobs)]
    stop = asyncio.Event()
    worker = harness.runtime.new_worker(validate=False)
    started = time.monotonic()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(60):
            while worker.steps_done < 2 * jobs:  # submit, then poll + deliver
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
        harness.runtime.workers.remove(worker)
    elapsed = time.monotonic() - started
    counted = dict(begins)
    for job in created:
        got = await harness.client.get(f"/v1/videos/{job['id']}", headers=harness.headers())
        assert got.json()["status"] == "completed"
    # Per job: the attempt before each of its two actions, the lease check with the
    # manifest's reads, and more (reads a cache answers begin no transaction).
    assert counted.get("point", 0) >= 3 * jobs, counted
    # Left on aiosqlite, by time and not by job: the worker's start (the reconciler's
    # sweep, ~7 reads) and one heartbeat per lease_s / 3. Before, ~7 reads a job.
    heartbeats = math.ceil(elapsed / (harness.runtime.settings.lease_s / 3))
    assert counted.get("threaded", 0) <= 10 + heartbeats, (counted, elapsed)


async def test_a_workers_jobs_build_no_statement_of_their_own(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statements a job's steps run (everything under ``StepExecutor.run``) are
    built once, at import: building one per call (``insert(t).values(...)``,
    ``update(t).where(...)``) cost more CPU than running it (bench/README.md, session
    5). The worker's loop (claims per batch, timers) is not per job and not counted."""
    import sys

    from sqlalchemy.sql import dml, selectable

    built: collections.Counter[str] = collections.Counter()
    for cls in (dml.Insert, dml.Update, dml.Delete, selectable.Select):
        original = cls.__init__

        def counting(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> None:
            caller, frame = None, sys._getframe(1)
            while frame is not None:
                code = frame.f_code
                if caller is None and "vidpipe" in code.co_filename:
                    caller = f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_name}"
                if code.co_name == "run" and code.co_filename.endswith("core/executor.py"):
                    built[caller or "?"] += 1
                    break
                frame = frame.f_back
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", counting)
    jobs = 20
    for _ in range(jobs):
        await harness.create(model="instant/test")
    stop = asyncio.Event()
    worker = harness.runtime.new_worker(validate=False)
    built.clear()  # what creating the jobs built is the API's, counted elsewhere
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(60):
            while worker.steps_done < 2 * jobs:
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
        harness.runtime.workers.remove(worker)
    # Each guarded transition is built once per target state, on first use: a few.
    assert sum(built.values()) <= 8, built
