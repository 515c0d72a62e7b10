"""Recording what happened to a job: the event row, and for the public video.* events
the webhook deliveries they cause, in the same transaction as the change itself."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.core.views import video_object
from vidpipe.money import reports
from vidpipe.notify import webhooks
from vidpipe.store import jobs as job_q
from vidpipe.store.records import Job

PUBLIC = frozenset(webhooks.EVENT_TYPES)


async def record(
    conn: AsyncConnection,
    *,
    job_id: str,
    tenant_id: str,
    type: str,
    data: dict[str, Any],
    now: float,
    job: Job | None = None,
    money: tuple[int, int] | None = None,
) -> None:
    """Write the event; for a public one, queue its webhook deliveries.

    A caller that has the job as it now stands in this transaction passes it (and its
    (reserved, actual) ``money``), which saves reading them back.
    """
    await job_q.add_event(conn, job_id=job_id, tenant_id=tenant_id, type=type, data=data, now=now)
    if type not in PUBLIC:
        return
    if job is None:
        job = await job_q.get_job(conn, job_id)
        if job is None:
            return
    if money is None:
        money = await reports.job_cost(conn, job_id)
    await webhooks.fan_out(
        conn,
        tenant_id=tenant_id,
        job_id=job_id,
        event_type=type,
        video=video_object(job, money),
        request_url=job.params.get("webhook_url"),
        now=now,
    )
