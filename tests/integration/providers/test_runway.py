"""RunwayProvider against the fake Runway API, in process and on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from vidpipe.errors import PermanentProviderError, TransientProviderError
from vidpipe.providers.base import ProviderStatus, VideoRequest, WebhookRejected
from vidpipe.providers.runway import RunwayProvider
from vidpipe.testing.fakes._common_rkvl import (
    FakeFailure,
    download,
    poll_until_terminal,
    render_sample_mp4,
    serve_on_loopback,
    statuses,
)
from vidpipe.testing.fakes.runway import FakeRunwayState, create_fake_runway

BASE_URL = "http://runway.test"
TEXT = VideoRequest(
    model="gen4.5", prompt="a lighthouse in a storm", seconds=5, width=1280, height=720, seed=7
)
IMAGE = VideoRequest(
    model="gen4_turbo",
    prompt="the boat drifts",
    seconds=4,
    width=960,
    height=960,
    input_image_url="https://example.com/boat.png",
)


@pytest.fixture
def state() -> FakeRunwayState:
    return FakeRunwayState(video=render_sample_mp4())


@pytest.fixture
async def provider(state: FakeRunwayState) -> AsyncIterator[RunwayProvider]:
    transport = httpx.ASGITransport(app=create_fake_runway(state))
    async with httpx.AsyncClient(transport=transport) as http:
        yield RunwayProvider(http, api_key=state.api_key, base_url=BASE_URL)


async def test_text_to_video_runs_to_an_output(
    provider: RunwayProvider, state: FakeRunwayState
) -> None:
    state.running_polls = 3
    job_id = await provider.submit(TEXT, "key-1")
    final, seen = await poll_until_terminal(provider, job_id)

    assert statuses(seen) == [ProviderStatus.RUNNING, ProviderStatus.SUCCEEDED]
    progress = [r.progress for r in seen if r.status is ProviderStatus.RUNNING]
    assert progress == sorted(progress)
    assert all(p is not None and 0 <= p < 100 for p in progress)
    assert seen[0].next_poll_s == 5.0
    assert final.progress == 100
    assert await download(provider, final.outputs[0]) == state.video
    assert state.creates == 1
    assert state.jobs[job_id].body == {
        "model": "gen4.5",
        "promptText": "a lighthouse in a storm",
        "ratio": "1280:720",
        "duration": 5,
        "seed": 7,
    }


async def test_image_to_video_sends_the_first_frame(
    provider: RunwayProvider, state: FakeRunwayState
) -> None:
    job_id = await provider.submit(IMAGE, "key-1")
    final, _ = await poll_until_terminal(provider, job_id)

    assert final.status is ProviderStatus.SUCCEEDED
    body = state.jobs[job_id].body
    assert body["promptImage"] == "https://example.com/boat.png"
    assert body["ratio"] == "960:960"


async def test_throttled_task_is_queued_not_failed(
    provider: RunwayProvider, state: FakeRunwayState
) -> None:
    state.queued_polls = 3
    job_id = await provider.submit(TEXT, "key-1")
    final, seen = await poll_until_terminal(provider, job_id)

    assert [r.status for r in seen[:3]] == [ProviderStatus.QUEUED] * 3
    assert final.status is ProviderStatus.SUCCEEDED


async def test_rate_limit_is_transient_with_retry_after(
    provider: RunwayProvider, state: FakeRunwayState
) -> None:
    state.rate_limit_creates = 1
    state.retry_after_s = 7
    with pytest.raises(TransientProviderError) as caught:
        await provider.submit(TEXT, "key-1")
    assert caught.value.retry_after_s == 7
    assert caught.value.code == "rate_limited"
    assert state.creates == 0

    await provider.submit(TEXT, "key-1")
    assert state.creates == 1


async def test_server_error_is_transient(provider: RunwayProvider, state: FakeRunwayState) -> None:
    state.server_error_creates = 1
    with pytest.raises(TransientProviderError, match="HTTP 503"):
        await provider.submit(TEXT, "key-1")
    assert state.creates == 0


async def test_bad_request_is_permanent_with_runways_reason(
    provider: RunwayProvider, state: FakeRunwayState
) -> None:
    state.refuse_next_create = "promptImage: the image could not be fetched"
    with pytest.raises(PermanentProviderError, match="promptImage: the image could not") as caught:
        await provider.submit(IMAGE, "key-1")
    assert caught.value.code == "provider_rejected"


@pytest.mark.parametrize(
    ("request_", "problem"),
    [
        (VideoRequest("gen4_turbo", "x", 5, 1280, 720), "does not do text-to-video"),
        (VideoRequest("gen4.5", "x", 5, 960, 960), "text-to-video sizes are 1280x720, 720x1280"),
        (VideoRequest("veo3.1", "x", 5, 1280, 720), "durations are 4, 6, 8"),
        (VideoRequest("gen5", "x", 5, 1280, 720), "unknown runway model"),
        (VideoRequest("gen4.5", "é" * 1001, 5, 1280, 720), "at most 1000"),
    ],
)
async def test_requests_runway_would_refuse_are_refused_before_sending(
    provider: RunwayProvider, state: FakeRunwayState, request_: VideoRequest, problem: str
) -> None:
    with pytest.raises(PermanentProviderError, match=problem) as caught:
        await provider.submit(request_, "key-1")
    assert caught.value.code == "invalid_request"
    assert state.create_attempts == 0


async def test_wrong_key_is_provider_auth(state: FakeRunwayState) -> None:
    transport = httpx.ASGITransport(app=create_fake_runway(state))
    async with httpx.AsyncClient(transport=transport) as http:
        provider = RunwayProvider(http, api_key="key_wrong", base_url=BASE_URL)
        with pytest.raises(PermanentProviderError, match="Invalid API key") as caught:
            await provider.submit(TEXT, "key-1")
    assert caught.value.code == "provider_auth"


async def test_generation_failure_carries_runways_code(
    provider: RunwayProvider, state: FakeRunwayState
) -> None:
    state.fail_next = FakeFailure("An unexpected error occurred.", "INTERNAL.BAD_OUTPUT.CODE01")
    final, _ = await poll_until_terminal(provider, await provider.submit(TEXT, "key-1"))

    assert final.status is ProviderStatus.FAILED
    assert final.error_code == "INTERNAL.BAD_OUTPUT.CODE01"
    assert final.error_message == "An unexpected error occurred."


async def test_moderation_failure_is_content_policy(
    provider: RunwayProvider, state: FakeRunwayState
) -> None:
    state.block_next_for_content_policy()
    final, _ = await poll_until_terminal(provider, await provider.submit(TEXT, "key-1"))

    assert final.status is ProviderStatus.FAILED
    assert final.error_code == "content_policy"
    assert final.error_message is not None
    assert "SAFETY.INPUT.TEXT" in final.error_message


async def test_expired_output_url_is_unavailable_and_a_new_read_renews_it(
    provider: RunwayProvider, state: FakeRunwayState
) -> None:
    job_id = await provider.submit(TEXT, "key-1")
    final, _ = await poll_until_terminal(provider, job_id)
    state.expire_outputs()

    with pytest.raises(PermanentProviderError) as caught:
        await download(provider, final.outputs[0])
    assert caught.value.code == "output_unavailable"

    # Reading the task again gives freshly signed URLs.
    again = await provider.poll(job_id)
    assert again.outputs[0].url != final.outputs[0].url
    assert await download(provider, again.outputs[0]) == state.video


async def test_cancel_is_idempotent_and_the_task_is_gone(
    provider: RunwayProvider, state: FakeRunwayState
) -> None:
    state.running_polls = 5
    job_id = await provider.submit(TEXT, "key-1")
    await provider.poll(job_id)
    await provider.cancel(job_id)
    await provider.cancel(job_id)  # a 404 now: not an error

    assert state.jobs[job_id].canceled
    with pytest.raises(PermanentProviderError) as caught:
        await provider.poll(job_id)
    assert caught.value.code == "not_found"
    assert caught.value.provider_job_id == job_id


async def test_cancel_of_a_finished_task_is_not_an_error(
    provider: RunwayProvider, state: FakeRunwayState
) -> None:
    job_id = await provider.submit(TEXT, "key-1")
    await poll_until_terminal(provider, job_id)
    await provider.cancel(job_id)
    assert not state.jobs[job_id].canceled


async def test_runway_sends_no_webhooks(provider: RunwayProvider) -> None:
    assert not provider.supports_webhooks
    with pytest.raises(WebhookRejected):
        provider.parse_webhook({}, b"{}", 0.0)


async def test_models_describe_runways_limits(provider: RunwayProvider) -> None:
    gen45 = provider.model("gen4.5")
    assert gen45 is not None
    assert gen45.kinds == ("text-to-video", "image-to-video")
    assert (gen45.min_seconds, gen45.max_seconds) == (2, 10)
    assert "1584x672" in gen45.sizes
    turbo = provider.model("gen4_turbo")
    assert turbo is not None
    assert turbo.kinds == ("image-to-video",)
    veo3 = provider.model("veo3")
    assert veo3 is not None
    assert (veo3.min_seconds, veo3.max_seconds) == (8, 8)


async def test_on_loopback(state: FakeRunwayState) -> None:
    async with (
        serve_on_loopback(create_fake_runway(state)) as base_url,
        httpx.AsyncClient() as http,
    ):
        provider = RunwayProvider(http, api_key=state.api_key, base_url=base_url)
        final, _ = await poll_until_terminal(provider, await provider.submit(TEXT, "key-1"))
        assert final.outputs[0].url.startswith(base_url)
        assert await download(provider, final.outputs[0]) == state.video
