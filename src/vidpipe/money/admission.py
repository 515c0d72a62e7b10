"""Admitting a job: usage limits and the first reservation, atomically with its creation.

Runs inside the transaction that inserts the job. Counting a tenant's jobs and
reserving money are serialized per tenant (SQLite: BEGIN IMMEDIATE; PostgreSQL: an
advisory lock), so fifty concurrent requests against room for ten admit ten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.core.states import JobStatus
from vidpipe.errors import VidpipeError
from vidpipe.money import ledger
from vidpipe.money.periods import period_start
from vidpipe.money.units import to_micros, to_usd
from vidpipe.store import tenants as tenant_q
from vidpipe.store.db import Database
from vidpipe.store.schema import jobs


class UsageLimitReached(VidpipeError):
    code = "usage_limit_reached"
    http_status = 429


class LimitExceeded(VidpipeError):
    """The request itself is bigger than the tenant may ask for."""

    code = "limit_exceeded"
    http_status = 422


@dataclass(frozen=True)
class Limits:
    jobs_per_day: int | None = None
    jobs_per_month: int | None = None
    concurrent_jobs: int | None = None
    max_seconds: int | None = None
    max_pixels: int | None = None
    max_job_cost_usd: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Limits:
        return cls(**{k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__})


async def tenant_limits(conn: AsyncConnection, tenant_id: str) -> Limits:
    """The tenant's limits (cached for a few seconds: see store/cache.py)."""
    return Limits.from_json((await tenant_q.tenant_settings(conn, tenant_id)).limits)


def check_request(limits: Limits, *, seconds: int, width: int, height: int) -> None:
    """Per-video caps: refused as such (422), whatever the tenant's usage."""
    if limits.max_seconds is not None and seconds > limits.max_seconds:
        raise LimitExceeded(
            f"seconds {seconds} is over this tenant's maximum of {limits.max_seconds}",
            param="seconds",
        )
    if limits.max_pixels is not None and width * height > limits.max_pixels:
        raise LimitExceeded(
            f"size {width}x{height} is over this tenant's maximum resolution",
            param="size",
        )


async def admit(
    db: Database,
    conn: AsyncConnection,
    *,
    tenant_id: str,
    job_id: str,
    hold_micros: int,
    max_cost_micros: int | None,
    limits: Limits,
    now: float,
) -> list[ledger.Crossing]:
    """Check the usage limits and reserve the first attempt's cost for the new job
    (already inserted in this transaction). Raises to refuse; the caller rolls back."""
    counts = (
        limits.concurrent_jobs is not None
        or limits.jobs_per_day is not None
        or limits.jobs_per_month is not None
    )
    if counts or hold_micros > 0:
        # A job that is neither counted nor charged (a free model, a tenant without
        # usage limits) has nothing to serialize: it skips the lock's round trip.
        await db.lock_for(conn, f"vidpipe.admission.{tenant_id}")
    if limits.concurrent_jobs is not None:
        running = await _count(
            conn,
            tenant_id,
            jobs.c.status.in_((JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value)),
        )
        if running > limits.concurrent_jobs:  # this job is counted too
            raise UsageLimitReached(f"this tenant may run {limits.concurrent_jobs} videos at once")
    for period, cap in (("day", limits.jobs_per_day), ("month", limits.jobs_per_month)):
        if cap is not None:
            made = await _count(conn, tenant_id, jobs.c.created_at >= period_start(period, now))  # type: ignore[arg-type]
            if made > cap:
                raise UsageLimitReached(f"this tenant may create {cap} videos per {period}")
    if max_cost_micros is not None and hold_micros > max_cost_micros:
        raise ledger.BudgetExceeded(
            f"one attempt is estimated at ${to_usd(hold_micros)}, over the video's maximum "
            f"of ${to_usd(max_cost_micros)}",
            scope="job",
            period="job",
        )
    if hold_micros <= 0:
        return []
    crossings = await ledger.reserve(
        db, conn, ledger.Charge(tenant_id, job_id, None, None), hold_micros, now
    )
    await conn.execute(
        update(jobs).where(jobs.c.id == job_id).values(held_micros=hold_micros, held_at=now)
    )
    return crossings


async def _count(conn: AsyncConnection, tenant_id: str, condition: Any) -> int:
    value = await conn.scalar(
        select(func.count()).select_from(jobs).where(jobs.c.tenant_id == tenant_id, condition)
    )
    return int(value or 0)


def max_cost_micros(request_usd: float | None, limits: Limits) -> int | None:
    """The tighter of the request's own maximum and the tenant's."""
    values = [to_micros(v) for v in (request_usd, limits.max_job_cost_usd) if v is not None]
    return min(values) if values else None
