"""The job store on SQLite and PostgreSQL: guarded transitions, claims, leases, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import select, update

from vidpipe.config import Settings
from vidpipe.core.clock import ManualClock
from vidpipe.core.requests import CreateVideo
from vidpipe.core.runtime import Runtime
from vidpipe.core.states import JobStatus, StepState
from vidpipe.errors import IllegalTransition, InvalidRequest, LeaseLost
from vidpipe.store import jobs as job_q
from vidpipe.store import steps as step_q
from vidpipe.store import tenants as tenant_q
from vidpipe.store.db import Database
from vidpipe.store.schema import steps

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def runtime(db_url: str, make_settings: Callable[..., Settings]) -> AsyncIterator[Runtime]:
    rt = await Runtime.open(make_settings(db_url, instant_provider=True), run_migrations=False)
    async with rt.db.write() as conn:
        await tenant_q.create_tenant(conn, "acme", rt.clock.now())
    yield rt
    await rt.close()


async def _tenant(rt: Runtime) -> str:
    async with rt.db.read() as conn:
        tenant = await tenant_q.get_tenant_by_name(conn, "acme")
    assert tenant is not None
    return tenant.id


async def _jobs(rt: Runtime, n: int, model: str = "instant/test") -> list[str]:
    tenant = await _tenant(rt)
    return [
        (
            await rt.videos.create(
                tenant, CreateVideo(prompt=f"p{i}", seconds=1, size="640x360", model=model)
            )
        ).job.id
        for i in range(n)
    ]


async def test_illegal_job_transition_fails_loudly(runtime: Runtime) -> None:
    (job_id,) = await _jobs(runtime, 1)
    with pytest.raises(IllegalTransition, match="queued to completed"):
        async with runtime.db.write() as conn:
            await job_q.transition_job(conn, job_id, JobStatus.COMPLETED)
    async with runtime.db.write() as conn:
        await job_q.transition_job(conn, job_id, JobStatus.IN_PROGRESS)
        await job_q.transition_job(conn, job_id, JobStatus.COMPLETED)
    with pytest.raises(IllegalTransition):
        async with runtime.db.write() as conn:
            await job_q.transition_job(conn, job_id, JobStatus.CANCELED)
    job = await runtime.videos.get(None, job_id)
    assert job.status == "completed"


async def test_concurrent_claimers_never_share_a_step(runtime: Runtime) -> None:
    await _jobs(runtime, 30)
    dbs = [Database(runtime.settings.resolved_database_url) for _ in range(4)]
    now = runtime.clock.now()
    claimed: list[str] = []
    try:
        for _round in range(10):  # rounds of 8 claimers racing, until nothing is left
            results = await asyncio.gather(
                *[
                    step_q.claim_steps(
                        db, worker_id=f"w{i}", limit=4, now=now, lease_s=30, max_in_flight={}
                    )
                    for i, db in enumerate(dbs)
                    for _ in range(2)
                ]
            )
            batch = [s.id for result in results for s in result]
            if not batch:
                break
            claimed += batch
    finally:
        for db in dbs:
            await db.dispose()
    assert len(claimed) == 30
    assert len(set(claimed)) == 30
    # Nothing is left to claim while the leases hold.
    again = await step_q.claim_steps(
        runtime.db, worker_id="late", limit=10, now=now, lease_s=30, max_in_flight={}
    )
    assert again == []


async def test_an_expired_lease_passes_on_and_fences_the_old_holder(runtime: Runtime) -> None:
    await _jobs(runtime, 1)
    now = runtime.clock.now()
    (first,) = await step_q.claim_steps(
        runtime.db, worker_id="a", limit=1, now=now, lease_s=5, max_in_flight={}
    )
    assert first.lease_owner == "a"
    assert (
        await step_q.claim_steps(
            runtime.db, worker_id="b", limit=1, now=now + 4, lease_s=5, max_in_flight={}
        )
        == []
    )
    (second,) = await step_q.claim_steps(
        runtime.db, worker_id="b", limit=1, now=now + 6, lease_s=5, max_in_flight={}
    )
    assert second.id == first.id
    assert second.lease_token == first.lease_token + 1
    with pytest.raises(LeaseLost):
        async with runtime.db.write() as conn:
            await step_q.update_step(conn, first, progress=50, updated_at=now)
    async with runtime.db.write() as conn:
        await step_q.update_step(conn, second, progress=60, updated_at=now)


async def test_a_heartbeat_keeps_the_lease(runtime: Runtime) -> None:
    await _jobs(runtime, 1)
    now = runtime.clock.now()
    assert await step_q.claim_steps(
        runtime.db, worker_id="a", limit=1, now=now, lease_s=5, max_in_flight={}
    )
    async with runtime.db.write() as conn:
        assert await step_q.extend_leases(conn, "a", now + 20) == 1
    assert (
        await step_q.claim_steps(
            runtime.db, worker_id="b", limit=1, now=now + 10, lease_s=5, max_in_flight={}
        )
        == []
    )


async def test_illegal_step_transition_fails_loudly(runtime: Runtime) -> None:
    await _jobs(runtime, 1)
    (step,) = await step_q.claim_steps(
        runtime.db, worker_id="a", limit=1, now=runtime.clock.now(), lease_s=5, max_in_flight={}
    )
    with pytest.raises(IllegalTransition):
        async with runtime.db.write() as conn:
            await step_q.update_step(conn, step, to=StepState.CANCELING)


async def test_provider_in_flight_limit_holds_across_claimers(runtime: Runtime) -> None:
    await _jobs(runtime, 6)
    now = runtime.clock.now()
    limit = {"instant": 2}
    dbs = [Database(runtime.settings.resolved_database_url) for _ in range(3)]
    try:
        batches = await asyncio.gather(
            *[
                step_q.claim_steps(
                    db, worker_id=f"w{i}", limit=5, now=now, lease_s=30, max_in_flight=limit
                )
                for i, db in enumerate(dbs)
            ]
        )
    finally:
        for db in dbs:
            await db.dispose()
    assert sum(len(b) for b in batches) == 2
    # A submitted (active) step keeps its slot after its lease is released.
    claimed = [s for b in batches for s in b]
    async with runtime.db.write() as conn:
        await step_q.update_step(
            conn, claimed[0], to=StepState.ACTIVE, release=True, run_at=now + 100
        )
        await step_q.release_lease(conn, claimed[1])
    more = await step_q.claim_steps(
        runtime.db, worker_id="x", limit=5, now=now, lease_s=30, max_in_flight=limit
    )
    assert len(more) == 1
    # Polls of active steps are never held back by the limit.
    async with runtime.db.write() as conn:
        await conn.execute(update(steps).where(steps.c.id == claimed[0].id).values(run_at=now))
    polls = await step_q.claim_steps(
        runtime.db, worker_id="y", limit=5, now=now, lease_s=30, max_in_flight=limit
    )
    assert [s.id for s in polls] == [claimed[0].id]


async def test_events_are_written_with_the_state_change(runtime: Runtime) -> None:
    (job_id,) = await _jobs(runtime, 1)
    await runtime.videos.cancel(None, job_id)
    async with runtime.db.read() as conn:
        events = await job_q.list_events(conn, job_id)
    assert [e.type for e in events] == ["video.queued", "video.canceled"]


async def test_idempotency_keys_bind_for_their_retention_then_expire(
    db_url: str, make_settings: Callable[..., Settings]
) -> None:
    clock = ManualClock()
    rt = await Runtime.open(make_settings(db_url), run_migrations=False, clock=clock)
    try:
        async with rt.db.write() as conn:
            tenant = await tenant_q.create_tenant(conn, "acme", clock.now())
        body = CreateVideo(prompt="a", seconds=1, size="640x360")
        first = await rt.videos.create(tenant.id, body, "k1")
        clock.advance(24 * 3600)  # still bound after a day
        assert (await rt.videos.create(tenant.id, body, "k1")).job.id == first.job.id
        with pytest.raises(InvalidRequest, match="different request body"):
            await rt.videos.create(tenant.id, body.model_copy(update={"prompt": "b"}), "k1")
        clock.advance(rt.settings.idempotency_ttl_s)  # past the retention: a new binding
        other = await rt.videos.create(tenant.id, body.model_copy(update={"prompt": "b"}), "k1")
        assert other.job.id != first.job.id
        assert not other.replayed
        async with rt.db.write() as conn:
            assert await job_q.purge_idempotency_keys(conn, clock.now() - 1) == 0
            assert await job_q.purge_idempotency_keys(conn, clock.now() + 1) == 1
    finally:
        await rt.close()


async def test_a_retention_change_applies_to_the_next_completion_at_once(
    runtime: Runtime,
) -> None:
    """The retention is read from the cached tenant settings as each job completes;
    a change made in this process must not wait for the cache to expire."""
    tenant = await _tenant(runtime)
    async with runtime.db.point_read() as conn:
        assert await tenant_q.retention_days(conn, tenant) is None  # now cached
    async with runtime.db.write() as conn:
        await tenant_q.set_retention_days(conn, tenant, 7)
    async with runtime.db.point_read() as conn:
        assert await tenant_q.retention_days(conn, tenant) == 7
        assert (await tenant_q.tenant_settings(conn, tenant)).retention_days == 7
    async with runtime.db.write() as conn:
        await tenant_q.set_retention_days(conn, tenant, None)
    async with runtime.db.point_read() as conn:
        assert await tenant_q.retention_days(conn, tenant) is None


def _asset_row(job_id: str, tenant: str, name: str, sha: str, now: float) -> dict[str, object]:
    return {
        "id": f"asset_{name}_{sha}",
        "tenant_id": tenant,
        "job_id": job_id,
        "step_id": None,
        "name": name,
        "key": f"{job_id}/{name}",
        "sha256": sha,
        "bytes": 1,
        "content_type": "application/octet-stream",
        "media": None,
        "validation": None,
        "created_at": now,
    }


async def test_replacing_assets_retires_only_the_earlier_files_of_the_same_names(
    runtime: Runtime,
) -> None:
    from vidpipe.store.schema import assets

    tenant = await _tenant(runtime)
    (job_id,) = await _jobs(runtime, 1)
    (other,) = await _jobs(runtime, 1)
    first = [_asset_row(job_id, tenant, n, "a", 1.0) for n in ("video.mp4", "thumb.jpg")]
    async with runtime.db.write() as conn:
        await job_q.replace_assets(conn, first)
        await job_q.replace_assets(conn, [_asset_row(other, tenant, "video.mp4", "o", 1.0)])
    async with runtime.db.write() as conn:  # a second delivery: the video only
        await job_q.replace_assets(conn, [_asset_row(job_id, tenant, "video.mp4", "b", 2.0)])
    async with runtime.db.read() as conn:
        rows = (
            await conn.execute(
                select(assets.c.job_id, assets.c.name, assets.c.sha256, assets.c.deleted_at)
            )
        ).all()
    state = {(r.job_id, r.name, r.sha256): r.deleted_at for r in rows}
    assert state == {
        (job_id, "video.mp4", "a"): 2.0,  # retired by the second delivery
        (job_id, "thumb.jpg", "a"): None,  # not in it: kept
        (job_id, "video.mp4", "b"): None,
        (other, "video.mp4", "o"): None,  # another job's file of the same name
    }
    async with runtime.db.write() as conn:
        with pytest.raises(ValueError, match="one job, each name once"):
            await job_q.replace_assets(conn, [first[0], first[0]])
        with pytest.raises(ValueError, match="one job, each name once"):
            await job_q.replace_assets(
                conn, [first[0], _asset_row(other, tenant, "x.mp4", "x", 3.0)]
            )
