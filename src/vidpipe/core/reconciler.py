"""The periodic sweep that brings stray rows back to a correct state.

Leases need no sweep (an expired lease makes a step claimable again, and the next
claimer resumes from the recorded attempt), nor do deadlines (the next poll of a
step past its deadline expires it). What can go astray is a job whose steps have all
ended while the job itself was not closed (a crash between two transactions of an
older version, a manual fix in the database): the sweep closes it, with its events.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select, update

from vidpipe.blobs.base import BlobStore
from vidpipe.core import completion, events
from vidpipe.core.clock import Clock
from vidpipe.core.states import JobStatus, StepState
from vidpipe.errors import IllegalTransition
from vidpipe.money import ledger
from vidpipe.notify import alerts
from vidpipe.notify.channels import AlertChannel
from vidpipe.store import jobs as job_q
from vidpipe.store import steps as step_q
from vidpipe.store import webhooks_in
from vidpipe.store.db import Database
from vidpipe.store.schema import assets, attempts, jobs, steps

log = logging.getLogger("vidpipe.reconciler")

WEBHOOK_RECEIPT_TTL_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Sweep:
    closed_jobs: int
    purged_idempotency_keys: int
    purged_webhook_receipts: int
    expired_jobs: int = 0
    released_reservations: int = 0


async def sweep(
    db: Database,
    clock: Clock,
    *,
    idempotency_ttl_s: float,
    blobs: BlobStore | None = None,
    channels: Sequence[AlertChannel] = (),
) -> Sweep:
    now = clock.now()
    closed = 0
    async with db.read() as conn:
        open_jobs = [
            row[0]
            for row in await conn.execute(
                select(jobs.c.id).where(
                    jobs.c.status.in_((JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value))
                )
            )
        ]
    for job_id in open_jobs:
        async with db.write() as conn:
            plan = await step_q.steps_of_job(conn, job_id)
            if not plan or not all(StepState(s.state).terminal for s in plan):
                continue
            job = await job_q.get_job(conn, job_id)
            if job is None or JobStatus(job.status).terminal:
                continue
            if all(s.state == StepState.SUCCEEDED.value for s in plan):
                if job.review_state == completion.REVIEW_PENDING:
                    continue  # finished work waiting for a human: as it should be
                if job.status == JobStatus.QUEUED.value:
                    await job_q.transition_job(conn, job_id, JobStatus.IN_PROGRESS)
                await job_q.transition_job(
                    conn, job_id, JobStatus.COMPLETED, progress=100, completed_at=now
                )
                kind = "video.completed"
            else:
                failed = next(s for s in plan if s.state != StepState.SUCCEEDED.value)
                await job_q.transition_job(
                    conn,
                    job_id,
                    JobStatus.FAILED,
                    error_code=failed.error_code or f"step_{failed.state}",
                    error_message=failed.error_message or f"step {failed.name} {failed.state}",
                    completed_at=now,
                )
                kind = "video.failed"
            await events.record(
                conn,
                job_id=job_id,
                tenant_id=job.tenant_id,
                type=kind,
                data={"reconciled": True},
                now=now,
            )
            closed += 1
            log.warning("reconciler closed job %s (%s)", job_id, kind)
    async with db.write() as conn:
        keys = await job_q.purge_idempotency_keys(conn, now - idempotency_ttl_s)
        receipts = await webhooks_in.purge_receipts(conn, now - WEBHOOK_RECEIPT_TTL_S)
        await alerts.weekly_report(db, conn, channels, now)
    expired = await expire_jobs(db, blobs, now) if blobs is not None else 0
    released = await release_leaked_money(db, now)
    return Sweep(closed, keys, receipts, expired, released)


async def release_leaked_money(db: Database, now: float) -> int:
    """Reservations whose attempt or job has ended without settling them (a worker
    died between the two, a bug): a succeeded attempt is settled at its reservation,
    anything else released. Idempotent, like every ledger step."""
    fixed = 0
    async with db.read() as conn:
        stray = (
            await conn.execute(
                select(
                    attempts.c.id,
                    attempts.c.state,
                    attempts.c.reserved_micros,
                    attempts.c.job_id,
                    attempts.c.step_id,
                    attempts.c.provider,
                    attempts.c.model,
                    steps.c.tenant_id,
                )
                .select_from(attempts.join(steps, steps.c.id == attempts.c.step_id))
                .where(
                    attempts.c.money_state == "reserved",
                    or_(
                        attempts.c.state.in_(("succeeded", "failed", "canceled")),
                        # The step ended (canceled, failed) while this attempt was
                        # still being submitted: no one will finish it.
                        steps.c.state.in_(("canceled", "failed", "expired", "succeeded")),
                    ),
                )
                .limit(500)
            )
        ).all()
        held = (
            await conn.execute(
                select(jobs.c.id, jobs.c.tenant_id).where(
                    jobs.c.held_micros > 0,
                    jobs.c.status.in_(("completed", "failed", "canceled", "expired")),
                )
            )
        ).all()
    for att_id, state, reserved, job_id, step_id, provider, model, tenant_id in stray:
        charge = ledger.Charge(tenant_id, job_id, step_id, att_id, provider, model)
        async with db.write() as conn:
            cost = int(reserved) if state == "succeeded" else None
            if await ledger.finish_attempt(conn, att_id, charge, cost, now):
                fixed += 1
                log.warning("reconciler finished the reservation of attempt %s", att_id)
    for job_id, tenant_id in held:
        async with db.write() as conn:
            if await ledger.release_job_hold(
                db, conn, job_id, ledger.Charge(tenant_id, job_id, None, None), now
            ):
                fixed += 1
    return fixed


async def expire_jobs(db: Database, blobs: BlobStore, now: float, *, limit: int = 200) -> int:
    """Delete the files of jobs past their retention and mark the jobs ``expired``.

    Rows go first (in one transaction with the event), files after: a crash between
    the two leaves files without rows, never a job that promises files it lost.
    """
    async with db.read() as conn:
        due = [
            (row[0], row[1])
            for row in await conn.execute(
                select(jobs.c.id, jobs.c.tenant_id)
                .where(
                    jobs.c.expires_at <= now,
                    jobs.c.status.in_(
                        (
                            JobStatus.COMPLETED.value,
                            JobStatus.FAILED.value,
                            JobStatus.CANCELED.value,
                        )
                    ),
                )
                .limit(limit)
            )
        ]
    expired = 0
    for job_id, tenant_id in due:
        try:
            async with db.write() as conn:
                await job_q.transition_job(conn, job_id, JobStatus.EXPIRED)
                keys = [
                    r[0]
                    for r in await conn.execute(
                        update(assets)
                        .where(assets.c.job_id == job_id, assets.c.deleted_at.is_(None))
                        .values(deleted_at=now)
                        .returning(assets.c.key)
                    )
                ]
                await events.record(
                    conn,
                    job_id=job_id,
                    tenant_id=tenant_id,
                    type="video.expired",
                    data={"status": "expired", "files": len(keys)},
                    now=now,
                )
        except IllegalTransition:
            continue  # another sweeper got there first
        for key in keys:
            await blobs.delete(key)
        expired += 1
    return expired
