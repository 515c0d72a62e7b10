"""The watchdog on a real database: rules fire once, stay quiet within their window, fire
again after it, agree across concurrent evaluators, and respect their rate limit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from vidpipe.core.clock import ManualClock
from vidpipe.core.runtime import Runtime
from vidpipe.money.catalog import Price
from vidpipe.notify.channels import AlertChannel
from vidpipe.obs import watchdog
from vidpipe.obs.schema import watchdog_alerts
from vidpipe.obs.settings import ObsSettings, obs_settings
from vidpipe.providers.base import PollResult, ProviderStatus
from vidpipe.providers.instant import InstantProvider
from vidpipe.store import steps as step_q
from vidpipe.store.schema import outbox

from .conftest import Harness

pytestmark = pytest.mark.timeout(120)

CHANNELS = [AlertChannel(kind="slack", url="http://alerts.test/slack")]


class BrokenProvider(InstantProvider):
    name = "broken"

    async def poll(self, provider_job_id: str) -> PollResult:
        return PollResult(ProviderStatus.FAILED, error_code="boom", error_message="it gave up")


async def _alerts_in_outbox(rt: Runtime) -> list[dict[str, Any]]:
    async with rt.db.read() as conn:
        rows = await conn.execute(
            select(outbox.c.payload).where(outbox.c.kind == "alert").order_by(outbox.c.created_at)
        )
        return [dict(r[0]) for r in rows]


async def _watchdog_alerts_in_outbox(rt: Runtime) -> list[dict[str, Any]]:
    # (The reconciler's weekly spend report goes to the same channels.)
    return [a for a in await _alerts_in_outbox(rt) if "weekly spend" not in a["text"]]


async def _evaluate(
    rt: Runtime, clock: ManualClock, cfg: ObsSettings
) -> list[tuple[str, str, bool]]:
    decisions = await watchdog.evaluate(
        rt.db, clock, CHANNELS, lease_s=rt.settings.lease_s, settings=cfg
    )
    return sorted((d.alert.rule, d.alert.key, d.sent) for d in decisions)


@contextlib.contextmanager
def _no_background_watchdog(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Workers started by the test leave the rules to the test's own evaluations."""
    monkeypatch.setenv("VIDPIPE_WATCHDOG_ENABLED", "false")
    obs_settings.cache_clear()
    try:
        yield
    finally:
        monkeypatch.delenv("VIDPIPE_WATCHDOG_ENABLED")
        obs_settings.cache_clear()


async def _failed_jobs(harness: Harness, n: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    rt = harness.runtime
    rt.registry.add(BrokenProvider(rt.settings.home / "instant-provider", log_calls=False))
    rt.videos.prices.overrides["broken/test"] = Price(usd=0.0)
    ids = [str((await harness.create(model="broken/test"))["id"]) for _ in range(n)]
    with _no_background_watchdog(monkeypatch):
        for job_id in ids:
            assert await harness.run_until(job_id) == "failed"
    return ids


async def test_condition_rules_fire_once_per_window(harness: Harness) -> None:
    rt = harness.runtime
    for _ in range(2):
        await harness.create(model="instant/test")  # queued: no worker runs
    clock = ManualClock(rt.clock.now())
    cfg = ObsSettings(watchdog_queue_depth_max=1)

    assert await _evaluate(rt, clock, cfg) == [("queue_depth", "", True)]
    clock.advance(60)
    assert await _evaluate(rt, clock, cfg) == []
    clock.advance(940)  # nothing has moved for 1000 s, with work due
    assert await _evaluate(rt, clock, cfg) == [("no_progress", "", True)]
    clock.advance(2601)  # an hour after the first queue alert
    assert await _evaluate(rt, clock, cfg) == [("queue_depth", "", True)]
    assert await _evaluate(rt, clock, cfg) == []

    # Many workers evaluating at once agree: one alert.
    clock.advance(3601)
    both = await asyncio.gather(*(_evaluate(rt, clock, cfg) for _ in range(3)))
    assert sorted(d for decisions in both for d in decisions) == [
        ("no_progress", "", True),
        ("queue_depth", "", True),
    ]

    sent = await _alerts_in_outbox(rt)
    assert len(sent) == 5
    assert sent[0]["text"].startswith("*vidpipe queue is deep*\n2 steps are due")
    assert sent[1]["text"].startswith("*vidpipe is making no progress*")


async def test_failed_jobs_alert_once_each_within_the_rate_limit(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = harness.runtime
    ids = await _failed_jobs(harness, 3, monkeypatch)
    clock = ManualClock(rt.clock.now() + 1)
    cfg = ObsSettings(watchdog_min_samples=1, watchdog_max_alerts_per_hour=2)

    first = await _evaluate(rt, clock, cfg)
    job_alerts = [d for d in first if d[0] == "job_failed"]
    assert sorted(key for _, key, _ in job_alerts) == sorted(ids)
    assert sorted(sent for *_, sent in job_alerts) == [False, True, True]  # 2 an hour
    assert ("rate_limited", "job_failed", True) in first
    assert ("success_rate", "", True) in first  # 0 of 3 succeeded
    assert ("provider_success_rate", "broken", True) in first  # 0 of 6 attempts
    assert len(first) == 6

    clock.advance(30)
    assert await _evaluate(rt, clock, cfg) == []  # nothing new, nothing again

    texts = [a["text"] for a in await _alerts_in_outbox(rt)]
    assert len(texts) == 5  # the suppressed one is recorded, not sent
    assert sum("vidpipe job failed" in t for t in texts) == 2
    assert sum("held back: job_failed" in t for t in texts) == 1
    assert any("boom: it gave up" in t for t in texts)
    async with rt.db.read() as conn:
        rows = (await conn.execute(select(watchdog_alerts))).mappings().all()
    assert sum(1 for r in rows if r["rule"] == "job_failed") == 3
    assert sum(r["suppressed"] for r in rows) == 1


async def test_a_stale_worker_is_reported_once(harness: Harness) -> None:
    rt = harness.runtime
    clock = ManualClock(rt.clock.now())
    async with rt.db.write() as conn:
        await step_q.register_worker(conn, "wrk_gone", "host-b", 77, clock.now() - 300)
        await step_q.register_worker(conn, "wrk_fine", "host-a", 78, clock.now() - 5)
    cfg = ObsSettings()
    assert await _evaluate(rt, clock, cfg) == [("stale_worker", "wrk_gone", True)]
    clock.advance(7200)
    # Still silent about wrk_gone; wrk_fine has gone quiet since.
    assert await _evaluate(rt, clock, cfg) == [("stale_worker", "wrk_fine", True)]
    assert await _evaluate(rt, clock, cfg) == []
    (first, _second) = await _alerts_in_outbox(rt)
    assert "Worker wrk_gone on host-b has sent no heartbeat for 5 min" in first["text"]


async def test_workers_run_the_watchdog_in_their_housekeeping(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = harness.runtime
    (job_id,) = await _failed_jobs(harness, 1, monkeypatch)
    rt.settings.alert_channels = list(CHANNELS)
    stop = asyncio.Event()
    worker = rt.new_worker()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(20):
            while not (alerts := await _watchdog_alerts_in_outbox(rt)):
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await task
        rt.workers.remove(worker)
    assert len(alerts) == 1
    assert job_id in alerts[0]["text"]
    assert alerts[0]["text"].startswith("*vidpipe job failed*")
