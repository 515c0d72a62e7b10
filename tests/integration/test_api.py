"""The /v1/videos API on SQLite and PostgreSQL, through the real app and database."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import func, select

from tests.integration.conftest import Harness
from vidpipe.store.schema import jobs, steps

pytestmark = pytest.mark.timeout(90)


async def _job_count(h: Harness) -> int:
    async with h.runtime.db.read() as conn:
        return int(await conn.scalar(select(func.count()).select_from(jobs)) or 0)


async def test_create_returns_202_with_the_job_at_once(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/videos",
        json={
            "prompt": "a lighthouse",
            "seconds": "2",
            "size": "1280x720",
            "metadata": {"order": "42"},
            "seed": 7,
        },
        headers=harness.headers(),
    )
    assert response.status_code == 202
    video = response.json()
    assert video["object"] == "video"
    assert video["id"].startswith("video_")
    assert video["status"] == "queued"
    assert video["progress"] == 0
    assert video["seconds"] == "2"
    assert video["size"] == "1280x720"
    assert video["model"] == "local/procedural"
    assert video["metadata"] == {"order": "42"}
    assert video["seed"] == 7
    assert video["error"] is None
    assert video["completed_at"] is None
    assert response.headers["openai-poll-after-ms"] == "1000"
    got = await harness.client.get(f"/v1/videos/{video['id']}", headers=harness.headers())
    assert got.status_code == 200
    assert got.json() == video


async def test_multipart_create_like_the_openai_sdk(harness: Harness) -> None:
    response = await harness.client.post(
        "/v1/videos",
        data={"prompt": "a fox", "seconds": "4", "size": "720x1280", "metadata[a]": "b"},
        files={"unused": ("", b"")} if False else None,
        headers=harness.headers(),
    )
    assert response.status_code == 202, response.text
    assert response.json()["metadata"] == {"a": "b"}
    assert response.json()["seconds"] == "4"


async def test_aspect_ratio_picks_a_size(harness: Harness) -> None:
    video = await harness.create(size=None, aspect_ratio="16:9")
    assert video["size"] == "1280x720"


async def test_a_video_completes_and_its_content_streams_with_ranges(harness: Harness) -> None:
    video = await harness.create(model="local/procedural", seconds=1, size="640x360")
    vid = str(video["id"])
    early = await harness.client.get(f"/v1/videos/{vid}/content", headers=harness.headers())
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "video_not_ready"

    assert await harness.run_until(vid) == "completed"
    done = (await harness.client.get(f"/v1/videos/{vid}", headers=harness.headers())).json()
    assert done["progress"] == 100
    assert done["completed_at"] >= done["created_at"]
    assert (
        "openai-poll-after-ms"
        not in (await harness.client.get(f"/v1/videos/{vid}", headers=harness.headers())).headers
    )

    full = await harness.client.get(f"/v1/videos/{vid}/content", headers=harness.headers())
    assert full.status_code == 200
    assert full.headers["content-type"] == "video/mp4"
    assert full.content[4:8] == b"ftyp"
    assert full.headers["etag"].strip('"') == __import__("hashlib").sha256(full.content).hexdigest()
    part = await harness.client.get(
        f"/v1/videos/{vid}/content", headers={**harness.headers(), "Range": "bytes=0-99"}
    )
    assert part.status_code == 206
    assert part.content == full.content[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(full.content)}"


async def test_idempotency_key_same_body_same_job(harness: Harness) -> None:
    body = {"prompt": "a kite", "seconds": 2, "size": "640x360"}
    headers = {**harness.headers(), "Idempotency-Key": "order-1"}
    first = await harness.client.post("/v1/videos", json=body, headers=headers)
    again = await harness.client.post("/v1/videos", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert await _job_count(harness) == 1
    # Same key, different body: refused, nothing created.
    changed = await harness.client.post(
        "/v1/videos", json={**body, "prompt": "a different kite"}, headers=headers
    )
    assert changed.status_code == 422
    assert changed.json()["error"]["code"] == "idempotency_key_reused"
    assert await _job_count(harness) == 1
    # Keys are per tenant: another tenant's identical key is its own.
    other = await harness.client.post(
        "/v1/videos",
        json=body,
        headers={**harness.headers(harness.other_key), "Idempotency-Key": "order-1"},
    )
    assert other.status_code == 202
    assert other.json()["id"] != first.json()["id"]


async def test_concurrent_requests_with_one_key_make_one_job(harness: Harness) -> None:
    import asyncio

    body = {"prompt": "a race", "seconds": 1, "size": "640x360"}
    headers = {**harness.headers(), "Idempotency-Key": "race-1"}
    responses = await asyncio.gather(
        *[harness.client.post("/v1/videos", json=body, headers=headers) for _ in range(8)]
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert await _job_count(harness) == 1


async def test_list_is_newest_first_with_cursor_and_status_filter(harness: Harness) -> None:
    ids = [str((await harness.create(prompt=f"clip {i}"))["id"]) for i in range(5)]
    page = (await harness.client.get("/v1/videos?limit=2", headers=harness.headers())).json()
    assert page["object"] == "list"
    assert [v["id"] for v in page["data"]] == ids[::-1][:2]
    assert page["has_more"] is True
    assert page["first_id"] == ids[4]
    assert page["last_id"] == ids[3]
    rest = (
        await harness.client.get(
            f"/v1/videos?limit=10&after={page['last_id']}", headers=harness.headers()
        )
    ).json()
    assert [v["id"] for v in rest["data"]] == ids[::-1][2:]
    assert rest["has_more"] is False
    asc = (await harness.client.get("/v1/videos?order=asc", headers=harness.headers())).json()
    assert [v["id"] for v in asc["data"]] == ids
    await harness.client.post(f"/v1/videos/{ids[0]}/cancel", headers=harness.headers())
    canceled = (
        await harness.client.get("/v1/videos?status=canceled", headers=harness.headers())
    ).json()
    assert [v["id"] for v in canceled["data"]] == [ids[0]]
    bad = await harness.client.get("/v1/videos?status=done", headers=harness.headers())
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_status"


async def test_other_tenants_see_nothing(harness: Harness) -> None:
    vid = str((await harness.create())["id"])
    other = harness.headers(harness.other_key)
    for method, path in [
        ("GET", f"/v1/videos/{vid}"),
        ("GET", f"/v1/videos/{vid}/content"),
        ("POST", f"/v1/videos/{vid}/cancel"),
        ("DELETE", f"/v1/videos/{vid}"),
        ("GET", "/v1/videos/video_doesnotexist"),
    ]:
        response = await harness.client.request(method, path, headers=other)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "video_not_found"
    listed = (await harness.client.get("/v1/videos", headers=other)).json()
    assert listed["data"] == []
    # The owner still has it, untouched.
    mine = (await harness.client.get(f"/v1/videos/{vid}", headers=harness.headers())).json()
    assert mine["status"] == "queued"


async def test_auth_is_required(harness: Harness) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = await harness.client.get("/v1/videos", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")


async def test_cancel_queued_then_cancel_again_conflicts(harness: Harness) -> None:
    vid = str((await harness.create())["id"])
    canceled = await harness.client.post(f"/v1/videos/{vid}/cancel", headers=harness.headers())
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    assert canceled.json()["error"]["code"] == "canceled"
    again = await harness.client.post(f"/v1/videos/{vid}/cancel", headers=harness.headers())
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "video_not_cancelable"
    async with harness.runtime.db.read() as conn:
        states = (await conn.execute(select(steps.c.state).where(steps.c.job_id == vid))).all()
    assert [s[0] for s in states] == ["canceled"]


async def test_cancel_while_at_the_provider_stops_the_provider_job(harness: Harness) -> None:
    harness.runtime.settings.local_min_latency_s = 30
    for provider in harness.runtime.registry.providers():
        if provider.name == "local":
            provider.min_latency_s = 30  # type: ignore[attr-defined]
    vid = str((await harness.create(model="local/procedural"))["id"])
    assert await harness.run_until(vid, lambda s: s == "in_progress") == "in_progress"
    response = await harness.client.post(f"/v1/videos/{vid}/cancel", headers=harness.headers())
    assert response.json()["status"] == "canceled"

    async def step_state() -> str:
        async with harness.runtime.db.read() as conn:
            return str(await conn.scalar(select(steps.c.state).where(steps.c.job_id == vid)))

    # A worker takes the canceling step to the provider and closes it. The worker that
    # saw it in progress may have stopped holding its lease, so allow for the lease to
    # expire (lease_s=5) before another worker may claim it.
    assert await step_state() in ("canceling", "canceled")
    stop = asyncio.Event()
    worker = harness.runtime.new_worker()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(30):
            while await step_state() != "canceled":
                assert not task.done(), task.result()
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        harness.runtime.workers.remove(worker)
    assert await step_state() == "canceled"
    local_dir = harness.runtime.settings.home / "local-provider"
    statuses = [json.loads(p.read_text())["status"] for p in local_dir.glob("*/status.json")]
    assert statuses == ["canceled"]


async def test_delete_hides_the_video_and_removes_its_file(harness: Harness) -> None:
    vid = str((await harness.create(model="instant/test"))["id"])
    assert await harness.run_until(vid) == "completed"
    asset = await harness.runtime.videos.video_asset(None, vid)
    path = harness.runtime.blobs.local_path(asset.key)
    assert path is not None
    assert path.is_file()
    deleted = await harness.client.delete(f"/v1/videos/{vid}", headers=harness.headers())
    assert deleted.status_code == 200
    assert deleted.json() == {"id": vid, "object": "video.deleted", "deleted": True}
    assert not path.exists()
    gone = await harness.client.get(f"/v1/videos/{vid}", headers=harness.headers())
    assert gone.status_code == 404
    again = await harness.client.delete(f"/v1/videos/{vid}", headers=harness.headers())
    assert again.status_code == 404


BAD_INPUTS = [
    ({"json": {"prompt": ""}}, 422, "invalid_prompt"),
    ({"json": {"prompt": "x" * 2001}}, 422, "invalid_prompt"),
    ({"json": {"seconds": 4}}, 422, "missing_parameter"),
    ({"json": {"prompt": "x", "size": "999x999"}}, 422, "unsupported_size"),
    ({"json": {"prompt": "x", "size": "huge"}}, 422, "invalid_size"),
    ({"json": {"prompt": "x", "seconds": 0}}, 422, "invalid_seconds"),
    ({"json": {"prompt": "x", "seconds": 21}}, 422, "unsupported_seconds"),
    ({"json": {"prompt": "x", "seconds": 10_000}}, 422, "invalid_seconds"),
    ({"json": {"prompt": "x", "model": "nope/nothing"}}, 422, "unknown_model"),
    ({"json": {"prompt": "x", "model": "local"}}, 422, "unknown_model"),
    ({"json": {"prompt": "x", "size": "640x360", "aspect_ratio": "16:9"}}, 422, "invalid_size"),
    ({"json": {"prompt": "x", "wat": 1}}, 422, "unknown_parameter"),
    ({"json": ["prompt"]}, 422, "invalid_body"),
    (
        {"content": b'{"prompt": "x"', "headers": {"Content-Type": "application/json"}},
        400,
        "invalid_json",
    ),
    (
        {"content": b"\xff\xfe", "headers": {"Content-Type": "application/json"}},
        400,
        "invalid_json",
    ),
    (
        {"content": b"prompt=x", "headers": {"Content-Type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    ({"content": b'{"prompt": "x"}', "headers": {}}, 415, "unsupported_media_type"),
    (
        {
            "content": b'{"prompt": "' + b"x" * 70_000 + b'"}',
            "headers": {"Content-Type": "application/json"},
        },
        413,
        "request_too_large",
    ),
    (
        {"files": {"input_reference": ("a.png", b"123", "image/png")}, "data": {"prompt": "x"}},
        422,
        "unsupported_parameter",
    ),
    (
        {"json": {"prompt": "x"}, "headers": {"Idempotency-Key": " "}},
        400,
        "invalid_idempotency_key",
    ),
    (
        {"json": {"prompt": "x"}, "headers": {"Idempotency-Key": "k" * 256}},
        400,
        "invalid_idempotency_key",
    ),
    ({"json": {"prompt": "x"}, "params": {"dry_run": "maybe"}}, 422, "invalid_dry_run"),
]


@pytest.mark.parametrize(("kwargs", "status", "code"), BAD_INPUTS)
async def test_bad_input_is_refused_and_creates_nothing(
    harness: Harness, kwargs: dict[str, object], status: int, code: str
) -> None:
    kwargs = dict(kwargs)  # the table is shared by the SQLite and PostgreSQL runs
    headers = {**harness.headers(), **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    response = await harness.client.post("/v1/videos", headers=headers, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert await _job_count(harness) == 0


async def test_huge_chunked_body_is_cut_off(harness: Harness) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"x" * 4096
        yield b'"}'

    response = await harness.client.post(
        "/v1/videos",
        content=chunks(),
        headers={**harness.headers(), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert await _job_count(harness) == 0


async def test_unknown_routes_and_methods_use_the_error_envelope(harness: Harness) -> None:
    missing = await harness.client.get("/v1/nothing", headers=harness.headers())
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = await harness.client.put("/v1/videos", headers=harness.headers())
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_models_and_openapi(harness: Harness) -> None:
    models = (await harness.client.get("/v1/models")).json()
    ids = {m["id"] for m in models["data"]}
    assert {"local/procedural", "instant/test"} <= ids
    spec = (await harness.client.get("/openapi.json")).json()
    assert "/v1/videos" in spec["paths"]
    body = spec["paths"]["/v1/videos"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)


async def test_a_client_gone_mid_body_gets_a_4xx_and_nothing_is_created(
    harness: Harness,
) -> None:
    """A connection that drops while the body is still arriving (a client timeout, a
    keep-alive connection closed under a request) is the client's doing: a specific
    4xx, not an unhandled server error, and no video."""
    from vidpipe.api.app import create_app

    app = create_app(harness.runtime)
    body = json.dumps({"prompt": "cut short", "model": "instant/test"}).encode()
    arrivals: list[dict[str, object]] = [
        {"type": "http.request", "body": body[:10], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return arrivals.pop(0) if arrivals else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    before = await _job_count(harness)
    headers = [
        (b"authorization", f"Bearer {harness.key}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/videos",
        "raw_path": b"/v1/videos",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 400
    payload = b"".join(
        bytes(m.get("body", b""))  # type: ignore[call-overload]
        for m in sent
        if m["type"] == "http.response.body"
    )
    assert json.loads(payload)["error"]["code"] == "client_disconnected"
    assert await _job_count(harness) == before
