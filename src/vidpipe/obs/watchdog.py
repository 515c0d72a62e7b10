"""The watchdog: alert rules over a snapshot of the installation, evaluated by workers.

Rules are pure functions of a :class:`Snapshot` and the thresholds (tested with tables of
cases). :func:`evaluate` reads the snapshot from SQL, applies the rules, and for each
alert decides in one serialized transaction whether it is new (deduplicated: one alert
per rule and subject per window, or once ever for one-off subjects such as a failed
job), whether the rule is over its hourly rate limit (then the alert is recorded, not
sent, and one notice says so), and enqueues it to the alert channels through the
outbox, in the same transaction as the record that deduplicates it. Any number of
workers may evaluate at the same time: they agree on what was sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.config import Settings
from vidpipe.core.clock import Clock
from vidpipe.notify.channels import AlertChannel
from vidpipe.notify.outbox import enqueue_alert
from vidpipe.obs.cluster import WORKER_MEMORY_S, ClusterState, FailedJob, quantile, read_cluster
from vidpipe.obs.schema import watchdog_alerts
from vidpipe.obs.settings import ObsSettings, obs_settings
from vidpipe.store.db import Database

log = logging.getLogger("vidpipe.watchdog")

RATE_WINDOW_S = 3600.0
KEEP_S = 30 * 86400.0
RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class WorkerBeat:
    id: str
    hostname: str
    heartbeat_age_s: float


@dataclass(frozen=True)
class Snapshot:
    """What the rules look at; every field is cluster-wide."""

    now: float
    window_s: float
    jobs_finished: Mapping[str, int] = field(default_factory=dict)  # in the window
    job_durations_s: Sequence[float] = ()  # completed in the window
    provider_attempts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    queue_depth: int = 0  # due and unclaimed steps
    workers: Sequence[WorkerBeat] = ()  # running (not stopped) workers
    failed_jobs: Sequence[FailedJob] = ()  # in the window
    due_steps: int = 0  # open steps whose time has come, claimed or not
    last_progress_at: float | None = None  # latest step write or event


@dataclass(frozen=True)
class Alert:
    rule: str
    key: str  # the subject: job id, worker id, provider, or "" (installation)
    severity: str  # "critical" or "warning"
    title: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    # Least time before the same rule alerts about the same subject again; None: never.
    repeat_after_s: float | None = None


def snapshot_of(state: ClusterState) -> Snapshot:
    progress = state.progress
    return Snapshot(
        now=state.now,
        window_s=state.window.seconds,
        jobs_finished=state.window.jobs_finished,
        job_durations_s=state.window.job_durations_s,
        provider_attempts=state.window.provider_attempts,
        queue_depth=state.status.due_steps,
        workers=[WorkerBeat(w.id, w.hostname, w.heartbeat_age_s) for w in state.status.workers],
        failed_jobs=state.failed_jobs,
        due_steps=progress.due_steps if progress else 0,
        last_progress_at=progress.last_progress_at if progress else None,
    )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


# -- rules ------------------------------------------------------------------------


def job_failed(s: Snapshot, cfg: ObsSettings) -> list[Alert]:
    """A job failed after its retries (and fallbacks): one alert per job."""
    return [
        Alert(
            rule="job_failed",
            key=job.id,
            severity="warning",
            title="vidpipe job failed",
            text=f"Job {job.id} ({job.model}) failed after its retries: "
            f"{job.error_code}: {job.error_message}"[:1000],
            data={"job_id": job.id, "model": job.model, "code": job.error_code},
        )
        for job in s.failed_jobs
    ]


def success_rate(s: Snapshot, cfg: ObsSettings) -> list[Alert]:
    done = s.jobs_finished.get("completed", 0)
    total = done + s.jobs_finished.get("failed", 0)
    if total < cfg.watchdog_min_samples or done / total >= cfg.watchdog_success_rate_min:
        return []
    rate = done / total
    return [
        Alert(
            rule="success_rate",
            key="",
            severity="critical",
            title="vidpipe success rate low",
            text=f"{rate:.0%} of the jobs finished in the last {_minutes(s.window_s)} succeeded "
            f"({done} of {total}); the floor is {cfg.watchdog_success_rate_min:.0%}.",
            data={"success_rate": round(rate, 4), "completed": done, "finished": total},
            repeat_after_s=s.window_s,
        )
    ]


def queue_depth(s: Snapshot, cfg: ObsSettings) -> list[Alert]:
    if s.queue_depth <= cfg.watchdog_queue_depth_max:
        return []
    return [
        Alert(
            rule="queue_depth",
            key="",
            severity="warning",
            title="vidpipe queue is deep",
            text=f"{s.queue_depth} steps are due and waiting for a worker or a provider slot "
            f"(threshold {cfg.watchdog_queue_depth_max}).",
            data={"queue_depth": s.queue_depth},
            repeat_after_s=s.window_s,
        )
    ]


def job_p95(s: Snapshot, cfg: ObsSettings) -> list[Alert]:
    p95 = quantile(s.job_durations_s, 0.95)
    if (
        p95 is None
        or len(s.job_durations_s) < cfg.watchdog_min_samples
        or p95 <= cfg.watchdog_job_p95_max_s
    ):
        return []
    return [
        Alert(
            rule="job_p95",
            key="",
            severity="warning",
            title="vidpipe jobs are slow",
            text=f"95 % of the jobs completed in the last {_minutes(s.window_s)} took up to "
            f"{p95:.0f} s (threshold {cfg.watchdog_job_p95_max_s:.0f} s, "
            f"{len(s.job_durations_s)} jobs).",
            data={"p95_s": round(p95, 3), "jobs": len(s.job_durations_s)},
            repeat_after_s=s.window_s,
        )
    ]


def provider_success_rate(s: Snapshot, cfg: ObsSettings) -> list[Alert]:
    alerts = []
    for provider, counts in sorted(s.provider_attempts.items()):
        ok = counts.get("succeeded", 0)
        total = ok + counts.get("failed", 0)
        if total < cfg.watchdog_min_samples or ok / total >= cfg.watchdog_provider_success_rate_min:
            continue
        alerts.append(
            Alert(
                rule="provider_success_rate",
                key=provider,
                severity="warning",
                title=f"vidpipe provider {provider} is failing",
                text=f"{ok / total:.0%} of the attempts at {provider} in the last "
                f"{_minutes(s.window_s)} succeeded ({ok} of {total}); the floor is "
                f"{cfg.watchdog_provider_success_rate_min:.0%}.",
                data={
                    "provider": provider,
                    "success_rate": round(ok / total, 4),
                    "attempts": total,
                },
                repeat_after_s=s.window_s,
            )
        )
    return alerts


def stale_worker(s: Snapshot, cfg: ObsSettings) -> list[Alert]:
    """A worker that never said it stopped and has not sent a heartbeat: once per worker."""
    return [
        Alert(
            rule="stale_worker",
            key=w.id,
            severity="warning",
            title="vidpipe worker stopped responding",
            text=f"Worker {w.id} on {w.hostname} has sent no heartbeat for "
            f"{_minutes(w.heartbeat_age_s)}; its steps are taken over when their leases expire.",
            data={"worker": w.id, "hostname": w.hostname, "heartbeat_age_s": w.heartbeat_age_s},
        )
        for w in s.workers
        if cfg.watchdog_worker_stale_s < w.heartbeat_age_s < WORKER_MEMORY_S
    ]


def no_progress(s: Snapshot, cfg: ObsSettings) -> list[Alert]:
    """Work is due, yet no step was written and no event recorded for a long time."""
    if s.due_steps == 0 or s.last_progress_at is None:
        return []
    idle = s.now - s.last_progress_at
    if idle <= cfg.watchdog_no_progress_s:
        return []
    return [
        Alert(
            rule="no_progress",
            key="",
            severity="critical",
            title="vidpipe is making no progress",
            text=f"{s.due_steps} steps are due but nothing has moved for {_minutes(idle)} "
            "(no step written, no event): are the workers running and the database writable?",
            data={"due_steps": s.due_steps, "idle_s": round(idle, 1)},
            repeat_after_s=s.window_s,
        )
    ]


RULES: dict[str, Callable[[Snapshot, ObsSettings], list[Alert]]] = {
    "job_failed": job_failed,
    "success_rate": success_rate,
    "queue_depth": queue_depth,
    "job_p95": job_p95,
    "provider_success_rate": provider_success_rate,
    "stale_worker": stale_worker,
    "no_progress": no_progress,
}


def evaluate_rules(s: Snapshot, cfg: ObsSettings) -> list[Alert]:
    """Every enabled rule's alerts for this snapshot (before deduplication)."""
    return [
        alert
        for name, rule in RULES.items()
        if name not in cfg.watchdog_disabled_rules
        for alert in rule(s, cfg)
    ]


# -- deciding and sending --------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    alert: Alert
    sent: bool  # False: over the rule's rate limit, recorded only


async def evaluate(
    db: Database,
    clock: Clock,
    channels: Sequence[AlertChannel],
    *,
    lease_s: float,
    settings: ObsSettings | None = None,
) -> list[Decision]:
    """Read the snapshot, apply the rules, record and send what is new."""
    cfg = settings or obs_settings()
    if not cfg.watchdog_enabled:
        return []
    now = clock.now()
    state = await read_cluster(
        db,
        now,
        lease_s=lease_s,
        window_s=cfg.watchdog_window_s,
        progress=True,
        failed_jobs=True,
    )
    alerts = evaluate_rules(snapshot_of(state), cfg)
    decisions: list[Decision] = []
    if not alerts:
        return decisions
    async with db.write() as conn:
        # Evaluations of many workers one after another, so they agree on what is new.
        await db.lock_for(conn, "vidpipe.watchdog")
        for alert in alerts:
            if await _already_alerted(conn, alert, now):
                continue
            sent_recently = await _sent_since(conn, alert.rule, now - RATE_WINDOW_S)
            allowed = sent_recently < cfg.watchdog_max_alerts_per_hour
            await _record(conn, alert, now, suppressed=not allowed)
            decisions.append(Decision(alert, allowed))
            if allowed:
                await _send(conn, channels, alert, now)
            elif notice := await _notice_rate_limited(conn, channels, alert.rule, cfg, now):
                decisions.append(Decision(notice, True))
        await conn.execute(delete(watchdog_alerts).where(watchdog_alerts.c.sent_at < now - KEEP_S))
    return decisions


async def run_safely(db: Database, clock: Clock, settings: Settings) -> None:
    """One evaluation for a worker's housekeeping; a failure is logged, never raised."""
    try:
        await evaluate(db, clock, settings.alert_channels, lease_s=settings.lease_s)
    except Exception:
        log.exception("watchdog evaluation failed")


async def _already_alerted(conn: AsyncConnection, alert: Alert, now: float) -> bool:
    query = select(func.count()).where(
        watchdog_alerts.c.rule == alert.rule, watchdog_alerts.c.key == alert.key
    )
    if alert.repeat_after_s is not None:
        query = query.where(watchdog_alerts.c.sent_at > now - alert.repeat_after_s)
    return bool(await conn.scalar(query))


async def _sent_since(conn: AsyncConnection, rule: str, since: float) -> int:
    count = await conn.scalar(
        select(func.count()).where(
            watchdog_alerts.c.rule == rule,
            watchdog_alerts.c.sent_at > since,
            watchdog_alerts.c.suppressed == 0,
        )
    )
    return int(count or 0)


async def _record(conn: AsyncConnection, alert: Alert, now: float, *, suppressed: bool) -> None:
    await conn.execute(
        insert(watchdog_alerts).values(
            rule=alert.rule,
            key=alert.key,
            sent_at=now,
            suppressed=int(suppressed),
            severity=alert.severity,
            title=alert.title,
            text=alert.text,
        )
    )


async def _send(
    conn: AsyncConnection, channels: Sequence[AlertChannel], alert: Alert, now: float
) -> None:
    log.warning(
        "alert %s: %s",
        alert.rule,
        alert.text,
        extra={"rule": alert.rule, "subject": alert.key, "severity": alert.severity},
    )
    await enqueue_alert(
        conn,
        channels,
        title=alert.title,
        text=alert.text,
        data={"rule": alert.rule, "subject": alert.key, "severity": alert.severity, **alert.data},
        now=now,
    )


async def _notice_rate_limited(
    conn: AsyncConnection,
    channels: Sequence[AlertChannel],
    rule: str,
    cfg: ObsSettings,
    now: float,
) -> Alert | None:
    """Once per rate window: say that alerts of ``rule`` are being held back."""
    notice = Alert(
        rule=RATE_LIMITED,
        key=rule,
        severity="warning",
        title=f"vidpipe alerts held back: {rule}",
        text=f"More than {cfg.watchdog_max_alerts_per_hour} {rule} alerts in an hour; the "
        "others are recorded (table watchdog_alerts) but not sent for now.",
        data={"limited_rule": rule, "per_hour": cfg.watchdog_max_alerts_per_hour},
        repeat_after_s=RATE_WINDOW_S,
    )
    if await _already_alerted(conn, notice, now):
        return None
    await _record(conn, notice, now, suppressed=False)
    await _send(conn, channels, notice, now)
    return notice
