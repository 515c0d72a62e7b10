"""What the database knows about the whole installation, read for /metrics and the watchdog.

Every number here is cluster-wide: it is the same whichever API replica or worker reads
it, however many processes on however many machines do the work. Counters are counts
and sums over rows that never change once final (finished attempts, ledger entries),
so they only grow, as Prometheus counters must.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.core.states import AttemptState, JobStatus, StepState
from vidpipe.core.status import SystemStatus, read_status
from vidpipe.notify.outbox import RETRY_DELAYS_S
from vidpipe.store.db import Database
from vidpipe.store.schema import attempts, events, jobs, ledger, outbox, steps

# Workers whose last heartbeat is older than this are ghosts of crashed processes: left
# out of the per-worker series and of the stale-worker rule.
WORKER_MEMORY_S = 86400.0
# Steps that still have work ahead of them (a "due" one of these is work to be done).
OPEN_STEP_STATES = (
    StepState.READY.value,
    StepState.ACTIVE.value,
    StepState.CANCELING.value,
    StepState.BLOCKED.value,
)
# Most completed jobs of a window whose durations are read for its quantiles.
DURATION_SAMPLE_LIMIT = 20000


@dataclass(frozen=True)
class Window:
    """Jobs and provider attempts that finished in the last ``seconds``."""

    seconds: float
    jobs_finished: dict[str, int]  # by final status
    job_durations_s: list[float]  # created → completed, of the completed ones
    provider_attempts: dict[str, dict[str, int]]  # provider → outcome → count

    @property
    def success_ratio(self) -> float | None:
        """Completed / (completed + failed); canceled jobs are nobody's failure."""
        done = self.jobs_finished.get("completed", 0)
        total = done + self.jobs_finished.get("failed", 0)
        return done / total if total else None

    def provider_success_ratio(self, provider: str) -> float | None:
        counts = self.provider_attempts.get(provider, {})
        ok = counts.get("succeeded", 0)
        total = ok + counts.get("failed", 0)
        return ok / total if total else None

    def provider_finished(self, provider: str) -> int:
        counts = self.provider_attempts.get(provider, {})
        return counts.get("succeeded", 0) + counts.get("failed", 0)

    def job_duration_quantile(self, q: float) -> float | None:
        return quantile(self.job_durations_s, q)


def quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile by the nearest-rank method (an observed value), None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(math.ceil(q * len(ordered)), 1)
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Totals:
    """Cumulative counts over rows that no longer change: Prometheus counters."""

    attempts: dict[tuple[str, str], int]  # (provider, outcome) → finished attempts
    failed_attempts: dict[tuple[str, str, str], int]  # (provider, class, code)
    spend_micros: dict[tuple[str, str], int]  # (provider, model) → settled
    video_seconds: dict[tuple[str, str], int]  # (provider, model) → delivered
    steps_by_state: dict[str, int]
    deliveries: dict[tuple[str, str], int]  # (kind, outcome) → outbox messages


@dataclass(frozen=True)
class Progress:
    """Whether work is due, and when anything last moved."""

    due_steps: int  # open steps whose run_at has come (claimed or not)
    last_progress_at: float | None  # latest step write or event


@dataclass(frozen=True)
class FailedJob:
    id: str
    model: str
    error_code: str
    error_message: str
    completed_at: float


@dataclass(frozen=True)
class ClusterState:
    now: float
    status: SystemStatus
    window: Window
    totals: Totals | None = None
    progress: Progress | None = None
    failed_jobs: list[FailedJob] = field(default_factory=list)


async def read_window(conn: AsyncConnection, now: float, seconds: float) -> Window:
    since = now - seconds
    finished = {
        str(r[0]): int(r[1])
        for r in await conn.execute(
            select(jobs.c.status, func.count())
            .where(jobs.c.completed_at > since, jobs.c.completed_at <= now)
            .group_by(jobs.c.status)
        )
    }
    durations = [
        float(r[0])
        for r in await conn.execute(
            select(jobs.c.completed_at - jobs.c.created_at)
            .where(
                jobs.c.status == JobStatus.COMPLETED.value,
                jobs.c.completed_at > since,
                jobs.c.completed_at <= now,
            )
            .order_by(jobs.c.completed_at.desc())
            .limit(DURATION_SAMPLE_LIMIT)
        )
    ]
    per_provider: dict[str, dict[str, int]] = {}
    for provider, state, count in await conn.execute(
        select(attempts.c.provider, attempts.c.state, func.count())
        .where(
            attempts.c.finished_at > since,
            attempts.c.finished_at <= now,
            attempts.c.state.in_((AttemptState.SUCCEEDED.value, AttemptState.FAILED.value)),
        )
        .group_by(attempts.c.provider, attempts.c.state)
    ):
        per_provider.setdefault(str(provider), {})[str(state)] = int(count)
    return Window(seconds, finished, durations, per_provider)


async def read_totals(conn: AsyncConnection) -> Totals:
    finished_states = (
        AttemptState.SUCCEEDED.value,
        AttemptState.FAILED.value,
        AttemptState.CANCELED.value,
    )
    attempt_counts = {
        (str(p), str(s)): int(n)
        for p, s, n in await conn.execute(
            select(attempts.c.provider, attempts.c.state, func.count())
            .where(attempts.c.state.in_(finished_states))
            .group_by(attempts.c.provider, attempts.c.state)
        )
    }
    failed = {
        (str(p), str(c or "unknown"), str(code or "unknown")): int(n)
        for p, c, code, n in await conn.execute(
            select(attempts.c.provider, attempts.c.error_class, attempts.c.error_code, func.count())
            .where(attempts.c.state == AttemptState.FAILED.value)
            .group_by(attempts.c.provider, attempts.c.error_class, attempts.c.error_code)
        )
    }
    # Spend is what was settled (money/ledger.py: spent = settle).
    spend = {
        (str(p or "none"), str(m or "none")): int(total or 0)
        for p, m, total in await conn.execute(
            select(ledger.c.provider, ledger.c.model, func.sum(ledger.c.amount_micros))
            .where(ledger.c.kind == "settle")
            .group_by(ledger.c.provider, ledger.c.model)
        )
    }
    # Seconds of video delivered, as money/reports.py counts them: per succeeded attempt.
    seconds = {
        (str(p), str(m)): int(total or 0)
        for p, m, total in await conn.execute(
            select(attempts.c.provider, attempts.c.model, func.sum(jobs.c.seconds))
            .select_from(attempts.join(jobs, jobs.c.id == attempts.c.job_id))
            .where(attempts.c.state == AttemptState.SUCCEEDED.value)
            .group_by(attempts.c.provider, attempts.c.model)
        )
    }
    by_state = {
        str(s): int(n)
        for s, n in await conn.execute(select(steps.c.state, func.count()).group_by(steps.c.state))
    }
    outcome = case(
        (outbox.c.delivered_at.is_not(None), "delivered"),
        # Given up (notify/outbox.py): out of retries, or the receiver answered 410.
        (
            or_(outbox.c.attempts > len(RETRY_DELAYS_S), outbox.c.last_status == 410),
            "failed",
        ),
        (outbox.c.attempts > 0, "retrying"),
        else_="pending",
    )
    deliveries = {
        (str(k), str(o)): int(n)
        for k, o, n in await conn.execute(
            select(outbox.c.kind, outcome, func.count()).group_by(outbox.c.kind, outcome)
        )
    }
    return Totals(attempt_counts, failed, spend, seconds, by_state, deliveries)


async def read_progress(conn: AsyncConnection, now: float) -> Progress:
    due = await conn.scalar(
        select(func.count())
        .select_from(steps)
        .where(steps.c.state.in_(OPEN_STEP_STATES), steps.c.run_at <= now)
    )
    step_moved = await conn.scalar(
        select(func.max(steps.c.updated_at)).where(steps.c.state.in_(OPEN_STEP_STATES))
    )
    last_event = await conn.scalar(
        select(events.c.created_at).order_by(events.c.id.desc()).limit(1)
    )
    moments = [float(v) for v in (step_moved, last_event) if v is not None]
    return Progress(int(due or 0), max(moments) if moments else None)


async def read_failed_jobs(
    conn: AsyncConnection, now: float, seconds: float, *, limit: int = 100
) -> list[FailedJob]:
    rows = await conn.execute(
        select(
            jobs.c.id, jobs.c.model, jobs.c.error_code, jobs.c.error_message, jobs.c.completed_at
        )
        .where(
            jobs.c.status == JobStatus.FAILED.value,
            and_(jobs.c.completed_at > now - seconds, jobs.c.completed_at <= now),
        )
        .order_by(jobs.c.completed_at)
        .limit(limit)
    )
    return [
        FailedJob(str(r[0]), str(r[1]), str(r[2] or ""), str(r[3] or ""), float(r[4])) for r in rows
    ]


async def read_cluster(
    db: Database,
    now: float,
    *,
    lease_s: float,
    window_s: float,
    totals: bool = False,
    progress: bool = False,
    failed_jobs: bool = False,
) -> ClusterState:
    """The status (as ``vidpipe status`` shows it), the window, and what else is asked."""
    status = await read_status(db, now, lease_s=lease_s)
    async with db.read() as conn:
        return ClusterState(
            now=now,
            status=status,
            window=await read_window(conn, now, window_s),
            totals=await read_totals(conn) if totals else None,
            progress=await read_progress(conn, now) if progress else None,
            failed_jobs=await read_failed_jobs(conn, now, window_s) if failed_jobs else [],
        )
