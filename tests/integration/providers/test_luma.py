"""LumaProvider against the fake Luma Dream Machine API, in process and on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from vidpipe.errors import PermanentProviderError, TransientProviderError
from vidpipe.providers.base import ProviderStatus, VideoRequest, WebhookRejected
from vidpipe.providers.luma import LumaProvider
from vidpipe.testing.fakes._common_rkvl import (
    download,
    poll_until_terminal,
    render_sample_mp4,
    serve_on_loopback,
    statuses,
)
from vidpipe.testing.fakes.luma import GENERATION_FAILURE, FakeLumaState, create_fake_luma

BASE_URL = "http://luma.test/dream-machine/v1"
TEXT = VideoRequest(
    model="ray-2", prompt="fog rolls over a harbor", seconds=5, width=1280, height=720
)


@pytest.fixture
def state() -> FakeLumaState:
    return FakeLumaState(video=render_sample_mp4())


@pytest.fixture
async def provider(state: FakeLumaState) -> AsyncIterator[LumaProvider]:
    transport = httpx.ASGITransport(app=create_fake_luma(state))
    async with httpx.AsyncClient(transport=transport) as http:
        yield LumaProvider(http, api_key=state.api_key, base_url=BASE_URL)


async def test_generation_runs_to_an_output(provider: LumaProvider, state: FakeLumaState) -> None:
    state.queued_polls = 1
    state.running_polls = 2
    job_id = await provider.submit(TEXT, "key-1")
    final, seen = await poll_until_terminal(provider, job_id)

    assert statuses(seen) == [
        ProviderStatus.QUEUED,
        ProviderStatus.RUNNING,
        ProviderStatus.SUCCEEDED,
    ]
    assert final.progress == 100
    assert await download(provider, final.outputs[0]) == state.video
    assert state.creates == 1
    assert state.jobs[job_id].body == {
        "model": "ray-2",
        "prompt": "fog rolls over a harbor",
        "aspect_ratio": "16:9",
        "resolution": "720p",
        "duration": "5s",
    }


async def test_image_and_callback_go_in_the_body(
    provider: LumaProvider, state: FakeLumaState
) -> None:
    request = VideoRequest(
        model="ray-flash-2",
        prompt="she turns around",
        seconds=9,
        width=720,
        height=1280,
        input_image_url="https://example.com/first.jpg",
        callback_url="https://vidpipe.example/hooks/luma",
    )
    job_id = await provider.submit(request, "key-1")

    body = state.jobs[job_id].body
    assert body["keyframes"] == {
        "frame0": {"type": "image", "url": "https://example.com/first.jpg"}
    }
    assert body["callback_url"] == "https://vidpipe.example/hooks/luma"
    assert (body["aspect_ratio"], body["duration"]) == ("9:16", "9s")


async def test_rate_limit_is_transient_with_retry_after(
    provider: LumaProvider, state: FakeLumaState
) -> None:
    state.rate_limit_creates = 1
    state.retry_after_s = 3
    with pytest.raises(TransientProviderError) as caught:
        await provider.submit(TEXT, "key-1")
    assert caught.value.retry_after_s == 3
    assert state.creates == 0


async def test_server_error_is_transient(provider: LumaProvider, state: FakeLumaState) -> None:
    state.server_error_creates = 1
    with pytest.raises(TransientProviderError, match="HTTP 503"):
        await provider.submit(TEXT, "key-1")


async def test_bad_request_is_permanent_with_lumas_reason(
    provider: LumaProvider, state: FakeLumaState
) -> None:
    state.refuse_next_create = "keyframes.frame0.url: image could not be downloaded"
    with pytest.raises(PermanentProviderError, match="image could not be downloaded") as caught:
        await provider.submit(TEXT, "key-1")
    assert caught.value.code == "provider_rejected"


@pytest.mark.parametrize(
    ("request_", "problem"),
    [
        (VideoRequest("ray-2", "x", 6, 1280, 720), "durations are 5 and 9"),
        (VideoRequest("ray-2", "x", 5, 1024, 1024), "sizes are"),
        (VideoRequest("ray-3", "x", 5, 1280, 720), "unknown luma model"),
    ],
)
async def test_requests_luma_would_refuse_are_refused_before_sending(
    provider: LumaProvider, state: FakeLumaState, request_: VideoRequest, problem: str
) -> None:
    with pytest.raises(PermanentProviderError, match=problem) as caught:
        await provider.submit(request_, "key-1")
    assert caught.value.code == "invalid_request"
    assert state.create_attempts == 0


async def test_wrong_key_is_provider_auth(state: FakeLumaState) -> None:
    transport = httpx.ASGITransport(app=create_fake_luma(state))
    async with httpx.AsyncClient(transport=transport) as http:
        provider = LumaProvider(http, api_key="nope", base_url=BASE_URL)
        with pytest.raises(PermanentProviderError, match="Invalid API key") as caught:
            await provider.submit(TEXT, "key-1")
    assert caught.value.code == "provider_auth"


async def test_generation_failure_carries_lumas_reason(
    provider: LumaProvider, state: FakeLumaState
) -> None:
    state.fail_next = GENERATION_FAILURE
    final, _ = await poll_until_terminal(provider, await provider.submit(TEXT, "key-1"))

    assert final.status is ProviderStatus.FAILED
    assert final.error_code == "generation_failed"
    assert final.error_message == GENERATION_FAILURE.message


async def test_moderation_failure_is_content_policy(
    provider: LumaProvider, state: FakeLumaState
) -> None:
    state.block_next_for_content_policy()
    final, _ = await poll_until_terminal(provider, await provider.submit(TEXT, "key-1"))

    assert final.status is ProviderStatus.FAILED
    assert final.error_code == "content_policy"


async def test_expired_output_url_is_unavailable(
    provider: LumaProvider, state: FakeLumaState
) -> None:
    state.output_single_use = True
    final, _ = await poll_until_terminal(provider, await provider.submit(TEXT, "key-1"))
    assert await download(provider, final.outputs[0]) == state.video

    with pytest.raises(PermanentProviderError) as caught:
        await download(provider, final.outputs[0])
    assert caught.value.code == "output_unavailable"


async def test_cancel_deletes_and_is_idempotent(
    provider: LumaProvider, state: FakeLumaState
) -> None:
    state.queued_polls = 5
    job_id = await provider.submit(TEXT, "key-1")
    await provider.cancel(job_id)
    await provider.cancel(job_id)

    assert state.jobs[job_id].deleted
    with pytest.raises(PermanentProviderError) as caught:
        await provider.poll(job_id)
    assert caught.value.code == "not_found"


async def test_luma_callbacks_are_unsigned_so_not_accepted(provider: LumaProvider) -> None:
    assert not provider.supports_webhooks
    with pytest.raises(WebhookRejected):
        provider.parse_webhook({}, b'{"id": "x", "state": "completed"}', 0.0)


async def test_on_loopback(state: FakeLumaState) -> None:
    async with serve_on_loopback(create_fake_luma(state)) as origin, httpx.AsyncClient() as http:
        provider = LumaProvider(http, api_key=state.api_key, base_url=origin + "/dream-machine/v1")
        final, _ = await poll_until_terminal(provider, await provider.submit(TEXT, "key-1"))
        assert await download(provider, final.outputs[0]) == state.video
