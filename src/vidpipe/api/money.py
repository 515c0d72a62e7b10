"""Money over HTTP: budgets, credits, prices, tenant limits, and usage reports.

Reading is for every caller (a tenant sees its own); changing is for admin keys.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from vidpipe.api.auth import Principal, principal, require_admin
from vidpipe.core.runtime import Runtime
from vidpipe.errors import InvalidRequest, NotFound
from vidpipe.money import ledger, reports
from vidpipe.money.admission import Limits
from vidpipe.money.catalog import Price
from vidpipe.money.prices import all_prices, set_override
from vidpipe.money.units import to_micros, to_usd
from vidpipe.store import tenants as tenant_q

router = APIRouter(tags=["money"])
Caller = Annotated[Principal, Depends(principal)]
Admin = Annotated[Principal, Depends(require_admin)]


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


class BudgetUpdate(BaseModel):
    # Strict: a boolean is not an amount, nor 0 a yes/no.
    model_config = {"extra": "forbid", "strict": True}

    scope: str = Field(description='"global" or a tenant name')
    period: Literal["day", "month"]
    limit_usd: float | None = Field(ge=0, le=10_000_000, description="None removes it.")


async def _tenant_id(runtime: Runtime, name_or_id: str) -> str:
    async with runtime.db.read() as conn:
        tenant = await tenant_q.get_tenant_by_name(conn, name_or_id)
        if tenant is None:
            tenant = await tenant_q.get_tenant(conn, name_or_id)
    if tenant is None:
        raise NotFound(f"no tenant {name_or_id!r}", code="tenant_not_found")
    return tenant.id


@router.get("/v1/budgets")
async def list_budgets(request: Request, caller: Caller) -> dict[str, Any]:
    runtime = _rt(request)
    async with runtime.db.read() as conn:
        views = await reports.budget_views(
            conn, runtime.clock.now(), None if caller.scope == "admin" else caller.tenant_id
        )
        balance = await reports.credit_balance(conn, caller.tenant_id)
    return {
        "object": "list",
        "data": [v.to_json() for v in views],
        "credits_usd": to_usd(balance) if balance is not None else None,
    }


@router.put("/v1/budgets")
async def set_budget(body: BudgetUpdate, request: Request, _admin: Admin) -> dict[str, Any]:
    runtime = _rt(request)
    scope = (
        ledger.GLOBAL
        if body.scope == "global"
        else ledger.tenant_scope(await _tenant_id(runtime, body.scope))
    )
    async with runtime.db.write() as conn:
        await ledger.set_budget(
            runtime.db,
            conn,
            scope,
            body.period,
            to_micros(body.limit_usd) if body.limit_usd is not None else None,
            runtime.clock.now(),
        )
    async with runtime.db.read() as conn:
        views = await reports.budget_views(conn, runtime.clock.now())
    return {"object": "list", "data": [v.to_json() for v in views if v.scope == scope]}


class CreditChange(BaseModel):
    # Strict: a boolean is not an amount, nor 0 a yes/no.
    model_config = {"extra": "forbid", "strict": True}

    amount_usd: float = Field(ge=-1_000_000, le=1_000_000)
    note: str = Field(min_length=1, max_length=500)


@router.post("/v1/tenants/{tenant}/credits")
async def change_credits(
    tenant: str, body: CreditChange, request: Request, _admin: Admin
) -> dict[str, Any]:
    """Add (or take) prepaid balance; every change is a ledger entry with its note."""
    runtime = _rt(request)
    tenant_id = await _tenant_id(runtime, tenant)
    async with runtime.db.write() as conn:
        balance = await ledger.add_credit(
            runtime.db,
            conn,
            tenant_id,
            to_micros(body.amount_usd),
            runtime.clock.now(),
            body.note,
        )
    return {"tenant_id": tenant_id, "balance_usd": to_usd(balance)}


class TenantUpdate(BaseModel):
    # Strict: a boolean is not an amount, nor 0 a yes/no.
    model_config = {"extra": "forbid", "strict": True}

    billing_mode: Literal["budget", "credits"] | None = None
    retention_days: int | None = Field(default=None, ge=1, le=3650)
    limits: dict[str, float | int | None] | None = None
    require_review: bool | None = None


@router.patch("/v1/tenants/{tenant}")
async def update_tenant(
    tenant: str, body: TenantUpdate, request: Request, _admin: Admin
) -> dict[str, Any]:
    runtime = _rt(request)
    tenant_id = await _tenant_id(runtime, tenant)
    values: dict[str, Any] = {}
    if body.billing_mode is not None:
        values["billing_mode"] = body.billing_mode
    if body.retention_days is not None:
        values["retention_days"] = body.retention_days
    if body.require_review is not None:
        values["require_review"] = int(body.require_review)
    if body.limits is not None:
        unknown = set(body.limits) - set(Limits.__dataclass_fields__)
        if unknown:
            raise InvalidRequest(
                f"unknown limits: {', '.join(sorted(unknown))}",
                code="invalid_limits",
                param="limits",
            )
        values["limits"] = {k: v for k, v in body.limits.items() if v is not None}
    if values:
        async with runtime.db.write() as conn:
            await tenant_q.update_tenant(conn, tenant_id, values)
    async with runtime.db.read() as conn:
        record = await tenant_q.get_tenant(conn, tenant_id)
    assert record is not None
    return {
        "id": record.id,
        "name": record.name,
        "billing_mode": record.billing_mode,
        "retention_days": record.retention_days,
        "limits": record.limits or {},
        "require_review": bool(record.require_review),
    }


@router.get("/v1/prices")
async def list_prices(request: Request, _caller: Caller) -> dict[str, Any]:
    runtime = _rt(request)
    async with runtime.db.read() as conn:
        prices = await all_prices(conn, runtime.videos.prices)
    return {
        "object": "list",
        "data": [{"model": m, **p.model_dump()} for m, p in sorted(prices.items())],
    }


@router.put("/v1/prices/{model:path}")
async def set_price(model: str, price: Price, request: Request, _admin: Admin) -> dict[str, Any]:
    runtime = _rt(request)
    runtime.registry.resolve(model)  # only models that exist
    now = runtime.clock.now()
    async with runtime.db.write() as conn:
        await set_override(conn, model, price.model_dump(mode="json"), now)
    return {"model": model, **price.model_dump()}


@router.get("/v1/usage")
async def usage(
    request: Request,
    caller: Caller,
    start: Annotated[dt.date | None, Query(alias="from")] = None,
    end: Annotated[dt.date | None, Query(alias="to")] = None,
    group_by: Annotated[str, Query(description="comma-separated: day,provider,model,tenant")] = (
        "day"
    ),
) -> dict[str, Any]:
    """Spend, jobs, seconds, failures and their cost, grouped; [from, to] in UTC days."""
    runtime = _rt(request)
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    bad = [g for g in groups if g not in reports.GROUPS]
    if bad:
        raise InvalidRequest(
            f"cannot group by {', '.join(bad)}; use {', '.join(reports.GROUPS)}",
            code="invalid_group_by",
            param="group_by",
        )
    today = dt.datetime.fromtimestamp(runtime.clock.now(), dt.UTC).date()
    last = end or today
    first = start or (last - dt.timedelta(days=30))
    if first > last:
        raise InvalidRequest("from is after to", code="invalid_range", param="from")
    t0 = dt.datetime.combine(first, dt.time(), dt.UTC).timestamp()
    t1 = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp()
    async with runtime.db.read() as conn:
        rows = await reports.usage(
            conn,
            start=t0,
            end=t1,
            group_by=groups,
            tenant_id=None if caller.scope == "admin" else caller.tenant_id,
        )
    return {"object": "list", "from": first.isoformat(), "to": last.isoformat(), "data": rows}
