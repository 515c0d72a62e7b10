"""KlingProvider against the fake Kling API, in process and on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from vidpipe.core.clock import ManualClock
from vidpipe.errors import PermanentProviderError, TransientProviderError
from vidpipe.providers.base import ProviderStatus, VideoRequest, WebhookRejected
from vidpipe.providers.kling import KlingProvider, encode_hs256_jwt
from vidpipe.testing.fakes._common_rkvl import (
    download,
    poll_until_terminal,
    render_sample_mp4,
    serve_on_loopback,
    statuses,
)
from vidpipe.testing.fakes.kling import GENERATION_FAILURE, FakeKlingState, create_fake_kling

BASE_URL = "http://kling.test"
TEXT = VideoRequest(model="kling-v2-6", prompt="koi in a pond", seconds=5, width=1280, height=720)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def state(clock: ManualClock) -> FakeKlingState:
    return FakeKlingState(video=render_sample_mp4(), clock=clock.now)


@pytest.fixture
async def http(state: FakeKlingState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_fake_kling(state))
    async with httpx.AsyncClient(transport=transport) as client:
        yield client


@pytest.fixture
def provider(http: httpx.AsyncClient, state: FakeKlingState, clock: ManualClock) -> KlingProvider:
    return KlingProvider(
        http,
        access_key=state.access_key,
        secret_key=state.secret_key,
        base_url=BASE_URL,
        clock=clock,
    )


def test_jwt_encoder_matches_a_known_token() -> None:
    # The example token of RFC 7519 / jwt.io, HS256 over these exact claims.
    claims = {"sub": "1234567890", "name": "John Doe", "iat": 1516239022}
    assert encode_hs256_jwt(claims, "your-256-bit-secret") == (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
        ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
        ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
    )


async def test_text_to_video_runs_to_an_output(
    provider: KlingProvider, state: FakeKlingState
) -> None:
    state.queued_polls = 1
    state.running_polls = 2
    job_id = await provider.submit(TEXT, "key-1")
    final, seen = await poll_until_terminal(provider, job_id)

    endpoint, _, task_id = job_id.partition("/")
    assert endpoint == "text2video"
    assert statuses(seen) == [
        ProviderStatus.QUEUED,
        ProviderStatus.RUNNING,
        ProviderStatus.SUCCEEDED,
    ]
    assert await download(provider, final.outputs[0]) == state.video
    assert state.creates == 1
    body = state.jobs[task_id].body
    assert body == {
        "model_name": "kling-v2-6",
        "prompt": "koi in a pond",
        "mode": "std",
        "duration": "5",
        "external_task_id": body["external_task_id"],
        "aspect_ratio": "16:9",
    }


async def test_image_to_video_sends_bare_base64(
    provider: KlingProvider, state: FakeKlingState
) -> None:
    request = VideoRequest(
        "kling-v1-6", "ripples", 10, 1920, 1080, input_image_url="data:image/png;base64,iVBORw0K"
    )
    job_id = await provider.submit(request, "key-1")
    final, _ = await poll_until_terminal(provider, job_id)

    assert job_id.startswith("image2video/")
    assert final.status is ProviderStatus.SUCCEEDED
    body = state.jobs[job_id.partition("/")[2]].body
    assert (body["image"], body["mode"], body["duration"]) == ("iVBORw0K", "pro", "10")
    assert "aspect_ratio" not in body


async def test_same_idempotency_key_never_creates_a_second_task(
    provider: KlingProvider, state: FakeKlingState
) -> None:
    await provider.submit(TEXT, "key-1")
    with pytest.raises(PermanentProviderError, match="already exists"):
        await provider.submit(TEXT, "key-1")
    await provider.submit(TEXT, "key-2")
    assert state.creates == 2


async def test_rate_limit_is_transient_with_retry_after(
    provider: KlingProvider, state: FakeKlingState
) -> None:
    state.rate_limit_creates = 1
    state.retry_after_s = 4
    with pytest.raises(TransientProviderError, match="1302") as caught:
        await provider.submit(TEXT, "key-1")
    assert caught.value.retry_after_s == 4
    assert state.creates == 0


async def test_depleted_resource_pack_is_permanent_despite_429(
    provider: KlingProvider, state: FakeKlingState
) -> None:
    state.next_create_error = (429, 1102, "Account resource pack has been depleted")
    with pytest.raises(PermanentProviderError, match="depleted") as caught:
        await provider.submit(TEXT, "key-1")
    assert caught.value.code == "provider_account"


async def test_server_error_is_transient(provider: KlingProvider, state: FakeKlingState) -> None:
    state.server_error_creates = 1
    with pytest.raises(TransientProviderError, match="5001"):
        await provider.submit(TEXT, "key-1")


async def test_bad_request_is_permanent_with_klings_reason(
    provider: KlingProvider, state: FakeKlingState
) -> None:
    state.refuse_next_create = "camera_control.config: values must be within [-10, 10]"
    with pytest.raises(PermanentProviderError, match="1201: camera_control") as caught:
        await provider.submit(TEXT, "key-1")
    assert caught.value.code == "provider_rejected"


async def test_prompt_refused_by_safety_is_content_policy(
    provider: KlingProvider, state: FakeKlingState
) -> None:
    state.next_create_error = (400, 1301, "Content security policy triggered")
    with pytest.raises(PermanentProviderError) as caught:
        await provider.submit(TEXT, "key-1")
    assert caught.value.code == "content_policy"


@pytest.mark.parametrize(
    ("request_", "problem"),
    [
        (VideoRequest("kling-v1", "x", 6, 1280, 720), "durations are 5 and 10"),
        (VideoRequest("kling-v1", "x", 5, 640, 360), "sizes are"),
        (VideoRequest("kling-v9", "x", 5, 1280, 720), "unknown kling model"),
        (VideoRequest("kling-v1", "x" * 2501, 5, 1280, 720), "at most 2500"),
    ],
)
async def test_requests_kling_would_refuse_are_refused_before_sending(
    provider: KlingProvider, state: FakeKlingState, request_: VideoRequest, problem: str
) -> None:
    with pytest.raises(PermanentProviderError, match=problem) as caught:
        await provider.submit(request_, "key-1")
    assert caught.value.code == "invalid_request"
    assert state.create_attempts == 0


async def test_wrong_secret_is_provider_auth(
    http: httpx.AsyncClient, state: FakeKlingState
) -> None:
    provider = KlingProvider(
        http, access_key=state.access_key, secret_key="wrong", base_url=BASE_URL
    )
    with pytest.raises(PermanentProviderError, match="1002") as caught:
        await provider.submit(TEXT, "key-1")
    assert caught.value.code == "provider_auth"


async def test_token_from_a_skewed_clock_is_refused(
    http: httpx.AsyncClient, state: FakeKlingState, clock: ManualClock
) -> None:
    behind = ManualClock(clock.now() - 3600)
    provider = KlingProvider(
        http,
        access_key=state.access_key,
        secret_key=state.secret_key,
        base_url=BASE_URL,
        clock=behind,
    )
    with pytest.raises(PermanentProviderError, match="expired") as caught:
        await provider.submit(TEXT, "key-1")
    assert caught.value.code == "provider_auth"


async def test_token_is_minted_per_call_so_it_never_goes_stale(
    provider: KlingProvider, state: FakeKlingState, clock: ManualClock
) -> None:
    state.running_polls = 3
    job_id = await provider.submit(TEXT, "key-1")
    clock.advance(3 * 3600)  # far past one token's 30 minutes
    final, _ = await poll_until_terminal(provider, job_id)
    assert final.status is ProviderStatus.SUCCEEDED


async def test_generation_failure_carries_klings_message(
    provider: KlingProvider, state: FakeKlingState
) -> None:
    state.fail_next = GENERATION_FAILURE
    final, _ = await poll_until_terminal(provider, await provider.submit(TEXT, "key-1"))

    assert final.status is ProviderStatus.FAILED
    assert final.error_code == "generation_failed"
    assert final.error_message == GENERATION_FAILURE.message


async def test_risk_control_failure_is_content_policy(
    provider: KlingProvider, state: FakeKlingState
) -> None:
    state.block_next_for_content_policy()
    final, _ = await poll_until_terminal(provider, await provider.submit(TEXT, "key-1"))

    assert final.status is ProviderStatus.FAILED
    assert final.error_code == "content_policy"


async def test_expired_output_url_is_unavailable(
    provider: KlingProvider, state: FakeKlingState, clock: ManualClock
) -> None:
    state.output_ttl_s = 30 * 86400
    final, _ = await poll_until_terminal(provider, await provider.submit(TEXT, "key-1"))
    clock.advance(30 * 86400)
    with pytest.raises(PermanentProviderError) as caught:
        await download(provider, final.outputs[0])
    assert caught.value.code == "output_unavailable"


async def test_unknown_task_is_not_found(provider: KlingProvider) -> None:
    for job_id in ("text2video/123", "../v1/account", "lip-sync/1"):
        with pytest.raises(PermanentProviderError) as caught:
            await provider.poll(job_id)
        assert caught.value.code == "not_found"


async def test_cancel_is_a_no_op(provider: KlingProvider) -> None:
    job_id = await provider.submit(TEXT, "key-1")
    await provider.cancel(job_id)
    await provider.cancel(job_id)
    final, _ = await poll_until_terminal(provider, job_id)
    assert final.status is ProviderStatus.SUCCEEDED


async def test_callback_url_is_passed_but_callbacks_are_not_trusted(
    provider: KlingProvider, state: FakeKlingState
) -> None:
    request = VideoRequest(
        "kling-v1", "x", 5, 720, 720, callback_url="https://vidpipe.example/v1/hooks/kling"
    )
    job_id = await provider.submit(request, "key-1")
    assert state.jobs[job_id.partition("/")[2]].body["callback_url"] == request.callback_url
    assert not provider.supports_webhooks
    with pytest.raises(WebhookRejected):
        provider.parse_webhook({}, b"{}", 0.0)


async def test_on_loopback(state: FakeKlingState, clock: ManualClock) -> None:
    async with serve_on_loopback(create_fake_kling(state)) as base_url, httpx.AsyncClient() as http:
        provider = KlingProvider(
            http,
            access_key=state.access_key,
            secret_key=state.secret_key,
            base_url=base_url,
            clock=clock,
        )
        final, _ = await poll_until_terminal(provider, await provider.submit(TEXT, "key-1"))
        assert await download(provider, final.outputs[0]) == state.video
