"""Webhooks out and live events: signed deliveries through the outbox to a real HTTP
receiver on loopback, retries, 410, rotation, redelivery; SSE streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vidpipe.api.app import create_app
from vidpipe.config import Settings
from vidpipe.core.runtime import Runtime
from vidpipe.notify import outbox, signing
from vidpipe.store import tenants as tenant_q
from vidpipe.store.schema import outbox as outbox_table
from vidpipe.testing.fakes._common_rfm import serve_on_loopback

pytestmark = pytest.mark.timeout(120)


@dataclass
class Receiver:
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # statuses to give, then 200

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.got.append((dict(request.headers), await request.body()))
            return Response(status_code=self.answers.pop(0) if self.answers else 200)

        return Starlette(routes=[Route("/{name}", hook, methods=["POST"])])

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _h, body in self.got]


@dataclass
class World:
    runtime: Runtime
    api: httpx.AsyncClient
    headers: dict[str, str]
    base: str
    receiver: Receiver

    async def drain(self) -> None:
        """Deliver every message never tried yet. The worker of ``_run_video`` may
        have claimed one (leased) and been stopped before sending it: such a lease is
        let lapse at once, as time would."""
        for _ in range(50):
            await outbox.dispatch_due(self.runtime.db, self.runtime.http, self.runtime.clock)
            async with self.runtime.db.write() as conn:
                untried = outbox_table.c.delivered_at.is_(None) & (outbox_table.c.attempts == 0)
                left = await conn.scalar(
                    select(func.count()).select_from(outbox_table).where(untried)
                )
                if not left:
                    return
                await conn.execute(
                    outbox_table.update()
                    .where(untried)
                    .values(next_attempt_at=self.runtime.clock.now())
                )
            await asyncio.sleep(0.05)
        raise AssertionError("the outbox did not drain")


@pytest.fixture
async def world(db_url: str, make_settings: Callable[..., Settings]) -> AsyncIterator[World]:
    receiver = Receiver()
    async with serve_on_loopback(receiver.app()) as base:
        settings = make_settings(
            db_url, instant_provider=True, idle_poll_s=0.1, url_allowlist="127.0.0.1/32"
        )
        runtime = await Runtime.open(settings, run_migrations=False)
        now = runtime.clock.now()
        async with runtime.db.write() as conn:
            tenant = await tenant_q.create_tenant(conn, "acme", now)
            _, key = await tenant_q.create_api_key(
                conn, tenant.id, scope="user", name=None, now=now
            )
        api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://vidpipe"
        )
        yield World(runtime, api, {"Authorization": f"Bearer {key}"}, base, receiver)
        await api.aclose()
        await runtime.close()


async def _run_video(world: World, **body: object) -> str:
    payload = {"prompt": "p", "seconds": 1, "size": "640x360", "model": "instant/test", **body}
    created = await world.api.post("/v1/videos", json=payload, headers=world.headers)
    assert created.status_code == 202, created.text
    vid = str(created.json()["id"])
    stop = asyncio.Event()
    task = asyncio.create_task(world.runtime.new_worker().run(stop))
    async with asyncio.timeout(60):
        while (await world.runtime.videos.get(None, vid)).status not in ("completed", "failed"):
            await asyncio.sleep(0.05)
    stop.set()
    await task
    world.runtime.workers.clear()
    return vid


async def test_signed_deliveries_to_endpoints_and_request_urls(world: World) -> None:
    made = await world.api.post(
        "/v1/webhook-endpoints",
        json={"url": f"{world.base}/ep", "events": ["video.completed"]},
        headers=world.headers,
    )
    assert made.status_code == 201
    endpoint = made.json()
    assert endpoint["secret"].startswith("whsec_")
    listed = (await world.api.get("/v1/webhook-endpoints", headers=world.headers)).json()
    assert "secret" not in listed["data"][0]
    request_secret = (
        await world.api.get("/v1/webhook-endpoints/request-secret", headers=world.headers)
    ).json()["secret"]

    vid = await _run_video(world, webhook_url=f"{world.base}/mine")
    await world.drain()
    # Delivery is at least once (a worker stopped between sending and recording sends
    # again): receivers dedupe by webhook-id, and so does this test.
    got = list({h["webhook-id"]: (h, b) for h, b in world.receiver.got}.values())
    mine = [
        json.loads(b) for h, b in got if _verifies(request_secret, h, b, world.runtime.clock.now())
    ]
    ours = [
        json.loads(b)
        for h, b in got
        if _verifies(endpoint["secret"], h, b, world.runtime.clock.now())
    ]
    # The request's own URL hears everything, in order; the endpoint only what it asked.
    assert [m["type"] for m in mine] == ["video.queued", "video.in_progress", "video.completed"]
    assert [m["type"] for m in ours] == ["video.completed"]
    done = ours[0]["data"]
    assert done["id"] == vid
    assert done["status"] == "completed"
    assert done["progress"] == 100
    deliveries = (
        await world.api.get(
            f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=world.headers
        )
    ).json()["data"]
    assert [(d["event_type"], d["last_status"], d["attempts"]) for d in deliveries] == [
        ("video.completed", 200, 1)
    ]
    # Redelivery keeps the webhook-id, so the receiver can tell it is the same message.
    again = await world.api.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{deliveries[0]['id']}/redeliver",
        headers=world.headers,
    )
    assert again.status_code == 202
    await world.drain()
    ids = [h["webhook-id"] for h, _b in world.receiver.got]
    assert ids[-1] == deliveries[0]["webhook_id"]
    assert ids.count(deliveries[0]["webhook_id"]) == 2


def _verifies(secret: str, headers: dict[str, str], body: bytes, now: float) -> bool:
    try:
        signing.verify(secret, headers, body, now)
    except signing.SignatureError:
        return False
    return True


async def test_retries_then_410_disables_the_endpoint(world: World) -> None:
    made = (
        await world.api.post(
            "/v1/webhook-endpoints", json={"url": f"{world.base}/ep"}, headers=world.headers
        )
    ).json()
    world.receiver.answers = [500]  # the first delivery fails, is retried later
    await _run_video(world)
    await world.drain()
    log = (
        await world.api.get(f"/v1/webhook-endpoints/{made['id']}/deliveries", headers=world.headers)
    ).json()["data"]
    failed = [d for d in log if d["last_status"] == 500]
    assert len(failed) == 1
    assert failed[0]["delivered_at"] is None
    assert failed[0]["next_attempt_at"] > world.runtime.clock.now()
    world.receiver.answers = [410]
    await _run_video(world)
    await world.drain()
    view = (
        await world.api.get(f"/v1/webhook-endpoints/{made['id']}", headers=world.headers)
    ).json()
    assert view["enabled"] is False
    assert "410" in view["disabled_reason"]
    before = len(world.receiver.got)
    await _run_video(world)
    await world.drain()
    assert len(world.receiver.got) == before  # a disabled endpoint hears nothing new
    enabled = await world.api.post(
        f"/v1/webhook-endpoints/{made['id']}/enable", headers=world.headers
    )
    assert enabled.json()["enabled"] is True


async def test_rotation_signs_with_both_secrets_for_a_while(world: World) -> None:
    made = (
        await world.api.post(
            "/v1/webhook-endpoints",
            json={"url": f"{world.base}/ep", "events": ["video.queued"]},
            headers=world.headers,
        )
    ).json()
    rotated = (
        await world.api.post(
            f"/v1/webhook-endpoints/{made['id']}/rotate-secret", headers=world.headers
        )
    ).json()
    assert rotated["secret"] != made["secret"]
    await world.api.post(
        "/v1/videos", json={"prompt": "p", "seconds": 1, "size": "640x360"}, headers=world.headers
    )
    await world.drain()
    ((headers, body),) = world.receiver.got
    now = world.runtime.clock.now()
    assert len(headers["webhook-signature"].split()) == 2
    assert _verifies(made["secret"], headers, body, now)
    assert _verifies(rotated["secret"], headers, body, now)
    assert not _verifies(signing.new_secret(), headers, body, now)
    assert not _verifies(rotated["secret"], headers, body, now + 600)  # a replay, later


async def test_unsafe_webhook_urls_are_refused(world: World) -> None:
    for url in ("http://169.254.169.254/latest", "http://10.0.0.1/hook", "file:///etc/passwd"):
        endpoint = await world.api.post(
            "/v1/webhook-endpoints", json={"url": url}, headers=world.headers
        )
        assert endpoint.status_code == 422, url
        assert endpoint.json()["error"]["code"] == "unsafe_url"
        video = await world.api.post(
            "/v1/videos",
            json={"prompt": "p", "size": "640x360", "webhook_url": url},
            headers=world.headers,
        )
        assert video.status_code == 422
        assert video.json()["error"]["code"] == "unsafe_url"
    bad_event = await world.api.post(
        "/v1/webhook-endpoints",
        json={"url": f"{world.base}/x", "events": ["video.exploded"]},
        headers=world.headers,
    )
    assert bad_event.status_code == 422


async def test_sse_streams_a_video_and_resumes(world: World) -> None:
    created = await world.api.post(
        "/v1/videos",
        json={"prompt": "p", "seconds": 1, "size": "640x360", "model": "instant/test"},
        headers=world.headers,
    )
    vid = created.json()["id"]
    stop = asyncio.Event()
    task = asyncio.create_task(world.runtime.new_worker().run(stop))
    try:
        response = await world.api.get(f"/v1/videos/{vid}/events", headers=world.headers)
    finally:
        stop.set()
        await task
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in response.text.split("\n\n") if f.startswith("id: ")]
    types = [f.split("\n")[1].removeprefix("event: ") for f in frames]
    assert types[0] == "video.queued"
    assert types[-1] == "video.completed"
    assert {"video.in_progress", "step.attempt", "step.submitted", "step.succeeded"} <= set(types)
    ids = [int(f.split("\n")[0].removeprefix("id: ")) for f in frames]
    assert ids == sorted(ids)
    resumed = await world.api.get(
        f"/v1/videos/{vid}/events", headers={**world.headers, "Last-Event-ID": str(ids[-2])}
    )
    again = [f for f in resumed.text.split("\n\n") if f.startswith("id: ")]
    assert [int(f.split("\n")[0].removeprefix("id: ")) for f in again] == ids[-1:]
    other = await world.api.get(f"/v1/videos/{vid}/events", headers={"Authorization": "Bearer x"})
    assert other.status_code == 401
