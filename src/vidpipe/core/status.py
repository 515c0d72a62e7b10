"""What an operator asks at 3am: are workers alive, is work moving, what failed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from vidpipe.core.states import JobStatus, StepState
from vidpipe.store.db import Database
from vidpipe.store.schema import jobs, steps, workers


@dataclass(frozen=True)
class WorkerStatus:
    id: str
    hostname: str
    pid: int
    heartbeat_age_s: float
    alive: bool


@dataclass(frozen=True)
class SystemStatus:
    workers: list[WorkerStatus]
    due_steps: int  # ready to run now, not claimed
    waiting_steps: int  # at a provider, polled later
    in_flight: dict[str, int]  # per provider
    jobs_by_status: dict[str, int]
    oldest_queued_age_s: float | None
    recent_failures: list[tuple[str, str, str]]  # (job id, code, message), last 24 h


async def read_status(db: Database, now: float, *, lease_s: float) -> SystemStatus:
    async with db.read() as conn:
        rows = await conn.execute(
            select(workers).where(workers.c.stopped_at.is_(None)).order_by(workers.c.started_at)
        )
        live = [
            WorkerStatus(
                r.id, r.hostname, r.pid, now - r.heartbeat_at, now - r.heartbeat_at < 3 * lease_s
            )
            for r in rows
        ]
        due = await conn.scalar(
            select(func.count())
            .select_from(steps)
            .where(
                steps.c.state == StepState.READY.value,
                steps.c.run_at <= now,
                steps.c.lease_owner.is_(None),
            )
        )
        waiting = await conn.scalar(
            select(func.count()).select_from(steps).where(steps.c.state == StepState.ACTIVE.value)
        )
        in_flight = {
            r[0]: int(r[1])
            for r in await conn.execute(
                select(steps.c.provider, func.count())
                .where(steps.c.state.in_((StepState.ACTIVE.value, StepState.CANCELING.value)))
                .group_by(steps.c.provider)
            )
        }
        by_status = {
            r[0]: int(r[1])
            for r in await conn.execute(
                select(jobs.c.status, func.count())
                .where(jobs.c.deleted_at.is_(None))
                .group_by(jobs.c.status)
            )
        }
        oldest = await conn.scalar(
            select(func.min(jobs.c.created_at)).where(jobs.c.status == JobStatus.QUEUED.value)
        )
        failures = [
            (r[0], r[1] or "", r[2] or "")
            for r in await conn.execute(
                select(jobs.c.id, jobs.c.error_code, jobs.c.error_message)
                .where(jobs.c.status == JobStatus.FAILED.value, jobs.c.completed_at > now - 86400)
                .order_by(jobs.c.completed_at.desc())
                .limit(10)
            )
        ]
    return SystemStatus(
        workers=live,
        due_steps=int(due or 0),
        waiting_steps=int(waiting or 0),
        in_flight=in_flight,
        jobs_by_status=by_status,
        oldest_queued_age_s=now - float(oldest) if oldest is not None else None,
        recent_failures=failures,
    )
