"""Job commands working directly on the configured database (operator tools)."""

from __future__ import annotations

import time

from vidpipe.config import Settings
from vidpipe.core.runtime import Runtime
from vidpipe.core.status import SystemStatus, read_status
from vidpipe.store import jobs as job_q
from vidpipe.store import steps as step_q
from vidpipe.store.db import Database
from vidpipe.store.records import Attempt, Event, Job, Step


async def list_jobs(settings: Settings, *, limit: int, status: str | None) -> list[Job]:
    db = Database(settings.resolved_database_url)
    try:
        async with db.read() as conn:
            return await job_q.list_jobs(conn, None, limit=limit, status=status)
    finally:
        await db.dispose()


async def show_job(
    settings: Settings, job_id: str
) -> tuple[Job, list[Step], list[Attempt], list[Event]]:
    runtime = await Runtime.open(settings, run_migrations=False)
    try:
        job = await runtime.videos.get(None, job_id)
        async with runtime.db.read() as conn:
            return (
                job,
                await step_q.steps_of_job(conn, job_id),
                await step_q.attempts_of_job(conn, job_id),
                await job_q.list_events(conn, job_id),
            )
    finally:
        await runtime.close()


async def cancel_job(settings: Settings, job_id: str) -> Job:
    runtime = await Runtime.open(settings, run_migrations=False)
    try:
        return await runtime.videos.cancel(None, job_id)
    finally:
        await runtime.close()


async def system_status(settings: Settings) -> SystemStatus:
    runtime = await Runtime.open(settings, run_migrations=False)
    try:
        return await read_status(runtime.db, time.time(), lease_s=settings.lease_s)
    finally:
        await runtime.close()
