"""Queries on jobs, their events and the idempotency keys that point at them."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Update, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.core.states import JOB_TRANSITIONS, JobStatus, sources_of
from vidpipe.errors import IllegalTransition
from vidpipe.store.records import Event, Job
from vidpipe.store.schema import assets, events, idempotency_keys, jobs

# Statements on the hot paths are built once: executed with a parameter dict they are
# compiled once too (SQLAlchemy's compiled cache), where building them per call costs
# more CPU than the database spends running them.
_INSERT_JOB = insert(jobs)
_INSERT_EVENT = insert(events)
_GET_JOB = select(jobs).where(jobs.c.id == bindparam("job_id"), jobs.c.deleted_at.is_(None))
_GET_TENANT_JOB = _GET_JOB.where(jobs.c.tenant_id == bindparam("tenant_id"))
# Updates are built once too, without ``values()``: the keys of the parameter dict
# that name columns make the SET clause (compiled once per set of keys), and the
# WHERE clause's parameters have names no column has (leading underscore).
_JOB_PROGRESS = update(jobs).where(
    jobs.c.id == bindparam("_job_id"),
    jobs.c.progress < bindparam("_progress"),
    jobs.c.status.in_((JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value)),
)
_RETIRE_ASSETS = update(assets).where(
    assets.c.job_id == bindparam("_job_id"),
    assets.c.name.in_(bindparam("_names", expanding=True)),
    assets.c.deleted_at.is_(None),
)
_INSERT_ASSET = insert(assets)


@functools.cache
def _transition_statement(to: JobStatus) -> Update:
    """The guarded update into ``to``: only from the states that may lead there."""
    return (
        update(jobs)
        .where(
            jobs.c.id == bindparam("_job_id"),
            jobs.c.status.in_(sources_of(JOB_TRANSITIONS, to)),
        )
        .returning(*jobs.c)
    )


async def insert_job(conn: AsyncConnection, job: Job) -> None:
    await conn.execute(_INSERT_JOB, job.__dict__)


async def get_job(conn: AsyncConnection, job_id: str, tenant_id: str | None = None) -> Job | None:
    """A job that is not deleted; with ``tenant_id``, only if it belongs to that tenant."""
    if tenant_id is None:
        result = await conn.execute(_GET_JOB, {"job_id": job_id})
    else:
        result = await conn.execute(_GET_TENANT_JOB, {"job_id": job_id, "tenant_id": tenant_id})
    row = result.mappings().first()
    return Job.from_row(row) if row else None


async def list_jobs(
    conn: AsyncConnection,
    tenant_id: str | None,
    *,
    limit: int,
    after: str | None = None,
    newest_first: bool = True,
    status: str | None = None,
    review_state: str | None = None,
) -> list[Job]:
    """One page of jobs; ids are time-ordered so the id is the cursor."""
    query = select(jobs).where(jobs.c.deleted_at.is_(None))
    if tenant_id is not None:
        query = query.where(jobs.c.tenant_id == tenant_id)
    if status is not None:
        query = query.where(jobs.c.status == status)
    if review_state is not None:
        query = query.where(jobs.c.review_state == review_state)
    if after is not None:
        query = query.where(jobs.c.id < after if newest_first else jobs.c.id > after)
    query = query.order_by(jobs.c.id.desc() if newest_first else jobs.c.id.asc()).limit(limit)
    return [Job.from_row(r) for r in (await conn.execute(query)).mappings()]


async def transition_job(conn: AsyncConnection, job_id: str, to: JobStatus, **values: Any) -> Job:
    """Move a job to ``to`` if its current status allows it, else raise IllegalTransition.

    Returns the job as it now stands (RETURNING: no read back for its event)."""
    result = await conn.execute(
        _transition_statement(to), {**values, "_job_id": job_id, "status": to.value}
    )
    row = result.mappings().first()
    if row is None:
        current = await conn.scalar(select(jobs.c.status).where(jobs.c.id == job_id))
        raise IllegalTransition(
            f"job {job_id} cannot go from {current} to {to.value}", code="illegal_transition"
        )
    return Job.from_row(row)


async def set_job_progress(conn: AsyncConnection, job_id: str, progress: int) -> None:
    """Progress only moves forward while the job runs (a retry does not rewind it)."""
    await conn.execute(
        _JOB_PROGRESS, {"_job_id": job_id, "_progress": progress, "progress": progress}
    )


async def mark_deleted(conn: AsyncConnection, job_id: str, now: float) -> bool:
    result = await conn.execute(
        update(jobs).where(jobs.c.id == job_id, jobs.c.deleted_at.is_(None)).values(deleted_at=now)
    )
    return result.rowcount == 1


async def add_event(
    conn: AsyncConnection,
    *,
    job_id: str,
    tenant_id: str,
    type: str,
    data: dict[str, Any],
    now: float,
) -> None:
    await conn.execute(
        _INSERT_EVENT,
        {"job_id": job_id, "tenant_id": tenant_id, "type": type, "data": data, "created_at": now},
    )


async def list_events(conn: AsyncConnection, job_id: str, after_id: int = 0) -> list[Event]:
    rows = await conn.execute(
        select(events)
        .where(events.c.job_id == job_id, events.c.id > after_id)
        .order_by(events.c.id)
    )
    return [Event.from_row(r) for r in rows.mappings()]


async def find_idempotency_key(
    conn: AsyncConnection, tenant_id: str, key: str, not_before: float
) -> tuple[str, str] | None:
    """(request_hash, job_id) of a key still within its retention, if any."""
    row = (
        await conn.execute(
            select(idempotency_keys.c.request_hash, idempotency_keys.c.job_id).where(
                idempotency_keys.c.tenant_id == tenant_id,
                idempotency_keys.c.key == key,
                idempotency_keys.c.created_at >= not_before,
            )
        )
    ).first()
    return (row[0], row[1]) if row else None


async def save_idempotency_key(
    conn: AsyncConnection,
    tenant_id: str,
    key: str,
    request_hash: str,
    job_id: str,
    now: float,
    *,
    expired_before: float,
) -> None:
    """Bind ``key`` to ``job_id``; IntegrityError if a live binding exists (a race lost)."""
    # An expired row for the same key may still be there: it no longer binds. Only
    # expired rows go: deleting a live one that a concurrent request just committed
    # would let this request bind the key a second time.
    await conn.execute(
        delete(idempotency_keys).where(
            idempotency_keys.c.tenant_id == tenant_id,
            idempotency_keys.c.key == key,
            idempotency_keys.c.created_at < expired_before,
        )
    )
    await conn.execute(
        insert(idempotency_keys).values(
            tenant_id=tenant_id, key=key, request_hash=request_hash, job_id=job_id, created_at=now
        )
    )


async def purge_idempotency_keys(conn: AsyncConnection, older_than: float) -> int:
    result = await conn.execute(
        delete(idempotency_keys).where(idempotency_keys.c.created_at < older_than)
    )
    return int(result.rowcount)


async def count_jobs(conn: AsyncConnection, tenant_id: str | None = None) -> int:
    query = select(func.count()).select_from(jobs)
    if tenant_id is not None:
        query = query.where(jobs.c.tenant_id == tenant_id)
    return int(await conn.scalar(query) or 0)


async def replace_assets(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Record stored files of one job; earlier files of the same names (a previous
    attempt's, overwritten in storage) are marked deleted. One statement each way."""
    if not rows:
        return
    job_ids = {row["job_id"] for row in rows}
    names = [row["name"] for row in rows]
    if len(job_ids) != 1 or len(set(names)) != len(names):
        raise ValueError("replace_assets: files of one job, each name once")
    await conn.execute(
        _RETIRE_ASSETS,
        {
            "_job_id": job_ids.pop(),
            "_names": names,
            "deleted_at": rows[0]["created_at"],
        },
    )
    await conn.execute(_INSERT_ASSET, list(rows))
