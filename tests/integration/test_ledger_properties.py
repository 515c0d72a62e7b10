"""Property tests: any sequence of reserve / settle / release / credit / refund keeps the
budget counters and the prepaid balance equal to what the ledger says, never lets a
reservation or credit change take a balance below zero, and never lets held money
cross a budget ceiling."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select, update

from vidpipe.money import ledger
from vidpipe.money.reports import credit_balance, job_cost, job_costs
from vidpipe.store import migrate
from vidpipe.store.db import Database
from vidpipe.store.schema import attempts, budget_usage, jobs, steps, tenants
from vidpipe.store.schema import ledger as ledger_table

pytestmark = pytest.mark.timeout(300)

LIMIT = 1000
NOW = 1_900_000_000.0

operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(1, 400)),
        st.tuples(st.just("settle"), st.integers(0, 500)),
        st.tuples(st.just("release"), st.just(0)),
        st.tuples(st.just("credit"), st.integers(-300, 600)),
        st.tuples(st.just("refund"), st.just(0)),
    ),
    max_size=25,
)
serial = itertools.count()


async def _setup(db: Database, tenant: str, job: str, credits_mode: bool) -> None:
    async with db.write() as conn:
        await conn.execute(
            insert(tenants).values(
                id=tenant,
                name=tenant,
                created_at=NOW,
                billing_mode="credits" if credits_mode else "budget",
            )
        )
        await conn.execute(
            insert(jobs).values(
                id=job,
                tenant_id=tenant,
                kind="video",
                status="in_progress",
                progress=0,
                model="m/x",
                prompt="p",
                seconds=1,
                size="1x1",
                params={},
                metadata={},
                created_at=NOW,
            )
        )
        await conn.execute(
            insert(steps).values(
                id=f"{job}_s",
                job_id=job,
                tenant_id=tenant,
                name="clip",
                kind="clip",
                state="active",
                provider="m",
                model="x",
                params={},
                depends_on=[],
                fallbacks=[],
                weight=1.0,
                progress=0,
                run_at=NOW,
                lease_token=0,
                attempt_count=0,
                poll_errors=0,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        await ledger.set_budget(db, conn, ledger.tenant_scope(tenant), "day", LIMIT, NOW)


async def _apply(
    db: Database, tenant: str, job: str, n: int, op: str, amount: int, held: list[tuple[str, int]]
) -> None:
    async with db.write() as conn:
        if op == "reserve":
            attempt_id = f"{job}_{n}"
            await conn.execute(
                insert(attempts).values(
                    id=attempt_id,
                    step_id=f"{job}_s",
                    job_id=job,
                    number=n,
                    state="submitted",
                    idempotency_key=attempt_id,
                    provider="m",
                    model="x",
                    created_at=NOW,
                    tenant_id=tenant,
                    reserved_micros=amount,
                    reserved_at=NOW,
                    money_state="reserved",
                )
            )
            await ledger.reserve(
                db, conn, ledger.Charge(tenant, job, f"{job}_s", attempt_id), amount, NOW
            )
            held.append((attempt_id, amount))
        elif op in ("settle", "release") and held:
            attempt_id, _reserved = held.pop(0)
            charge = ledger.Charge(tenant, job, f"{job}_s", attempt_id)
            cost = amount if op == "settle" else None
            assert await ledger.finish_attempt(conn, attempt_id, charge, cost, NOW)
            # A second finish (a retry, the reconciler) changes nothing.
            assert not await ledger.finish_attempt(conn, attempt_id, charge, 7, NOW)
        elif op == "credit":
            await ledger.add_credit(db, conn, tenant, amount, NOW, "test")
        elif op == "refund":
            await ledger.refund_job(db, conn, job, NOW, "test")


async def _check(db: Database, tenant: str, job: str, credits_mode: bool) -> None:
    async with db.read() as conn:
        # The one-job reading every public event makes agrees with the many-job one.
        many = await job_costs(conn, [job, "job_missing"])
        assert await job_cost(conn, job) == many.get(job, (0, 0))
        assert await job_cost(conn, "job_missing") == (0, 0) == many.get("job_missing", (0, 0))
        sums = {
            row[0]: int(row[1])
            for row in await conn.execute(
                select(ledger_table.c.kind, func.sum(ledger_table.c.amount_micros))
                .where(ledger_table.c.tenant_id == tenant)
                .group_by(ledger_table.c.kind)
            )
        }
        usage = (
            await conn.execute(
                select(budget_usage.c.reserved_micros, budget_usage.c.spent_micros).where(
                    budget_usage.c.scope == ledger.tenant_scope(tenant)
                )
            )
        ).first()
        balance = await credit_balance(conn, tenant)
    get = sums.get
    reserved, spent = (int(usage[0]), int(usage[1])) if usage else (0, 0)
    assert reserved == get("reserve", 0) - get("release", 0) - get("settle", 0) + get("adjust", 0)
    assert spent == get("settle", 0)
    assert reserved >= 0
    # Only what providers actually charged beyond a reservation may pass the ceiling.
    assert reserved + spent <= LIMIT + get("adjust", 0)
    if credits_mode:
        expected = (
            get("credit", 0)
            - get("reserve", 0)
            + get("release", 0)
            - get("adjust", 0)
            + get("refund", 0)
        )
        assert (balance or 0) == expected
        if not get("adjust", 0):
            assert (balance or 0) >= 0


async def _run(url: str, sequence: list[tuple[str, int]], credits_mode: bool) -> None:
    db = Database(url)
    tenant = f"t{next(serial)}"
    job = f"job_{tenant}"
    try:
        await _setup(db, tenant, job, credits_mode)
        held: list[tuple[str, int]] = []
        for n, (op, amount) in enumerate(sequence):
            # A refusal rolls the whole transaction back; the books must still add up.
            with contextlib.suppress(ledger.BudgetExceeded, ledger.InsufficientCredits):
                await _apply(db, tenant, job, n, op, amount, held)
            await _check(db, tenant, job, credits_mode)
    finally:
        await db.dispose()


@pytest.mark.parametrize("credits_mode", [False, True])
def test_random_sequences_keep_the_books(tmp_path: Path, credits_mode: bool) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrate.upgrade(url)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(operations)
    def run(sequence: list[tuple[str, int]]) -> None:
        asyncio.run(_run(url, sequence, credits_mode))

    run()


def test_one_jobs_cost_counts_its_hold_and_its_attempts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hold.db'}"
    migrate.upgrade(url)

    async def run() -> None:
        db = Database(url)
        try:
            await _setup(db, "th", "job_th", False)
            async with db.write() as conn:
                await conn.execute(
                    update(jobs).where(jobs.c.id == "job_th").values(held_micros=500)
                )
            await _apply(db, "th", "job_th", 1, "reserve", 400, held := [])
            await _apply(db, "th", "job_th", 2, "reserve", 300, held)
            await _apply(db, "th", "job_th", 3, "settle", 250, held)
            async with db.read() as conn:
                # Held 500, reserved 300 (the second attempt), settled 250 (the first).
                assert await job_cost(conn, "job_th") == (800, 250)
                assert (await job_costs(conn, ["job_th"]))["job_th"] == (800, 250)
        finally:
            await db.dispose()

    asyncio.run(run())
