"""Money commands: reports, budgets, credits."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from vidpipe.config import Settings
from vidpipe.money import ledger, reports
from vidpipe.money.periods import Period
from vidpipe.money.units import to_micros
from vidpipe.store import tenants as tenant_q
from vidpipe.store.db import Database

DAYS = {"week": 7, "month": 30}


async def usage_report(
    settings: Settings, *, period: str, group_by: list[str]
) -> list[dict[str, Any]]:
    end = time.time()
    start = end - DAYS[period] * 86400
    db = Database(settings.resolved_database_url)
    try:
        async with db.read() as conn:
            return await reports.usage(conn, start=start, end=end, group_by=group_by)
    finally:
        await db.dispose()


def as_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


async def set_budget(settings: Settings, scope: str, period: Period, usd: float | None) -> None:
    db = Database(settings.resolved_database_url)
    try:
        async with db.write() as conn:
            if scope == "global":
                key = ledger.GLOBAL
            else:
                tenant = await tenant_q.get_tenant_by_name(conn, scope)
                if tenant is None:
                    raise ValueError(f"no tenant {scope!r}")
                key = ledger.tenant_scope(tenant.id)
            await ledger.set_budget(
                db, conn, key, period, to_micros(usd) if usd is not None else None, time.time()
            )
    finally:
        await db.dispose()


async def budget_list(settings: Settings) -> list[reports.BudgetView]:
    db = Database(settings.resolved_database_url)
    try:
        async with db.read() as conn:
            return await reports.budget_views(conn, time.time())
    finally:
        await db.dispose()


async def add_credits(settings: Settings, tenant: str, usd: float, note: str) -> int:
    db = Database(settings.resolved_database_url)
    try:
        async with db.write() as conn:
            record = await tenant_q.get_tenant_by_name(conn, tenant)
            if record is None:
                raise ValueError(f"no tenant {tenant!r}")
            return await ledger.add_credit(db, conn, record.id, to_micros(usd), time.time(), note)
    finally:
        await db.dispose()
