"""Queries on steps and attempts: claims with leases, guarded updates, heartbeats.

A claim gives a worker a lease (owner, expiry) and a new ``lease_token``. Every later
write by that worker is guarded by the token, so a worker that lost its lease (it
stalled, another took over) fails loudly instead of overwriting newer state.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Update, and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.core.states import (
    ATTEMPT_TRANSITIONS,
    CLAIMABLE_STEP_STATES,
    STEP_TRANSITIONS,
    AttemptState,
    StepState,
    sources_of,
)
from vidpipe.errors import IllegalTransition, LeaseLost
from vidpipe.store.db import Database
from vidpipe.store.records import Attempt, Step
from vidpipe.store.schema import attempts, steps, workers

_CLAIMABLE = [s.value for s in CLAIMABLE_STEP_STATES]
# States whose next action is a submission to the provider.
_SUBMITTABLE = (StepState.READY.value, StepState.BLOCKED.value)


# Built once: a statement made per call is compiled per call (the request path's
# largest single cost after the framework).
_INSERT_STEP = insert(steps)
_INSERT_ATTEMPT = insert(attempts)
# The worker's reads by key, built once: a statement made per call costs its
# construction and cache key on every execution (bench/README.md, session 4).
_GET_STEP = select(steps).where(steps.c.id == bindparam("step_id"))
_STEPS_OF_JOB = select(steps).where(steps.c.job_id == bindparam("job_id")).order_by(steps.c.id)
_LEASE_TOKEN = select(steps.c.lease_token).where(steps.c.id == bindparam("step_id"))
_CURRENT_ATTEMPT = (
    select(attempts)
    .where(attempts.c.step_id == bindparam("step_id"))
    .order_by(attempts.c.number.desc())
    .limit(1)
)
_ATTEMPTS_OF_JOB = (
    select(attempts).where(attempts.c.job_id == bindparam("job_id")).order_by(attempts.c.id)
)
# Updates built once, without ``values()``: the parameter keys that name columns make
# the SET clause; the WHERE clause's parameters start with an underscore, a name no
# column has (see store/jobs.py).
_GUARDED_STEP = update(steps).where(
    steps.c.id == bindparam("_step_id"), steps.c.lease_token == bindparam("_token")
)
_STEP_STATE_AND_LEASE = select(steps.c.state, steps.c.lease_token).where(
    steps.c.id == bindparam("step_id")
)
_WORKER_HEARTBEAT = update(workers).where(workers.c.id == bindparam("_worker_id"))
_EXTEND_LEASES = update(steps).where(steps.c.lease_owner == bindparam("_worker_id"))


@functools.cache
def _step_transition(to: StepState) -> Update:
    """A claimed step's guarded update into ``to`` (lease token and source state)."""
    return _GUARDED_STEP.where(steps.c.state.in_(sources_of(STEP_TRANSITIONS, to)))


@functools.cache
def _attempt_transition(to: AttemptState) -> Update:
    return update(attempts).where(
        attempts.c.id == bindparam("_attempt_id"),
        attempts.c.state.in_(sources_of(ATTEMPT_TRANSITIONS, to)),
    )


async def insert_step(conn: AsyncConnection, step: Step) -> None:
    await conn.execute(_INSERT_STEP, dict(step.__dict__))


async def get_step(conn: AsyncConnection, step_id: str) -> Step | None:
    row = (await conn.execute(_GET_STEP, {"step_id": step_id})).mappings().first()
    return Step.from_row(row) if row else None


async def steps_of_job(conn: AsyncConnection, job_id: str) -> list[Step]:
    rows = await conn.execute(_STEPS_OF_JOB, {"job_id": job_id})
    return [Step.from_row(r) for r in rows.mappings()]


def _due(now: Any) -> Any:
    return and_(
        steps.c.state.in_(_CLAIMABLE),
        steps.c.run_at <= now,
        or_(steps.c.lease_owner.is_(None), steps.c.lease_expires_at < now),
    )


# A claim runs once per free slot, as often as step actions end: its two statements
# are built once, like a job's (see _GUARDED_STEP).
_CLAIM_NOW: Any = bindparam("_now")
_CLAIM_CANDIDATES = (
    select(steps.c.id, steps.c.state, steps.c.provider)
    .where(_due(_CLAIM_NOW))
    # Polls and cancels first: they are cheap and a backlog of new submissions must
    # not leave running jobs unwatched.
    .order_by(case((steps.c.state.in_(_SUBMITTABLE), 1), else_=0), steps.c.run_at)
    .limit(bindparam("_limit"))
)


@functools.cache
def _claim_chosen(postgres: bool) -> Any:
    # Re-checked under the row locks: another claimer may have taken a row since.
    lockable = select(steps.c.id).where(
        steps.c.id.in_(bindparam("_ids", expanding=True)), _due(_CLAIM_NOW)
    )
    if postgres:
        lockable = lockable.with_for_update(skip_locked=True)
    return (
        update(steps)
        .where(steps.c.id.in_(lockable.scalar_subquery()))
        .values(
            lease_owner=bindparam("_owner"),
            lease_expires_at=bindparam("_expires"),
            lease_token=steps.c.lease_token + 1,
        )
        .returning(*steps.c)
    )


def _in_flight(now: float) -> Any:
    """Steps holding a provider slot: submitted, or claimed to be submitted."""
    return or_(
        steps.c.state.in_((StepState.ACTIVE.value, StepState.CANCELING.value)),
        and_(steps.c.state.in_(_SUBMITTABLE), steps.c.lease_expires_at >= now),
    )


async def claim_steps(
    db: Database,
    *,
    worker_id: str,
    limit: int,
    now: float,
    lease_s: float,
    max_in_flight: Mapping[str, int],
    rate_per_min: Mapping[str, int] | None = None,
) -> list[Step]:
    """Lease up to ``limit`` due steps to ``worker_id``.

    Polls and cancels are always claimable; a ready step (about to be submitted) only
    while its provider has fewer than ``max_in_flight[provider]`` jobs in flight across
    all workers. The per-provider count is serialized with an advisory lock on
    PostgreSQL (SQLite serializes the whole claim with BEGIN IMMEDIATE). Candidates are
    read without locks; only the chosen rows are locked, with FOR UPDATE SKIP LOCKED,
    so concurrent claimers skip each other's rows instead of waiting or sharing them.
    """
    if limit <= 0:
        return []
    rates = rate_per_min or {}
    async with db.write() as conn:
        candidates = (
            await conn.execute(_CLAIM_CANDIDATES, {"_now": now, "_limit": limit * 4})
        ).all()
        chosen: list[str] = []
        room: dict[str, int] = {}
        for step_id, state, provider in candidates:
            if len(chosen) >= limit:
                break
            if state == StepState.READY.value and (provider in max_in_flight or provider in rates):
                if provider not in room:
                    room[provider] = await _submission_room(
                        db, conn, provider, now, max_in_flight.get(provider), rates.get(provider)
                    )
                if room[provider] <= 0:
                    continue
                room[provider] -= 1
            chosen.append(step_id)
        if not chosen:
            return []
        result = await conn.execute(
            _claim_chosen(db.is_postgres),
            {"_ids": chosen, "_now": now, "_owner": worker_id, "_expires": now + lease_s},
        )
        return [Step.from_row(r) for r in result.mappings()]


async def _submission_room(
    db: Database,
    conn: AsyncConnection,
    provider: str,
    now: float,
    max_in_flight: int | None,
    per_minute: int | None,
) -> int:
    """How many more jobs may be submitted to ``provider`` now, across all workers.

    Serialized per provider, and derived from the rows themselves (no counter to
    drift): jobs in flight, and submissions in the last minute, where each attempt is
    one submission and a claimed ready step is one about to happen.
    """
    await db.lock_for(conn, f"vidpipe.submissions.{provider}")
    room = 1 << 30
    if max_in_flight is not None:
        busy = await conn.scalar(
            select(func.count())
            .select_from(steps)
            .where(steps.c.provider == provider, _in_flight(now))
        )
        room = min(room, max_in_flight - int(busy or 0))
    if per_minute is not None:
        recent = await conn.scalar(
            select(func.count())
            .select_from(attempts)
            .where(attempts.c.provider == provider, attempts.c.created_at > now - 60.0)
        )
        about_to = await conn.scalar(
            select(func.count())
            .select_from(steps)
            .where(
                steps.c.provider == provider,
                steps.c.state.in_(_SUBMITTABLE),
                steps.c.lease_expires_at >= now,
            )
        )
        room = min(room, per_minute - int(recent or 0) - int(about_to or 0))
    return room


async def update_step(
    conn: AsyncConnection,
    step: Step,
    *,
    to: StepState | None = None,
    release: bool = False,
    **values: Any,
) -> None:
    """Write a claimed step, guarded by its lease token (and its state when changing it)."""
    statement = _GUARDED_STEP
    if to is not None:
        statement = _step_transition(to)
        values["state"] = to.value
    if release:
        values.update(lease_owner=None, lease_expires_at=None)
    result = await conn.execute(
        statement, {**values, "_step_id": step.id, "_token": step.lease_token}
    )
    if result.rowcount != 1:
        current = (await conn.execute(_STEP_STATE_AND_LEASE, {"step_id": step.id})).first()
        if current is not None and current[1] != step.lease_token:
            raise LeaseLost(f"step {step.id}: lease taken over")
        raise IllegalTransition(
            f"step {step.id} cannot go from {current[0] if current else None} to {to}"
        )


async def holds_lease(conn: AsyncConnection, step: Step) -> bool:
    """Whether the claim of ``step`` (its lease token) is still the current one."""
    token = await conn.scalar(_LEASE_TOKEN, {"step_id": step.id})
    return token == step.lease_token


async def release_lease(conn: AsyncConnection, step: Step) -> None:
    """Give a step back without changing it (e.g. the worker is shutting down)."""
    await conn.execute(
        _GUARDED_STEP,
        {
            "_step_id": step.id,
            "_token": step.lease_token,
            "lease_owner": None,
            "lease_expires_at": None,
        },
    )


async def set_steps_state(
    conn: AsyncConnection, job_id: str, frm: Sequence[StepState], to: StepState, now: float
) -> list[str]:
    """Move every step of a job in one of ``frm`` to ``to`` (no lease needed: a lease
    holder's next guarded write will notice). Returns the ids moved."""
    result = await conn.execute(
        update(steps)
        .where(steps.c.job_id == job_id, steps.c.state.in_([s.value for s in frm]))
        .values(state=to.value, run_at=now, updated_at=now)
        .returning(steps.c.id)
    )
    return [r[0] for r in result]


async def cancel_unstarted(conn: AsyncConnection, job_id: str, now: float) -> list[str]:
    """When a job fails: cancel its steps that have not started (waiting, blocked, or
    ready but unclaimed), so nothing new is paid for. Steps in flight (claimed, or at
    a provider) finish, and a retry of the job reuses what they made."""
    unstarted = or_(
        steps.c.state.in_((StepState.PENDING.value, StepState.BLOCKED.value)),
        and_(
            steps.c.state == StepState.READY.value,
            or_(steps.c.lease_owner.is_(None), steps.c.lease_expires_at < now),
        ),
    )
    result = await conn.execute(
        update(steps)
        .where(steps.c.job_id == job_id, unstarted)
        .values(state=StepState.CANCELED.value, run_at=now, updated_at=now)
        .returning(steps.c.id)
    )
    return [r[0] for r in result]


async def extend_leases(conn: AsyncConnection, worker_id: str, until: float) -> int:
    result = await conn.execute(
        _EXTEND_LEASES, {"_worker_id": worker_id, "lease_expires_at": until}
    )
    return int(result.rowcount)


async def next_run_at(conn: AsyncConnection) -> float | None:
    value = await conn.scalar(select(func.min(steps.c.run_at)).where(steps.c.state.in_(_CLAIMABLE)))
    return float(value) if value is not None else None


async def insert_attempt(conn: AsyncConnection, attempt: Attempt) -> None:
    await conn.execute(_INSERT_ATTEMPT, dict(attempt.__dict__))


async def current_attempt(conn: AsyncConnection, step_id: str) -> Attempt | None:
    row = (await conn.execute(_CURRENT_ATTEMPT, {"step_id": step_id})).mappings().first()
    return Attempt.from_row(row) if row else None


async def attempts_of_job(conn: AsyncConnection, job_id: str) -> list[Attempt]:
    rows = await conn.execute(_ATTEMPTS_OF_JOB, {"job_id": job_id})
    return [Attempt.from_row(r) for r in rows.mappings()]


async def transition_attempt(
    conn: AsyncConnection, attempt_id: str, to: AttemptState, **values: Any
) -> None:
    result = await conn.execute(
        _attempt_transition(to), {**values, "_attempt_id": attempt_id, "state": to.value}
    )
    if result.rowcount != 1:
        raise IllegalTransition(f"attempt {attempt_id} cannot go to {to.value}")


async def register_worker(
    conn: AsyncConnection, worker_id: str, hostname: str, pid: int, now: float
) -> None:
    await conn.execute(
        insert(workers).values(
            id=worker_id, hostname=hostname, pid=pid, started_at=now, heartbeat_at=now
        )
    )


async def worker_heartbeat(
    conn: AsyncConnection, worker_id: str, now: float, *, stopped: bool = False
) -> None:
    values: dict[str, Any] = {"_worker_id": worker_id, "heartbeat_at": now}
    if stopped:
        values["stopped_at"] = now
    await conn.execute(_WORKER_HEARTBEAT, values)
