"""Webhooks received from providers: deduplication and the steps they concern."""

from __future__ import annotations

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.core.states import AttemptState, StepState
from vidpipe.store.schema import attempts, steps, webhook_receipts


async def record_receipt(
    conn: AsyncConnection, provider: str, event_id: str, provider_job_id: str, now: float
) -> bool:
    """True the first time an event is seen; False for a repeat delivery."""
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(webhook_receipts).values(
                    provider=provider,
                    event_id=event_id,
                    provider_job_id=provider_job_id,
                    received_at=now,
                )
            )
    except IntegrityError:
        return False
    return True


async def hurry_steps(
    conn: AsyncConnection,
    provider: str,
    provider_job_id: str,
    now: float,
    *,
    attempt_id: str | None = None,
) -> list[str]:
    """Make the steps waiting on this provider job due now; returns their ids.

    ``attempt_id`` comes from the callback URL vidpipe gave the provider; it matches
    providers whose webhook names the job by a shorter id than the one vidpipe polls
    with (fal: ``request_id`` vs ``app/request_id``). The webhook's content is not
    applied directly: the worker polls the provider for the truth, so a forged, stale
    or reordered webhook can only cause an early poll.
    """
    query = select(attempts.c.step_id, attempts.c.provider_job_id).where(
        attempts.c.provider == provider, attempts.c.state == AttemptState.SUBMITTED.value
    )
    if attempt_id is not None:
        query = query.where(attempts.c.id == attempt_id)
    else:
        query = query.where(attempts.c.provider_job_id == provider_job_id)
    step_ids = [
        step_id
        for step_id, known_id in await conn.execute(query)
        if known_id == provider_job_id or str(known_id).endswith("/" + provider_job_id)
    ]
    if not step_ids:
        return []
    result = await conn.execute(
        update(steps)
        .where(
            steps.c.id.in_(step_ids),
            steps.c.state == StepState.ACTIVE.value,
            steps.c.run_at > now,
        )
        .values(run_at=now)
        .returning(steps.c.id)
    )
    return [row[0] for row in result]


async def is_known_job(conn: AsyncConnection, provider: str, provider_job_id: str) -> bool:
    count = await conn.scalar(
        select(func.count())
        .select_from(attempts)
        .where(attempts.c.provider == provider, attempts.c.provider_job_id == provider_job_id)
    )
    return bool(count)


async def purge_receipts(conn: AsyncConnection, older_than: float) -> int:
    result = await conn.execute(
        delete(webhook_receipts).where(webhook_receipts.c.received_at < older_than)
    )
    return int(result.rowcount)
