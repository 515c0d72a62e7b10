"""What ``POST /v1/videos`` costs the database: one write transaction, nothing read back.

The figures bench/sql_census.py reports, held here so a change that adds a round trip
to every request is noticed (see bench/README.md for why each one matters).
"""

from __future__ import annotations

import collections
from typing import Any

import pytest
from sqlalchemy import event

from tests.integration.conftest import Harness

pytestmark = pytest.mark.timeout(60)


def _statements(harness: Harness) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()

    def _count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        words = statement.split()
        if words[0] == "BEGIN" or words[1].startswith("pg_"):
            seen[" ".join(words[:2]).split("(")[0]] += 1
        else:
            seen[words[0]] += 1

    db = harness.runtime.db
    for engine in {db.engine, db.write_engine}:  # SQLite files: two engines
        event.listen(engine.sync_engine, "before_cursor_execute", _count)
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
    else:
        writes["SELECT pg_notify"] = 1  # wakes the workers
    assert dict(seen) == writes


async def test_the_answer_of_a_post_is_what_a_get_reads_back(harness: Harness) -> None:
    """The response is built from what the transaction wrote, not read back: it must
    agree with the stored job, reservations included."""
    created = await harness.create(model="instant/test")
    got = await harness.client.get(f"/v1/videos/{created['id']}", headers=harness.headers())
    assert got.json() == created
