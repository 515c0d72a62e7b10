"""Reservations, settlements, releases, credits and refunds: the ledger and the
counters it drives, written in the caller's transaction.

Signs: ``reserve`` holds money (counted against budgets and taken from a prepaid
balance); ``settle`` records what was spent; ``release`` gives back what was held and
not spent; ``adjust`` records spending above what was held; ``credit`` adds prepaid
balance; ``refund`` gives back spent money. Every reservation ends as settle plus
release of its remainder (or adjust of the excess), or release of all of it. So, at
any time: held = reserve - release - settle + adjust; spent = settle; prepaid
balance = credit - reserve + release - adjust + refund.

Budgets are checked with one guarded UPDATE per (scope, period): the update matches
only if the new total stays within the limit, so concurrent reservations on SQLite or
PostgreSQL can never take spending over a ceiling; if any budget would be crossed,
the exception rolls the whole transaction back and nothing is reserved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.errors import VidpipeError
from vidpipe.money.periods import PERIODS, Period, period_start
from vidpipe.money.units import to_usd
from vidpipe.store.db import Database
from vidpipe.store.schema import (
    attempts,
    budget_alerts,
    budget_usage,
    budgets,
    credit_accounts,
    jobs,
    ledger,
    tenants,
)

ALERT_THRESHOLDS = (80, 100)
GLOBAL = "global"


def tenant_scope(tenant_id: str) -> str:
    return f"tenant:{tenant_id}"


class BudgetExceeded(VidpipeError):
    code = "budget_exceeded"
    http_status = 402

    def __init__(self, message: str, *, scope: str, period: str) -> None:
        super().__init__(message)
        self.scope = scope
        self.period = period


class InsufficientCredits(VidpipeError):
    code = "insufficient_credits"
    http_status = 402


@dataclass(frozen=True)
class Crossing:
    """A budget that just crossed an alert threshold (first time this period)."""

    scope: str
    period: str
    threshold: int
    used_micros: int
    limit_micros: int


@dataclass(frozen=True)
class Charge:
    tenant_id: str
    job_id: str | None
    step_id: str | None
    attempt_id: str | None
    provider: str | None = None
    model: str | None = None


async def _limits(conn: AsyncConnection, scopes: Sequence[str]) -> list[tuple[str, str, int]]:
    rows = await conn.execute(
        select(budgets.c.scope, budgets.c.period, budgets.c.limit_micros).where(
            budgets.c.scope.in_(scopes)
        )
    )
    return [(r[0], r[1], int(r[2])) for r in rows]


# The statements every settled job runs, built once (see store/jobs.py): executed with
# a parameter dict they are compiled once, where building them per call cost more
# CPU than the database spends on them.
_INSERT_LEDGER = insert(ledger)
_BILLING_MODE = select(tenants.c.billing_mode).where(tenants.c.id == bindparam("tenant_id"))
_UNHOLD_BUDGETS = (
    update(budget_usage)
    .where(
        budget_usage.c.scope.in_([bindparam("_tenant_scope"), bindparam("_global_scope")]),
        budget_usage.c.period == bindparam("_period"),
        budget_usage.c.period_start == bindparam("_start"),
    )
    .values(
        # A budget created after the reservation never counted it: never below 0.
        reserved_micros=case(
            (
                budget_usage.c.reserved_micros >= bindparam("_reserved"),
                budget_usage.c.reserved_micros - bindparam("_reserved"),
            ),
            else_=0,
        ),
        spent_micros=budget_usage.c.spent_micros + bindparam("_spent"),
    )
)
_REFUND_CREDITS = (
    update(credit_accounts)
    .where(credit_accounts.c.tenant_id == bindparam("_tenant_id"))
    .values(
        balance_micros=credit_accounts.c.balance_micros + bindparam("_delta"),
        updated_at=bindparam("_now"),
    )
)
_FINISH_ATTEMPT = (
    update(attempts)
    .where(attempts.c.id == bindparam("_attempt_id"), attempts.c.money_state == "reserved")
    .returning(
        attempts.c.reserved_micros,
        func.coalesce(attempts.c.reserved_at, attempts.c.created_at),
    )
)
_JOB_HOLD = select(jobs.c.held_micros, jobs.c.held_at).where(
    jobs.c.id == bindparam("job_id"), jobs.c.held_micros > 0
)
_JOB_HOLD_LOCKED = _JOB_HOLD.with_for_update()
_CLEAR_JOB_HOLD = update(jobs).where(jobs.c.id == bindparam("_job_id"))


async def _log(
    conn: AsyncConnection, charge: Charge, kind: str, amount: int, now: float, note: str = ""
) -> None:
    await conn.execute(
        _INSERT_LEDGER,
        {
            "tenant_id": charge.tenant_id,
            "job_id": charge.job_id,
            "step_id": charge.step_id,
            "attempt_id": charge.attempt_id,
            "kind": kind,
            "amount_micros": amount,
            "provider": charge.provider,
            "model": charge.model,
            "note": note or None,
            "created_at": now,
        },
    )


async def billing_mode(conn: AsyncConnection, tenant_id: str) -> str:
    mode = await conn.scalar(_BILLING_MODE, {"tenant_id": tenant_id})
    return str(mode or "budget")


async def reserve(
    db: Database,
    conn: AsyncConnection,
    charge: Charge,
    amount: int,
    now: float,
    *,
    job_max_micros: int | None = None,
) -> list[Crossing]:
    """Hold ``amount`` against every budget of the tenant and the installation, the
    job's maximum and (credits mode) the prepaid balance. Raises BudgetExceeded or
    InsufficientCredits, leaving the caller to roll back."""
    if job_max_micros is not None and charge.job_id is not None:
        committed = await job_committed_micros(conn, charge.job_id)
        if committed + amount > job_max_micros:
            raise BudgetExceeded(
                f"this attempt (${to_usd(amount)}) would take the video over its maximum "
                f"cost of ${to_usd(job_max_micros)} (${to_usd(committed)} committed)",
                scope="job",
                period="job",
            )
    crossings: list[Crossing] = []
    for scope, period, limit in await _limits(conn, [tenant_scope(charge.tenant_id), GLOBAL]):
        start = period_start(period, now)  # type: ignore[arg-type]
        await db.insert_ignore(
            conn, budget_usage, {"scope": scope, "period": period, "period_start": start}
        )
        key = (
            (budget_usage.c.scope == scope)
            & (budget_usage.c.period == period)
            & (budget_usage.c.period_start == start)
        )
        result = await conn.execute(
            update(budget_usage)
            .where(
                key,
                budget_usage.c.reserved_micros + budget_usage.c.spent_micros + amount <= limit,
            )
            .values(reserved_micros=budget_usage.c.reserved_micros + amount)
            .returning(budget_usage.c.reserved_micros + budget_usage.c.spent_micros)
        )
        used = result.scalar()
        if used is None:
            raise BudgetExceeded(
                f"the {period}ly budget of {scope} (${to_usd(limit)}) has no room for "
                f"${to_usd(amount)}",
                scope=scope,
                period=period,
            )
        crossings += await _crossed(db, conn, scope, period, start, int(used), limit, now)
    if await billing_mode(conn, charge.tenant_id) == "credits":
        result = await conn.execute(
            update(credit_accounts)
            .where(
                credit_accounts.c.tenant_id == charge.tenant_id,
                credit_accounts.c.balance_micros >= amount,
            )
            .values(balance_micros=credit_accounts.c.balance_micros - amount, updated_at=now)
        )
        if result.rowcount != 1:
            raise InsufficientCredits(
                f"the prepaid balance does not cover ${to_usd(amount)}",
            )
    await _log(conn, charge, "reserve", amount, now)
    return crossings


async def _crossed(
    db: Database,
    conn: AsyncConnection,
    scope: str,
    period: str,
    start: float,
    used: int,
    limit: int,
    now: float,
) -> list[Crossing]:
    found = []
    for threshold in ALERT_THRESHOLDS:
        if limit > 0 and used * 100 >= limit * threshold:
            inserted = await db.insert_ignore(
                conn,
                budget_alerts,
                {
                    "scope": scope,
                    "period": period,
                    "period_start": start,
                    "threshold": threshold,
                    "sent_at": now,
                },
            )
            if inserted:
                found.append(Crossing(scope, period, threshold, used, limit))
    return found


async def _unhold(
    conn: AsyncConnection, charge: Charge, reserved: int, spent: int, reserved_at: float, now: float
) -> None:
    """Move a reservation made at ``reserved_at`` to ``spent`` (may be 0) in every
    budget period it was counted in, and in credits mode refund the unspent part."""
    for period in PERIODS:
        await conn.execute(
            _UNHOLD_BUDGETS,
            {
                "_tenant_scope": tenant_scope(charge.tenant_id),
                "_global_scope": GLOBAL,
                "_period": period,
                "_start": period_start(period, reserved_at),
                "_reserved": reserved,
                "_spent": spent,
            },
        )
    if await billing_mode(conn, charge.tenant_id) == "credits":
        await conn.execute(
            _REFUND_CREDITS,
            {"_tenant_id": charge.tenant_id, "_delta": reserved - spent, "_now": now},
        )


async def finish_attempt(
    conn: AsyncConnection, attempt_id: str, charge: Charge, cost: int | None, now: float
) -> bool:
    """Settle an attempt's reservation to ``cost`` (None: release it all, unbilled).

    Idempotent: only an attempt still ``reserved`` is changed; returns whether it was.
    """
    row = (
        await conn.execute(
            _FINISH_ATTEMPT,
            {
                "_attempt_id": attempt_id,
                "money_state": "settled" if cost is not None else "released",
                "cost_micros": cost if cost is not None else 0,
            },
        )
    ).first()
    if row is None:
        return False
    reserved, reserved_at = int(row[0]), float(row[1])
    spent = cost or 0
    await _unhold(conn, charge, reserved, spent, reserved_at, now)
    if cost is not None:
        await _log(conn, charge, "settle", spent, now)
    if reserved > spent:
        await _log(conn, charge, "release", reserved - spent, now)
    elif spent > reserved:
        # The provider charged more than was held: recorded, so the books still add up.
        await _log(conn, charge, "adjust", spent - reserved, now, "cost above reservation")
    return True


async def job_committed_micros(conn: AsyncConnection, job_id: str) -> int:
    """Held or spent by a job's attempts so far."""
    value = await conn.scalar(
        select(
            func.coalesce(
                func.sum(
                    case(
                        (attempts.c.money_state == "reserved", attempts.c.reserved_micros),
                        else_=func.coalesce(attempts.c.cost_micros, 0),
                    )
                ),
                0,
            )
        ).where(attempts.c.job_id == job_id)
    )
    return int(value or 0)


async def add_credit(
    db: Database, conn: AsyncConnection, tenant_id: str, amount: int, now: float, note: str
) -> int:
    """Add (or, negative, take) prepaid balance, with its audit entry; the new balance."""
    await db.insert_ignore(
        conn,
        credit_accounts,
        {"tenant_id": tenant_id, "balance_micros": 0, "updated_at": now},
    )
    result = await conn.execute(
        update(credit_accounts)
        .where(
            credit_accounts.c.tenant_id == tenant_id,
            credit_accounts.c.balance_micros + amount >= 0,
        )
        .values(balance_micros=credit_accounts.c.balance_micros + amount, updated_at=now)
        .returning(credit_accounts.c.balance_micros)
    )
    balance = result.scalar()
    if balance is None:
        raise InsufficientCredits("the balance cannot go below zero")
    await _log(conn, Charge(tenant_id, None, None, None), "credit", amount, now, note)
    return int(balance)


async def refund_job(
    db: Database, conn: AsyncConnection, job_id: str, now: float, note: str
) -> int:
    """Give back what a job spent (credits mode: to the balance). Idempotent."""
    tenant_id = await conn.scalar(select(jobs.c.tenant_id).where(jobs.c.id == job_id))
    if tenant_id is None:
        return 0
    refunded = await conn.scalar(
        select(func.coalesce(func.sum(ledger.c.amount_micros), 0)).where(
            ledger.c.job_id == job_id, ledger.c.kind == "refund"
        )
    )
    spent = await conn.scalar(
        select(func.coalesce(func.sum(ledger.c.amount_micros), 0)).where(
            ledger.c.job_id == job_id, ledger.c.kind == "settle"
        )
    )
    amount = int(spent or 0) - int(refunded or 0)
    if amount <= 0:
        return 0
    charge = Charge(str(tenant_id), job_id, None, None)
    await _log(conn, charge, "refund", amount, now, note)
    if await billing_mode(conn, str(tenant_id)) == "credits":
        await db.insert_ignore(
            conn, credit_accounts, {"tenant_id": tenant_id, "balance_micros": 0, "updated_at": now}
        )
        await conn.execute(
            update(credit_accounts)
            .where(credit_accounts.c.tenant_id == tenant_id)
            .values(balance_micros=credit_accounts.c.balance_micros + amount, updated_at=now)
        )
    return amount


async def set_budget(
    db: Database, conn: AsyncConnection, scope: str, period: Period, limit: int | None, now: float
) -> None:
    """Set (or with None remove) a budget; takes effect for the current period at once."""
    await conn.execute(budgets.delete().where(budgets.c.scope == scope, budgets.c.period == period))
    if limit is not None:
        await conn.execute(
            insert(budgets).values(scope=scope, period=period, limit_micros=limit, updated_at=now)
        )


async def release_job_hold(
    db: Database, conn: AsyncConnection, job_id: str, charge: Charge, now: float
) -> int:
    """Give back what was reserved when the job was admitted. Idempotent."""
    query = _JOB_HOLD_LOCKED if db.is_postgres else _JOB_HOLD
    row = (await conn.execute(query, {"job_id": job_id})).first()
    if row is None:
        return 0
    held, held_at = int(row[0]), float(row[1] or now)
    await conn.execute(_CLEAR_JOB_HOLD, {"_job_id": job_id, "held_micros": 0})
    await _unhold(conn, charge, held, 0, held_at, now)
    await _log(conn, charge, "release", held, now, "admission hold")
    return held
