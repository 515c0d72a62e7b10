"""Webhooks from providers: verified, deduplicated, and they make the step poll at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from sqlalchemy import select

from vidpipe.api.app import create_app
from vidpipe.config import Settings
from vidpipe.core.requests import CreateVideo
from vidpipe.core.runtime import Runtime
from vidpipe.providers.registry import ProviderRegistry
from vidpipe.providers.replicate import ReplicateProvider
from vidpipe.store import tenants as tenant_q
from vidpipe.store.schema import attempts, steps
from vidpipe.testing.fakes._common_rfm import sample_mp4
from vidpipe.testing.fakes.replicate import FakeReplicateState, create_fake_replicate

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def setup(
    db_url: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[tuple[Runtime, FakeReplicateState, httpx.AsyncClient, str]]:
    state = FakeReplicateState(video=sample_mp4())
    state.queued_polls, state.running_polls = 1, 1
    fake = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_fake_replicate(state)),
        base_url="http://replicate.test",
    )
    provider = ReplicateProvider(
        fake,
        api_key=state.api_key,
        base_url="http://replicate.test",
        webhook_secret=state.webhook_secret,
    )
    settings = make_settings(
        db_url,
        public_url="https://vidpipe.example",
        idle_poll_s=0.1,
        url_allowlist="replicate.test",
        prices={"replicate/minimax/hailuo-02": {"unit": "second", "usd": 0.045}},
    )
    runtime = await Runtime.open(
        settings, run_migrations=False, registry=ProviderRegistry([provider])
    )
    async with runtime.db.write() as conn:
        tenant = await tenant_q.ensure_tenant(conn, "acme", runtime.clock.now())
    api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime, open_tenant_id=tenant.id)),
        base_url="http://vidpipe.test",
    )
    yield runtime, state, api, tenant.id
    await api.aclose()
    await fake.aclose()
    await runtime.close()


async def test_a_signed_webhook_makes_the_worker_poll_now(
    setup: tuple[Runtime, FakeReplicateState, httpx.AsyncClient, str],
) -> None:
    runtime, state, api, tenant = setup
    job = (
        await runtime.videos.create(
            tenant,
            CreateVideo(
                prompt="kite", seconds=6, size="1366x768", model="replicate/minimax/hailuo-02"
            ),
        )
    ).job
    stop = asyncio.Event()
    worker = runtime.new_worker(validate=False)
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(20):
            while True:
                async with runtime.db.read() as conn:
                    row = (
                        await conn.execute(
                            select(attempts.c.id, attempts.c.provider_job_id).where(
                                attempts.c.job_id == job.id
                            )
                        )
                    ).first()
                if row is not None and row[1] is not None:
                    break
                await asyncio.sleep(0.05)
        attempt_id, prediction_id = row
        # The callback URL vidpipe gave Replicate names this attempt.
        assert state.jobs[prediction_id].webhook_url == (
            f"https://vidpipe.example/v1/hooks/replicate?attempt={attempt_id}"
        )
        async with runtime.db.read() as conn:
            next_poll = await conn.scalar(select(steps.c.run_at).where(steps.c.job_id == job.id))
        # Replicate jobs take minutes: without a webhook the next look is far off.
        assert next_poll - runtime.clock.now() > 20

        headers, body = state.webhook(prediction_id, secret="whsec_" + "A" * 32)
        forged = await api.post(
            f"/v1/hooks/replicate?attempt={attempt_id}", content=body, headers=headers
        )
        assert forged.status_code == 401
        assert forged.json()["error"]["code"] == "webhook_signature"

        for _ in range(3):  # advance the fake job to its end
            await runtime.registry.get("replicate").poll(prediction_id)  # type: ignore[union-attr]
        headers, body = state.webhook(prediction_id, webhook_id="msg_1")
        first = await api.post(
            f"/v1/hooks/replicate?attempt={attempt_id}", content=body, headers=headers
        )
        assert first.status_code == 200
        assert first.json() == {"received": True, "duplicate": False, "matched": True, "steps": 1}
        again = await api.post(
            f"/v1/hooks/replicate?attempt={attempt_id}", content=body, headers=headers
        )
        assert again.json()["duplicate"] is True
        async with asyncio.timeout(10):
            while (await runtime.videos.get(None, job.id)).status != "completed":
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    assert state.creates == 1


async def test_webhooks_for_unknown_providers_are_404(
    setup: tuple[Runtime, FakeReplicateState, httpx.AsyncClient, str],
) -> None:
    _runtime, _state, api, _tenant = setup
    missing = await api.post("/v1/hooks/nobody", content=b"{}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "provider_not_found"
