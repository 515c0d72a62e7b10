"""vidpipe.client against the real app: the async client in-process (ASGITransport), the
blocking client over loopback HTTP to uvicorn; a real worker makes the videos."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import vidpipe.client
from vidpipe.api.app import create_app
from vidpipe.client import (
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    BudgetExceeded,
    Client,
    Conflict,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    Video,
    VideoFailed,
    VidpipeClientError,
    WaitTimeout,
    WebhookVerificationError,
    webhooks,
)
from vidpipe.config import Settings
from vidpipe.core.runtime import Runtime
from vidpipe.media.probe import probe
from vidpipe.notify import outbox, signing
from vidpipe.store import tenants as tenant_q
from vidpipe.testing.fakes._common_rfm import serve_on_loopback

pytestmark = pytest.mark.timeout(90)

BASE = "http://vidpipe.test"
MODEL = "instant/test"
USD_PER_SECOND = 0.5
SMALL: dict[str, Any] = {"seconds": 1, "size": "640x360", "model": MODEL}


@dataclass
class Stack:
    runtime: Runtime
    app: FastAPI
    key: str
    other_key: str
    admin_key: str

    def client(
        self,
        key: str | None = None,
        *,
        app: ASGIApp | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Any,
    ) -> AsyncClient:
        return AsyncClient(
            BASE,
            key if key is not None else self.key,
            transport=transport or httpx.ASGITransport(app=app or self.app),
            **options,
        )

    @contextlib.asynccontextmanager
    async def worker(self) -> AsyncIterator[None]:
        """A real worker in this event loop for the block."""
        stop = asyncio.Event()
        worker = self.runtime.new_worker()
        task = asyncio.create_task(worker.run(stop))
        try:
            yield
        finally:
            stop.set()
            await task
            self.runtime.workers.remove(worker)


@pytest.fixture
async def stack(db_url: str, make_settings: Callable[..., Settings]) -> AsyncIterator[Stack]:
    settings = make_settings(
        db_url,
        instant_provider=True,
        # Long enough for polls to see the job queued or running, short enough to be fast.
        instant_latency_s=0.6,
        idle_poll_s=0.05,
        lease_s=5.0,
        prices={MODEL: {"unit": "second", "usd": USD_PER_SECOND}},
        url_allowlist="127.0.0.1/32",
    )
    runtime = await Runtime.open(settings, run_migrations=False)
    now = runtime.clock.now()
    async with runtime.db.write() as conn:
        acme = await tenant_q.create_tenant(conn, "acme", now)
        globex = await tenant_q.create_tenant(conn, "globex", now)
        ops = await tenant_q.create_tenant(conn, "ops", now)
        _, key = await tenant_q.create_api_key(conn, acme.id, scope="user", name=None, now=now)
        _, other = await tenant_q.create_api_key(conn, globex.id, scope="user", name=None, now=now)
        _, admin = await tenant_q.create_api_key(conn, ops.id, scope="admin", name=None, now=now)
    yield Stack(runtime, create_app(runtime), key, other, admin)
    await runtime.close()


@dataclass
class Gateway:
    """An ASGI proxy in front of vidpipe that loses answers, as a flaky load balancer does.

    The first ``times`` requests matching ``method`` and ``path`` get ``status`` instead of
    vidpipe's answer; with ``forward`` vidpipe still handles them first (the work is done,
    only the answer is lost). Every matching request's headers, and the headers of every
    answer vidpipe gave, are recorded.
    """

    app: ASGIApp
    method: str
    path: str
    status: int = 503
    times: int = 1
    forward: bool = True
    extra_headers: dict[str, str] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    answers: list[dict[str, str]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) != (
            self.method,
            self.path,
        ):
            await self.app(scope, receive, send)
            return
        self.requests.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.answers.append(
                    {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
                )

        if self.times <= 0:

            async def relay(message: Message) -> None:
                await record(message)
                await send(message)

            await self.app(scope, receive, relay)
            return
        self.times -= 1
        if self.forward:
            await self.app(scope, receive, record)
        body = json.dumps(
            {"error": {"code": "upstream", "message": "lost", "param": None, "type": "api_error"}}
        ).encode()
        headers = [(b"content-type", b"application/json")]
        headers += [(k.encode(), v.encode()) for k, v in self.extra_headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class RefusingTransport(httpx.AsyncBaseTransport):
    """Refuses the first ``drops`` connections, then hands requests to ``inner``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, drops: int) -> None:
        self.inner = inner
        self.drops = drops
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.drops > 0:
            self.drops -= 1
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


def test_public_api_is_explicit() -> None:
    assert sorted(vidpipe.client.__all__) == [
        "APIConnectionError",
        "APIError",
        "AsyncClient",
        "AsyncVideos",
        "AuthenticationError",
        "BudgetExceeded",
        "Client",
        "Conflict",
        "Cost",
        "Estimate",
        "EstimateCost",
        "InvalidRequest",
        "NotFound",
        "PermissionDenied",
        "Plan",
        "PlanError",
        "PlanStep",
        "RateLimited",
        "Ref",
        "ServerError",
        "ShortFields",
        "Step",
        "StepError",
        "Template",
        "Variant",
        "Video",
        "VideoDeleted",
        "VideoError",
        "VideoFailed",
        "VideoList",
        "VideoStatus",
        "VideoWithSteps",
        "Videos",
        "VidpipeClientError",
        "WaitTimeout",
        "WebhookVerificationError",
        "webhooks",
    ]
    assert all(hasattr(vidpipe.client, name) for name in vidpipe.client.__all__)
    # Nothing public is left out of __all__.
    public = {n for n in vars(vidpipe.client) if not n.startswith("_") and n != "annotations"}
    assert public == set(vidpipe.client.__all__)
    assert webhooks.__all__ == ["TOLERANCE_S", "WebhookVerificationError", "verify"]
    # One root for everything the client raises.
    for name in vidpipe.client.__all__:
        obj = getattr(vidpipe.client, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, VidpipeClientError), name
    # A user of the client does not load the server (FastAPI, SQLAlchemy, PyAV).
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, vidpipe.client; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'fastapi', 'sqlalchemy', 'av', 'starlette', 'asyncpg'}))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert loaded.stdout.strip() == "[]"


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("retries_done", "status", "headers", "expected"),
    [
        (0, 503, {}, 0.5),  # backoff_s, jitter 0 halves it: 0.5 * (0.5 + 0.5)
        (1, 502, {}, 1.0),
        (2, 500, {}, 1.5),  # 2.0, capped at max_backoff_s
        (0, 429, {"Retry-After": "2"}, 2.0),
        (0, 429, {"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        (0, 503, {"Retry-After": "Tue, 14 Nov 2023 22:13:23 GMT"}, 3.0),  # HTTP date
        (0, 503, {"Retry-After": "120"}, None),  # longer than max_retry_after_s
        (0, 503, {"Retry-After": "soon"}, 0.5),  # unreadable: backoff
        (0, 503, {"x-should-retry": "false"}, None),
        (0, 409, {"x-should-retry": "true"}, 0.5),
        (0, 409, {}, None),
        (0, 404, {}, None),
        (0, 422, {}, None),
        (3, 503, {}, None),  # out of retries
    ],
)
def test_retry_policy(
    retries_done: int, status: int, headers: dict[str, str], expected: float | None
) -> None:
    from vidpipe.client._retry import RetryPolicy

    policy = RetryPolicy(max_retries=3, backoff_s=0.5, max_backoff_s=1.5, max_retry_after_s=60)
    assert policy.after_status(retries_done, status, headers, NOW, jitter=0.999999) == (
        pytest.approx(expected, abs=1e-3) if expected is not None else None
    )
    request = httpx.Request("GET", "http://x")
    assert policy.after_error(0, httpx.ConnectError("no", request=request), 0.0) == 0.25
    assert policy.after_error(0, httpx.ReadTimeout("slow", request=request), 0.0) == 0.25
    assert policy.after_error(0, httpx.UnsupportedProtocol("ftp", request=request), 0.0) is None
    assert policy.after_error(3, httpx.ConnectError("no", request=request), 0.0) is None


async def test_create_wait_download_with_progress(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    seen: list[int] = []
    async with stack.client() as client, stack.worker():
        video = await client.videos.create(
            "a red kite over green hills", **SMALL, seed=7, metadata={"order": "1234"}
        )
        assert (video.status, video.progress, video.seconds, video.size) == (
            "queued",
            0,
            "1",
            "640x360",
        )
        assert video.metadata == {"order": "1234"}
        assert video.seed == 7
        assert video.cost is not None
        assert video.cost.estimated == pytest.approx(USD_PER_SECOND)

        async def on_progress(v: Video) -> None:  # a coroutine callback is awaited
            seen.append(v.progress)

        done = await client.videos.wait(
            video.id, timeout_s=60, poll_interval_s=0.05, on_progress=on_progress
        )
        assert done.status == "completed"
        assert done.completed_at is not None
        assert done.error is None
        assert done.cost is not None
        assert done.cost.actual == pytest.approx(USD_PER_SECOND)
        # Reported on the first poll (queued, 0), then only when it rose; the end is 100.
        assert seen[0] == 0
        assert seen[-1] == 100
        assert seen == sorted(set(seen))

        path = await client.videos.download(video.id, out / "kite.mp4")
        info = probe(path)
        assert info.video is not None
        assert (info.video.codec, info.video.width, info.video.height) == ("h264", 640, 360)
        assert info.duration_s == pytest.approx(1.0, abs=0.1)
        thumb = await client.videos.download(video.id, out / "kite.jpg", variant="thumbnail")
        assert thumb.read_bytes()[:3] == b"\xff\xd8\xff"
        # Written whole and renamed: no partial files left behind.
        assert sorted(await asyncio.to_thread(os.listdir, out)) == ["kite.jpg", "kite.mp4"]

        # An already finished video: wait returns at once, without sleeping.
        started = time.monotonic()
        assert (await client.videos.wait(video.id, poll_interval_s=30)).status == "completed"
        assert time.monotonic() - started < 10


async def test_blocking_client_over_loopback_http(stack: Stack, tmp_path: Path) -> None:
    async with serve_on_loopback(stack.app) as base, stack.worker():

        def scenario() -> tuple[Video, list[int], Path, list[str]]:
            progress: list[int] = []
            # base_url may name the API root too, as with the OpenAI SDK.
            with Client(f"{base}/v1", stack.key, timeout=10) as client:
                video = client.videos.create("a paper boat", **SMALL)
                # No interval given: the server's openai-poll-after-ms paces the polls.
                done = client.videos.wait(
                    video.id, timeout_s=30, on_progress=lambda v: progress.append(v.progress)
                )
                path = client.videos.download(done.id, tmp_path / "boat.mp4")
                ids = [v.id for v in client.videos.iter_all(page_size=1)]
                assert client.videos.delete(video.id).deleted
                with pytest.raises(NotFound):
                    client.videos.get(video.id)
            return done, progress, path, ids

        done, progress, path, ids = await asyncio.to_thread(scenario)
    assert done.status == "completed"
    assert progress[-1] == 100
    assert progress == sorted(set(progress))
    info = probe(path)
    assert info.video is not None
    assert (info.video.width, info.video.height) == (640, 360)
    assert ids == [done.id]


async def test_list_pages_and_iterate_all(stack: Stack) -> None:
    async with stack.client() as client, stack.client(stack.other_key) as other:
        made = [(await client.videos.create(f"clip {i}", **SMALL)).id for i in range(5)]
        await other.videos.create("not yours", **SMALL)

        first = await client.videos.list(limit=2)
        assert (len(first.data), first.has_more, first.object) == (2, True, "list")
        assert first.first_id == made[-1]  # newest first
        assert first.last_id == made[-2]
        second = await client.videos.list(limit=2, after=first.last_id)
        assert [v.id for v in second.data] == [made[2], made[1]]

        assert [v.id async for v in client.videos.iter_all(page_size=2)] == made[::-1]
        assert [v.id async for v in client.videos.iter_all(order="asc", page_size=3)] == made
        assert len([v async for v in client.videos.iter_all(status="queued")]) == 5
        assert [v async for v in client.videos.iter_all(status="completed")] == []
        assert len([v async for v in other.videos.iter_all()]) == 1


async def test_cancel_then_wait_reports_the_end(stack: Stack) -> None:
    async with stack.client() as client:
        video = await client.videos.create("never mind", **SMALL)
        canceled = await client.videos.cancel(video.id)
        assert canceled.status == "canceled"
        assert canceled.error is not None
        assert canceled.error.code == "canceled"
        with pytest.raises(VideoFailed) as failed:
            await client.videos.wait(video.id, timeout_s=5)
        assert (failed.value.status, failed.value.code) == ("canceled", "canceled")
        with pytest.raises(Conflict) as again:
            await client.videos.cancel(video.id)
        assert (again.value.status, again.value.code) == (409, "video_not_cancelable")
        deleted = await client.videos.delete(video.id)
        assert (deleted.id, deleted.deleted) == (video.id, True)
        with pytest.raises(NotFound):
            await client.videos.get(video.id)


async def test_wait_gives_up_after_its_timeout(stack: Stack) -> None:
    async with stack.client() as client:  # no worker: the video stays queued
        video = await client.videos.create("waiting", **SMALL)
        started = time.monotonic()
        with pytest.raises(WaitTimeout) as timed_out:
            await client.videos.wait(video.id, timeout_s=0.3, poll_interval_s=0.1)
        assert 0.3 <= time.monotonic() - started < 10
        assert timed_out.value.video.status == "queued"
        assert isinstance(timed_out.value, TimeoutError)


async def test_errors_map_to_typed_exceptions(stack: Stack) -> None:
    async with stack.client() as client:
        with pytest.raises(NotFound) as missing:
            await client.videos.get("video_nope")
        assert (missing.value.status, missing.value.code, missing.value.param) == (
            404,
            "video_not_found",
            "video_id",
        )
        async with stack.client("vp_not_a_key") as stranger:
            with pytest.raises(AuthenticationError) as denied:
                await stranger.videos.list()
        assert (denied.value.status, denied.value.code) == (401, "invalid_api_key")
        async with stack.client("") as anonymous:
            with pytest.raises(AuthenticationError) as anon:
                await anonymous.videos.list()
        assert anon.value.code == "missing_api_key"

        with pytest.raises(InvalidRequest) as bad_size:
            await client.videos.create("x", seconds=1, size="huge", model=MODEL)
        assert (bad_size.value.status, bad_size.value.code, bad_size.value.param) == (
            422,
            "invalid_size",
            "size",
        )
        assert bad_size.value.type == "invalid_request_error"
        with pytest.raises(InvalidRequest) as unsupported:
            await client.videos.create("x", seconds=1, size="1024x1024", model=MODEL)
        assert unsupported.value.code == "unsupported_size"
        with pytest.raises(InvalidRequest) as unknown:
            await client.videos.create("x", model="nobody/nothing")
        assert unknown.value.code == "unknown_model"

        queued = await client.videos.create("not yet", **SMALL)
        with pytest.raises(Conflict) as not_ready:
            await client.videos.download(queued.id, "/nonexistent/never-written.mp4")
        assert not_ready.value.code == "video_not_ready"
        # Another tenant's video does not exist for this key.
        async with stack.client(stack.other_key) as other:
            with pytest.raises(NotFound):
                await other.videos.get(queued.id)


async def test_estimate_and_budget_exceeded(stack: Stack) -> None:
    async with stack.client() as client, stack.client(stack.admin_key) as admin:
        estimate = await client.estimate("a long take", seconds=2, size="640x360", model=MODEL)
        assert estimate.admissible
        assert (estimate.model, estimate.seconds, estimate.size) == (MODEL, "2", "640x360")
        assert estimate.cost.per_attempt == pytest.approx(2 * USD_PER_SECOND)
        assert estimate.cost.ceiling >= estimate.cost.per_attempt
        assert [s.kind for s in estimate.plan] == ["clip"]
        capped = await client.estimate("x", seconds=2, model=MODEL, max_cost_usd=0.1)
        assert not capped.admissible
        assert capped.reason

        # The client has no budget API (yet): an admin sets one over plain HTTP.
        response = await admin._http.put(
            "/v1/budgets", json={"scope": "global", "period": "day", "limit_usd": 0.75}
        )
        assert response.status_code == 200, response.text

        await client.videos.create("fits", **SMALL)  # $0.50 of $0.75
        with pytest.raises(BudgetExceeded) as refused:
            await client.videos.create("does not fit", **SMALL)
        assert (refused.value.status, refused.value.code) == (402, "budget_exceeded")
        assert "global" in refused.value.message
        assert len((await client.videos.list()).data) == 1  # nothing made by the refusal


async def test_a_create_whose_answer_was_lost_makes_one_video(stack: Stack) -> None:
    gateway = Gateway(
        stack.app, "POST", "/v1/videos", status=503, extra_headers={"retry-after": "0"}
    )
    async with stack.client(app=gateway) as client:
        video = await client.videos.create("exactly once", **SMALL)
        # vidpipe made the video on the first try, the gateway lost the answer; the retry
        # carried the same key and got the same video back.
        keys = [r["idempotency-key"] for r in gateway.requests]
        assert len(keys) == 2
        assert keys[0] == keys[1]
        assert keys[0].startswith("vidpipe-client-")
        assert gateway.answers[1].get("idempotent-replayed") == "true"
        listed = await client.videos.list()
        assert [v.id for v in listed.data] == [video.id]

        # A caller's own key: the same request twice is the same video.
        again = await client.videos.create("mine", **SMALL, idempotency_key="order-1")
        twice = await client.videos.create("mine", **SMALL, idempotency_key="order-1")
        assert again.id == twice.id
        with pytest.raises(InvalidRequest) as reused:
            await client.videos.create("other body", **SMALL, idempotency_key="order-1")
        assert reused.value.code == "idempotency_key_reused"
        assert len((await client.videos.list()).data) == 2


async def test_retries_honour_retry_after_and_give_up(stack: Stack) -> None:
    async with stack.client() as plain:
        video_id = (await plain.videos.create("target", **SMALL)).id
    path = f"/v1/videos/{video_id}"

    throttled = Gateway(
        stack.app, "GET", path, status=429, forward=False, extra_headers={"retry-after-ms": "300"}
    )
    async with stack.client(app=throttled) as client:
        started = time.monotonic()
        assert (await client.videos.get(video_id)).id == video_id
        assert time.monotonic() - started >= 0.3
        assert len(throttled.requests) == 2

    down = Gateway(
        stack.app, "GET", path, times=10, forward=False, extra_headers={"retry-after": "0"}
    )
    async with stack.client(app=down, max_retries=1) as client:
        with pytest.raises(ServerError) as failed:
            await client.videos.get(video_id)
        assert (failed.value.status, failed.value.code) == (503, "upstream")
        assert len(down.requests) == 2

    limited = Gateway(
        stack.app,
        "GET",
        path,
        status=429,
        times=10,
        forward=False,
        extra_headers={"retry-after": "0"},
    )
    async with stack.client(app=limited, max_retries=0) as client:
        with pytest.raises(RateLimited) as slow_down:
            await client.videos.get(video_id)
        assert slow_down.value.retry_after_s == 0.0
        assert len(limited.requests) == 1

    refusing = RefusingTransport(httpx.ASGITransport(app=stack.app), drops=1)
    async with stack.client(transport=refusing, retry_backoff_s=0.01) as client:
        assert (await client.videos.get(video_id)).id == video_id
        assert refusing.calls == 2
    unreachable = RefusingTransport(httpx.ASGITransport(app=stack.app), drops=5)
    async with stack.client(transport=unreachable, max_retries=2, retry_backoff_s=0.01) as client:
        with pytest.raises(APIConnectionError) as broken:
            await client.videos.get(video_id)
        assert isinstance(broken.value.__cause__, httpx.ConnectError)
        assert unreachable.calls == 3

    # A 4xx is an answer, not a failure: never retried.
    not_found = Gateway(stack.app, "GET", "/v1/videos/video_nope", times=0)
    async with stack.client(app=not_found) as client:
        with pytest.raises(NotFound):
            await client.videos.get("video_nope")
        assert len(not_found.requests) == 1


@dataclass
class Receiver:
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.got.append((dict(request.headers), await request.body()))
            return Response(status_code=204)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


async def test_webhooks_from_vidpipe_verify(stack: Stack) -> None:
    receiver = Receiver()
    async with serve_on_loopback(receiver.app()) as base, stack.client() as client:
        # The receiver is set up with its secret before any video is made.
        secret = (await client._http.get("/v1/webhook-endpoints/request-secret")).json()["secret"]
        async with stack.worker():
            video = await client.videos.create("hooked", **SMALL, webhook_url=f"{base}/hook")
            await client.videos.wait(video.id, timeout_s=60, poll_interval_s=0.05)
        for _ in range(20):
            if not await outbox.dispatch_due(
                stack.runtime.db, stack.runtime.http, stack.runtime.clock
            ):
                break

    assert receiver.got
    events = [webhooks.verify(secret, headers, body) for headers, body in receiver.got]
    assert [e["type"] for e in events] == ["video.queued", "video.in_progress", "video.completed"]
    finished = Video.model_validate(events[-1]["data"])  # the client's model fits the event
    assert (finished.id, finished.status, finished.progress) == (video.id, "completed", 100)

    headers, body = receiver.got[-1]
    stamp = int(headers["webhook-timestamp"])
    assert webhooks.verify(secret, headers, body.decode(), now=stamp + 60)["type"] == (
        "video.completed"
    )
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        webhooks.verify(signing.new_secret(), headers, body)
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        webhooks.verify(secret, headers, body.replace(b"completed", b"failed"))
    with pytest.raises(WebhookVerificationError, match="too old"):
        webhooks.verify(secret, headers, body, now=stamp + webhooks.TOLERANCE_S + 1)
    with pytest.raises(WebhookVerificationError, match="missing"):
        webhooks.verify(secret, {"webhook-id": headers["webhook-id"]}, body)
    # Signed, but not an event: refused too.
    odd = signing.headers([secret], "msg_1", stamp, b"[1, 2]")
    with pytest.raises(WebhookVerificationError, match="JSON object"):
        webhooks.verify(secret, odd, b"[1, 2]", now=stamp)
