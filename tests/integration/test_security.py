"""Tenancy and security through the real app: admin endpoints, every route with another
tenant's ids, rate limits, moderation, and keys that never reach a log."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.integration.conftest import Harness
from vidpipe.api.app import create_app
from vidpipe.config import Settings
from vidpipe.core.moderation import Blocklist, Moderator
from vidpipe.core.runtime import Runtime
from vidpipe.notify import webhooks
from vidpipe.store import tenants as tenant_q

pytestmark = pytest.mark.timeout(120)


async def _admin(harness: Harness) -> dict[str, str]:
    async with harness.runtime.db.write() as conn:
        ops = await tenant_q.ensure_tenant(conn, "ops", harness.runtime.clock.now())
        _, key = await tenant_q.create_api_key(
            conn, ops.id, scope="admin", name="ops", now=harness.runtime.clock.now()
        )
    return {"Authorization": f"Bearer {key}"}


async def test_admins_manage_tenants_and_keys(harness: Harness) -> None:
    admin = await _admin(harness)
    made = await harness.client.post("/v1/tenants", json={"name": "initech"}, headers=admin)
    assert made.status_code == 201
    dup = await harness.client.post("/v1/tenants", json={"name": "initech"}, headers=admin)
    assert dup.status_code == 409
    key = await harness.client.post(
        "/v1/tenants/initech/keys", json={"scope": "user", "name": "ci"}, headers=admin
    )
    assert key.status_code == 201
    secret = key.json()["key"]
    assert secret.startswith(key.json()["prefix"])
    mine = {"Authorization": f"Bearer {secret}"}
    listed = (await harness.client.get("/v1/keys", headers=mine)).json()["data"]
    assert [k["name"] for k in listed] == ["ci"]
    assert "key" not in listed[0]
    assert (await harness.client.get("/v1/videos", headers=mine)).status_code == 200
    user = harness.headers()
    for path in ("/v1/tenants", "/v1/tenants/initech/keys"):
        forbidden = await harness.client.get(path, headers=user)
        assert forbidden.status_code == 403
    # Another tenant cannot revoke it; its own tenant can, effective at once.
    other = await harness.client.delete(f"/v1/keys/{listed[0]['id']}", headers=user)
    assert other.status_code == 404
    revoked = await harness.client.delete(f"/v1/keys/{listed[0]['id']}", headers=mine)
    assert revoked.json()["revoked"] is True
    after = await harness.client.get("/v1/videos", headers=mine)
    assert after.status_code == 401


async def test_every_route_answers_404_for_another_tenants_ids(harness: Harness) -> None:
    vid = str((await harness.create(model="instant/test"))["id"])
    await harness.run_until(vid)
    async with harness.runtime.db.write() as conn:  # no DNS here: straight to the store
        endpoint = await webhooks.create_endpoint(
            conn,
            harness.tenant_id,
            "https://example.com/hook",
            [],
            None,
            harness.runtime.clock.now(),
        )
    batch = (
        await harness.client.post(
            "/v1/batches",
            json={"requests": [{"prompt": "x", "size": "640x360", "model": "instant/test"}]},
            headers=harness.headers(),
        )
    ).json()
    ids = {
        "video_id": vid,
        "endpoint_id": endpoint["id"],
        "batch_id": batch["id"],
        "delivery_id": "dlv_x",
        "path": "master.m3u8",
    }
    foreign = harness.headers(harness.other_key)
    app = harness.client._transport.app  # type: ignore[attr-defined]
    checked = []
    for route_path, operations in app.openapi()["paths"].items():
        params = re.findall(r"{(\w+)}", route_path)
        if not params or not set(params) <= set(ids):
            continue  # admin routes by tenant name, provider webhooks: not tenant data
        path = route_path
        for name in params:
            path = path.replace("{" + name + "}", ids[name])
        for method in operations:
            # A valid body, so the answer is about the id, not the shape of the request.
            body: Any = (
                ({"decision": "approve"} if path.endswith("/review") else {})
                if method in ("post", "put", "patch")
                else None
            )
            response = await harness.client.request(
                method.upper(), path, headers=foreign, json=body
            )
            assert response.status_code == 404, (method, path, response.text)
            checked.append((method, route_path))
    assert len(checked) >= 12
    # Lists show nothing of the other tenant either.
    for path in ("/v1/videos", "/v1/webhook-endpoints", "/v1/keys"):
        data = (await harness.client.get(path, headers=foreign)).json()["data"]
        assert all(vid not in str(item) and endpoint["id"] not in str(item) for item in data)


async def test_rate_limit_answers_429_with_retry_after(
    sqlite_url: str, make_settings: Callable[..., Settings]
) -> None:
    runtime = await Runtime.open(
        make_settings(sqlite_url, rate_limit_per_s=1, rate_limit_burst=3), run_migrations=False
    )
    try:
        async with runtime.db.write() as conn:
            tenant = await tenant_q.create_tenant(conn, "acme", runtime.clock.now())
            _, key = await tenant_q.create_api_key(
                conn, tenant.id, scope="user", name=None, now=runtime.clock.now()
            )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://t"
        ) as client:
            codes = [
                (await client.get("/v1/videos", headers={"Authorization": f"Bearer {key}"}))
                for _ in range(5)
            ]
    finally:
        await runtime.close()
    assert [r.status_code for r in codes] == [200, 200, 200, 429, 429]
    assert codes[3].json()["error"]["code"] == "rate_limited"
    assert int(codes[3].headers["retry-after"]) >= 1


@pytest.fixture
async def moderated(
    sqlite_url: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[tuple[Harness, list[str]]]:
    seen: list[str] = []

    async def moderations(request: Request) -> JSONResponse:
        text = (await request.json())["input"]
        seen.append(text)
        if "explode" in text:
            return JSONResponse(
                {"results": [{"flagged": True, "categories": {"violence": True, "hate": False}}]}
            )
        if "outage" in text:
            return JSONResponse({"error": "down"}, status_code=500)
        return JSONResponse({"results": [{"flagged": False, "categories": {}}]})

    fake = httpx.AsyncClient(
        transport=httpx.ASGITransport(
            app=Starlette(routes=[Route("/v1/moderations", moderations, methods=["POST"])])
        )
    )
    settings = make_settings(
        sqlite_url, instant_provider=True, moderation_blocklist={"weapons": ["bazooka"]}
    )
    runtime = await Runtime.open(settings, run_migrations=False)
    runtime.videos.moderator = Moderator(
        Blocklist.from_settings(settings.moderation_blocklist),
        http=fake,
        api_url="http://moderation.test/v1/moderations",
    )
    async with runtime.db.write() as conn:
        tenant = await tenant_q.create_tenant(conn, "acme", runtime.clock.now())
        _, key = await tenant_q.create_api_key(
            conn, tenant.id, scope="user", name=None, now=runtime.clock.now()
        )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://t"
    ) as client:
        yield Harness(runtime, client, key, key, tenant.id, tenant.id), seen
    await fake.aclose()
    await runtime.close()


async def test_moderation_refuses_before_anything_exists(
    moderated: tuple[Harness, list[str]],
) -> None:
    harness, seen = moderated

    async def post(prompt: str) -> httpx.Response:
        return await harness.client.post(
            "/v1/videos",
            json={"prompt": prompt, "size": "640x360", "model": "instant/test"},
            headers=harness.headers(),
        )

    blocked = await post("a man with a BAZOOKA")
    assert blocked.status_code == 422
    assert blocked.json()["error"] == {
        "code": "content_policy",
        "message": "the prompt was refused by the content policy (weapons)",
        "param": "prompt",
        "type": "invalid_request_error",
    }
    assert seen == []  # the blocklist answered; the API was not asked
    flagged = await post("make the city explode")
    assert flagged.status_code == 422
    assert "violence" in flagged.json()["error"]["message"]
    down = await post("during an outage")
    assert down.status_code == 503
    assert down.json()["error"]["code"] == "moderation_unavailable"
    fine = await post("a calm lake")
    assert fine.status_code == 202
    listed = (await harness.client.get("/v1/videos", headers=harness.headers())).json()["data"]
    assert len(listed) == 1


async def test_keys_never_reach_the_logs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    vid = str((await harness.create(model="instant/test"))["id"])
    await harness.run_until(vid)
    await harness.client.get("/v1/videos", headers={"Authorization": "Bearer vp_wrong_key"})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert harness.key not in text
    # The secret part (after "vp_<prefix>_"; it may itself contain "_").
    secret = harness.key.split("_", 2)[2]
    assert len(secret) >= 24
    assert secret not in text
    assert "vp_wrong_key" not in text
    assert len(caplog.records) > 0
