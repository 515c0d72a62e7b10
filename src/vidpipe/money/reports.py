"""Reading money back: per-job cost summaries, budgets with what is left, usage reports."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.money.ledger import GLOBAL, tenant_scope
from vidpipe.money.periods import Period, period_end, period_start
from vidpipe.money.units import to_usd
from vidpipe.store.schema import (
    attempts,
    budget_usage,
    budgets,
    credit_accounts,
    jobs,
    ledger,
    tenants,
)


@dataclass(frozen=True)
class JobCost:
    estimated: int
    reserved: int
    actual: int

    def to_json(self) -> dict[str, Any]:
        return {
            "estimated": to_usd(self.estimated),
            "reserved": to_usd(self.reserved),
            "actual": to_usd(self.actual),
            "currency": "USD",
        }


# A job's attempts' money: still reserved, and settled (what providers charged).
_RESERVED_SUM = func.sum(
    case((attempts.c.money_state == "reserved", attempts.c.reserved_micros), else_=0)
)
_SETTLED_SUM = func.sum(
    case((attempts.c.money_state == "settled", attempts.c.cost_micros), else_=0)
)
# Built once: lists of videos read their costs (the statement's construction cost more
# than running it).
_ATTEMPT_COSTS = (
    select(attempts.c.job_id, _RESERVED_SUM, _SETTLED_SUM)
    .where(attempts.c.job_id.in_(bindparam("job_ids", expanding=True)))
    .group_by(attempts.c.job_id)
)
_JOB_HOLDS = select(jobs.c.id, jobs.c.held_micros).where(
    jobs.c.id.in_(bindparam("job_ids", expanding=True)), jobs.c.held_micros > 0
)


# One job's (reserved, actual) in one statement: every public event of a job reads it.
# The sums come back NULL for a job without attempts; the hold is NULL for no job.
_ONE_JOB_COSTS = select(
    _RESERVED_SUM,
    _SETTLED_SUM,
    select(jobs.c.held_micros).where(jobs.c.id == bindparam("job_id")).scalar_subquery(),
).where(attempts.c.job_id == bindparam("job_id"))


async def job_cost(conn: AsyncConnection, job_id: str) -> tuple[int, int]:
    """(reserved, actual) micro-dollars of one job, as ``job_costs`` gives them."""
    row = (await conn.execute(_ONE_JOB_COSTS, {"job_id": job_id})).one()
    reserved, actual, held = (int(value or 0) for value in row)
    return reserved + max(held, 0), actual


async def job_costs(conn: AsyncConnection, job_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(reserved, actual) micro-dollars per job: held now, and spent."""
    if not job_ids:
        return {}
    params = {"job_ids": list(job_ids)}
    rows = await conn.execute(_ATTEMPT_COSTS, params)
    found = {r[0]: (int(r[1] or 0), int(r[2] or 0)) for r in rows}
    holds = await conn.execute(_JOB_HOLDS, params)
    for job_id, held in holds:
        reserved, actual = found.get(job_id, (0, 0))
        found[job_id] = (reserved + int(held), actual)
    return found


@dataclass(frozen=True)
class BudgetView:
    scope: str
    period: Period
    limit: int
    reserved: int
    spent: int
    period_start: float
    period_end: float

    @property
    def remaining(self) -> int:
        return max(self.limit - self.reserved - self.spent, 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "period": self.period,
            "limit_usd": to_usd(self.limit),
            "reserved_usd": to_usd(self.reserved),
            "spent_usd": to_usd(self.spent),
            "remaining_usd": to_usd(self.remaining),
            "used_percent": round(100 * (self.reserved + self.spent) / self.limit, 1)
            if self.limit
            else 100.0,
            "period_start": int(self.period_start),
            "resets_at": int(self.period_end),
        }


async def budget_views(
    conn: AsyncConnection, now: float, tenant_id: str | None = None
) -> list[BudgetView]:
    query = select(budgets.c.scope, budgets.c.period, budgets.c.limit_micros)
    if tenant_id is not None:
        query = query.where(budgets.c.scope.in_([tenant_scope(tenant_id), GLOBAL]))
    views = []
    for scope, period, limit in (await conn.execute(query.order_by(budgets.c.scope))).all():
        start = period_start(period, now)
        usage = (
            await conn.execute(
                select(budget_usage.c.reserved_micros, budget_usage.c.spent_micros).where(
                    budget_usage.c.scope == scope,
                    budget_usage.c.period == period,
                    budget_usage.c.period_start == start,
                )
            )
        ).first()
        reserved, spent = (int(usage[0]), int(usage[1])) if usage else (0, 0)
        views.append(
            BudgetView(scope, period, int(limit), reserved, spent, start, period_end(period, now))
        )
    return views


async def credit_balance(conn: AsyncConnection, tenant_id: str) -> int | None:
    value = await conn.scalar(
        select(credit_accounts.c.balance_micros).where(credit_accounts.c.tenant_id == tenant_id)
    )
    return int(value) if value is not None else None


GROUPS = ("day", "provider", "model", "tenant")


async def usage(
    conn: AsyncConnection,
    *,
    start: float,
    end: float,
    group_by: Sequence[str],
    tenant_id: str | None = None,
) -> list[dict[str, Any]]:
    """Spend, jobs, seconds and failures (and what the failures cost) per group.

    Built from attempts (what ran, when, where, at what cost) in [start, end).
    """
    day = func.floor(attempts.c.created_at / 86400) * 86400
    columns: dict[str, Any] = {
        "day": day,
        "provider": attempts.c.provider,
        "model": attempts.c.model,
        "tenant": tenants.c.name,
    }
    keys = [columns[g] for g in group_by]
    cost = func.coalesce(attempts.c.cost_micros, 0)
    query = (
        select(
            *keys,
            func.sum(cost),
            func.count(func.distinct(attempts.c.job_id)),
            func.sum(case((attempts.c.state == "succeeded", jobs.c.seconds), else_=0)),
            func.sum(case((attempts.c.state == "failed", 1), else_=0)),
            func.sum(case((attempts.c.state == "failed", cost), else_=0)),
            func.count(),
        )
        .select_from(
            attempts.join(jobs, jobs.c.id == attempts.c.job_id).join(
                tenants, tenants.c.id == jobs.c.tenant_id
            )
        )
        .where(attempts.c.created_at >= start, attempts.c.created_at < end)
    )
    if tenant_id is not None:
        query = query.where(jobs.c.tenant_id == tenant_id)
    if keys:
        query = query.group_by(*keys).order_by(*keys)
    rows = []
    for row in await conn.execute(query):
        values = list(row)
        record: dict[str, Any] = {}
        for name in group_by:
            value = values.pop(0)
            record[name] = (
                dt.datetime.fromtimestamp(float(value), dt.UTC).date().isoformat()
                if name == "day"
                else value
            )
        spend, jobs_n, seconds, failures, failure_cost, n_attempts = values
        record.update(
            spend_usd=to_usd(int(spend or 0)),
            jobs=int(jobs_n or 0),
            attempts=int(n_attempts or 0),
            seconds=int(seconds or 0),
            failures=int(failures or 0),
            failure_cost_usd=to_usd(int(failure_cost or 0)),
        )
        rows.append(record)
    return rows


async def ledger_totals(conn: AsyncConnection) -> dict[str, int]:
    """Sum of every ledger kind, for consistency checks."""
    rows = await conn.execute(
        select(ledger.c.kind, func.sum(ledger.c.amount_micros)).group_by(ledger.c.kind)
    )
    return {r[0]: int(r[1] or 0) for r in rows}
