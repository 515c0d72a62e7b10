"""Deadlines, fallbacks, submission rate limits, aliases and the reconciler, end to end
through real workers and a real database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import select, update

from vidpipe.config import AliasTarget, Settings
from vidpipe.core import reconciler
from vidpipe.core.clock import ScaledClock
from vidpipe.core.requests import CreateVideo
from vidpipe.core.runtime import Runtime
from vidpipe.core.states import JobStatus
from vidpipe.errors import InvalidRequest, VidpipeError
from vidpipe.store import jobs as job_q
from vidpipe.store import steps as step_q
from vidpipe.store import tenants as tenant_q
from vidpipe.store.schema import attempts, jobs, steps

pytestmark = pytest.mark.timeout(120)


@contextlib.asynccontextmanager
async def _running(runtime: Runtime) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.new_worker().run(stop))
    try:
        yield
    finally:
        stop.set()
        await task
        runtime.workers.clear()


async def _wait_status(rt: Runtime, job_id: str, want: set[str], timeout_s: float = 60) -> str:
    async with asyncio.timeout(timeout_s):
        while True:
            status = (await rt.videos.get(None, job_id)).status
            if status in want:
                return status
            await asyncio.sleep(0.05)


@pytest.fixture
async def open_runtime(
    db_url: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[Callable[..., object]]:
    opened: list[Runtime] = []

    async def factory(**overrides: object) -> tuple[Runtime, str]:
        clock = overrides.pop("clock", None)
        settings = make_settings(db_url, instant_provider=True, idle_poll_s=0.1, **overrides)
        rt = await Runtime.open(settings, run_migrations=False, clock=clock)  # type: ignore[arg-type]
        opened.append(rt)
        async with rt.db.write() as conn:
            tenant = await tenant_q.ensure_tenant(conn, "acme", rt.clock.now())
        return rt, tenant.id

    yield factory
    for rt in opened:
        await rt.close()


async def test_a_step_past_its_deadline_expires_and_cancels_the_provider_job(
    open_runtime: Callable[..., object],
) -> None:
    rt, tenant = await open_runtime(  # type: ignore[misc]
        step_deadline_s=0.5, instant_latency_s=30
    )
    job = (
        await rt.videos.create(
            tenant, CreateVideo(prompt="slow", seconds=1, size="640x360", model="instant/test")
        )
    ).job
    async with _running(rt):
        assert await _wait_status(rt, job.id, {"failed", "completed"}) == "failed"
    done = await rt.videos.get(None, job.id)
    assert done.error_code == "deadline_exceeded"
    async with rt.db.read() as conn:
        (step,) = await step_q.steps_of_job(conn, job.id)
    assert step.state == "expired"
    calls = (rt.settings.home / "instant-provider" / "calls.log").read_text()
    assert '"call": "cancel"' in calls


async def test_fallback_model_takes_over_after_a_final_verdict(
    open_runtime: Callable[..., object],
) -> None:
    rt, tenant = await open_runtime(  # type: ignore[misc]
        step_deadline_s=5, instant_latency_s=60
    )
    job = (
        await rt.videos.create(
            tenant,
            CreateVideo(
                prompt="fall back",
                seconds=1,
                size="640x360",
                model="instant/test",
                fallback_models=["local/procedural"],
            ),
        )
    ).job
    async with _running(rt):
        assert await _wait_status(rt, job.id, {"failed", "completed"}) == "completed"
    async with rt.db.read() as conn:
        tries = await step_q.attempts_of_job(conn, job.id)
        events = [e.type for e in await job_q.list_events(conn, job.id)]
    assert [(a.provider, a.state, a.error_code) for a in tries] == [
        ("instant", "failed", "deadline_exceeded"),
        ("local", "succeeded", None),
    ]
    assert "step.fallback" in events


async def test_unknown_or_unfit_fallbacks_are_refused_up_front(
    open_runtime: Callable[..., object],
) -> None:
    rt, tenant = await open_runtime()  # type: ignore[misc]
    with pytest.raises(InvalidRequest) as info:
        await rt.videos.create(
            tenant, CreateVideo(prompt="x", size="640x360", fallback_models=["nope/x"])
        )
    assert (info.value.code, info.value.param) == ("unknown_model", "fallback_models")
    with pytest.raises(InvalidRequest) as info:
        await rt.videos.create(
            tenant,
            CreateVideo(prompt="x", size="1920x1080", fallback_models=["instant/test"]),
        )
    assert (info.value.code, info.value.param) == ("unsupported_size", "fallback_models")
    async with rt.db.read() as conn:
        assert await job_q.count_jobs(conn) == 0


async def test_alias_routes_by_weight_and_keeps_the_rest_as_fallbacks(
    open_runtime: Callable[..., object],
) -> None:
    rt, _tenant = await open_runtime(  # type: ignore[misc]
        model_aliases={
            "default-video": [
                AliasTarget(model="local/procedural", weight=9),
                AliasTarget(model="instant/test", weight=1),
            ]
        }
    )
    req = CreateVideo(prompt="x", size="640x360", model="default-video")
    low = rt.videos.resolve(req, rand=0.0)
    high = rt.videos.resolve(req, rand=0.95)
    assert (low.model, low.fallback_models) == ("local/procedural", ["instant/test"])
    assert (high.model, high.fallback_models) == ("instant/test", ["local/procedural"])
    picks = [rt.videos.resolve(req, rand=i / 1000).model for i in range(1000)]
    assert picks.count("instant/test") == 100


async def test_submission_rate_limit_holds_across_the_minute(
    open_runtime: Callable[..., object],
) -> None:
    clock = ScaledClock(speed=30)  # one minute of policy in two seconds
    rt, tenant = await open_runtime(  # type: ignore[misc]
        # Leases are in clock time: 300 s of it is 10 s of the heartbeat's real time.
        clock=clock,
        provider_rate_per_min={"instant": 3},
        lease_s=300,
    )
    ids = [
        (
            await rt.videos.create(
                tenant,
                CreateVideo(prompt=f"r{i}", seconds=1, size="640x360", model="instant/test"),
            )
        ).job.id
        for i in range(5)
    ]
    async with _running(rt):
        for job_id in ids:
            await _wait_status(rt, job_id, {"completed"})
    async with rt.db.read() as conn:
        times = sorted(r[0] for r in await conn.execute(select(attempts.c.created_at)))
    assert len(times) == 5
    # No 60-second window ever held more than 3 submissions.
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t - start < 60) <= 3
    assert times[3] - times[0] >= 60


async def test_reconciler_closes_a_job_whose_steps_all_ended(
    open_runtime: Callable[..., object],
) -> None:
    rt, tenant = await open_runtime()  # type: ignore[misc]
    job = (
        await rt.videos.create(
            tenant, CreateVideo(prompt="x", seconds=1, size="640x360", model="instant/test")
        )
    ).job
    # A step finished while its job was left open (as a crash between two writes would).
    async with rt.db.write() as conn:
        await conn.execute(update(steps).where(steps.c.job_id == job.id).values(state="succeeded"))
    result = await reconciler.sweep(rt.db, rt.clock, idempotency_ttl_s=3600)
    assert result.closed_jobs == 1
    assert (await rt.videos.get(None, job.id)).status == JobStatus.COMPLETED.value
    again = await reconciler.sweep(rt.db, rt.clock, idempotency_ttl_s=3600)
    assert again.closed_jobs == 0
    async with rt.db.read() as conn:
        status = await conn.scalar(select(jobs.c.status).where(jobs.c.id == job.id))
    assert status == "completed"


async def test_retention_expires_jobs_and_deletes_their_files(
    open_runtime: Callable[..., object],
) -> None:
    rt, tenant = await open_runtime(retention_days=30)  # type: ignore[misc]
    async with rt.db.write() as conn:
        await tenant_q.set_retention_days(conn, tenant, 2)
    job = (
        await rt.videos.create(
            tenant, CreateVideo(prompt="x", seconds=1, size="640x360", model="instant/test")
        )
    ).job
    async with _running(rt):
        await _wait_status(rt, job.id, {"completed"})
    done = await rt.videos.get(None, job.id)
    assert done.expires_at is not None
    assert done.completed_at is not None
    assert done.expires_at - done.completed_at == pytest.approx(2 * 86400)
    asset = await rt.videos.video_asset(None, job.id)
    path = rt.blobs.local_path(asset.key)
    assert path is not None
    assert path.exists()
    assert await reconciler.expire_jobs(rt.db, rt.blobs, done.expires_at - 1) == 0
    assert await reconciler.expire_jobs(rt.db, rt.blobs, done.expires_at + 1) == 1
    assert (await rt.videos.get(None, job.id)).status == "expired"
    assert not path.exists()
    with pytest.raises(VidpipeError) as info:
        await rt.videos.video_asset(None, job.id)
    assert (info.value.code, info.value.http_status) == ("video_expired", 410)
    async with rt.db.read() as conn:
        events = [e.type for e in await job_q.list_events(conn, job.id)]
    assert events[-1] == "video.expired"
