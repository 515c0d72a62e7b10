"""An in-process vidpipe: runtime on a real database, the app through ASGITransport."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest

from vidpipe.api.app import create_app
from vidpipe.config import Settings
from vidpipe.core.runtime import Runtime
from vidpipe.core.states import JobStatus
from vidpipe.store import tenants as tenant_q


@dataclass
class Harness:
    runtime: Runtime
    client: httpx.AsyncClient
    key: str
    other_key: str
    tenant_id: str
    other_tenant_id: str

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    async def create(self, **body: object) -> dict[str, object]:
        body.setdefault("prompt", "a red kite over green hills")
        body.setdefault("seconds", 1)
        body.setdefault("size", "640x360")
        response = await self.client.post("/v1/videos", json=body, headers=self.headers())
        assert response.status_code == 202, response.text
        data: dict[str, object] = response.json()
        return data

    async def run_until(
        self,
        job_id: str,
        done: Callable[[str], bool] = lambda s: JobStatus(s).terminal,
        timeout_s: float = 60.0,
    ) -> str:
        """Run one worker until the job's status satisfies ``done``."""
        stop = asyncio.Event()
        worker = self.runtime.new_worker()
        task = asyncio.create_task(worker.run(stop))
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    job = await self.runtime.videos.get(None, job_id)
                    if done(job.status):
                        return job.status
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await task
            self.runtime.workers.remove(worker)


@contextlib.asynccontextmanager
async def open_harness(
    db_url: str, make_settings: Callable[..., Settings], **settings: object
) -> AsyncIterator[Harness]:
    """A runtime on ``db_url`` (the ``instant`` provider on, ``settings`` over it), two
    tenants with a key each, and the app behind an in-process client."""
    runtime = await Runtime.open(
        make_settings(db_url, **{"instant_provider": True, **settings}), run_migrations=False
    )
    try:
        now = runtime.clock.now()
        async with runtime.db.write() as conn:
            tenant = await tenant_q.create_tenant(conn, "acme", now)
            other = await tenant_q.create_tenant(conn, "globex", now)
            _, key = await tenant_q.create_api_key(
                conn, tenant.id, scope="user", name=None, now=now
            )
            _, other_key = await tenant_q.create_api_key(
                conn, other.id, scope="user", name=None, now=now
            )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://vidpipe.test"
        ) as client:
            yield Harness(runtime, client, key, other_key, tenant.id, other.id)
    finally:
        await runtime.close()


@pytest.fixture
async def harness(db_url: str, make_settings: Callable[..., Settings]) -> AsyncIterator[Harness]:
    async with open_harness(db_url, make_settings, lease_s=5.0, idle_poll_s=0.2) as h:
        yield h
