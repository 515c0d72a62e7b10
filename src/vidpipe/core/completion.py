"""The end of a job's work: completed at once, or held for a human's review first.

Webhooks and the ``video.completed`` event go out only when the job is really
completed, so a reviewed video is announced after its approval, never before.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.config import Settings
from vidpipe.core import events
from vidpipe.core.states import JobStatus
from vidpipe.store import jobs as job_q
from vidpipe.store import tenants as tenant_q
from vidpipe.store.records import Job
from vidpipe.store.schema import jobs

REVIEW_REQUIRED = "required"
REVIEW_PENDING = "pending"
REVIEW_APPROVED = "approved"


async def work_done(
    conn: AsyncConnection, job_id: str, tenant_id: str, now: float, settings: Settings
) -> Job | None:
    """Every step succeeded: complete the job, or ask for its review.

    Returns the job as completed here, None when it waits for its review."""
    job = await job_q.get_job(conn, job_id)
    if job is not None and job.review_state == REVIEW_REQUIRED:
        await conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.review_state == REVIEW_REQUIRED)
            .values(review_state=REVIEW_PENDING, progress=100)
        )
        await events.record(
            conn,
            job_id=job_id,
            tenant_id=tenant_id,
            type="video.review_requested",
            data={"review_state": REVIEW_PENDING},
            now=now,
        )
        return None
    return await complete(conn, job_id, tenant_id, now, settings)


async def complete(
    conn: AsyncConnection, job_id: str, tenant_id: str, now: float, settings: Settings
) -> Job:
    """Complete the job (IllegalTransition if its status does not allow it); returns it."""
    days = await tenant_q.retention_days(conn, tenant_id)
    job = await job_q.transition_job(
        conn,
        job_id,
        JobStatus.COMPLETED,
        progress=100,
        completed_at=now,
        expires_at=now + 86400 * (days or settings.retention_days),
    )
    await events.record(
        conn,
        job_id=job_id,
        tenant_id=tenant_id,
        type="video.completed",
        data={"status": "completed"},
        now=now,
        job=job,
    )
    return job
