"""VeoProvider against the fake Gemini API, in process and on loopback."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from vidpipe.errors import ConfigError, PermanentProviderError, TransientProviderError
from vidpipe.providers.base import ProviderStatus, VideoRequest, WebhookRejected
from vidpipe.providers.veo import VeoProvider
from vidpipe.testing.fakes._common_rkvl import (
    download,
    poll_until_terminal,
    render_sample_mp4,
    serve_on_loopback,
    statuses,
)
from vidpipe.testing.fakes.veo import GENERATION_FAILURE, FakeVeoState, create_fake_veo

BASE_URL = "http://gemini.test"
MODEL = "veo-3.1-generate-preview"
TEXT = VideoRequest(model=MODEL, prompt="a fox in the snow", seconds=8, width=1280, height=720)
NOW = 1_800_000_000.0
PNG_DATA_URL = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()


@pytest.fixture
def state() -> FakeVeoState:
    return FakeVeoState(video=render_sample_mp4())


@pytest.fixture
async def http(state: FakeVeoState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_fake_veo(state))
    async with httpx.AsyncClient(transport=transport) as client:
        yield client


@pytest.fixture
def provider(http: httpx.AsyncClient, state: FakeVeoState) -> VeoProvider:
    return VeoProvider(
        http, api_key=state.api_key, base_url=BASE_URL, webhook_secret=state.webhook_secret
    )


async def test_operation_runs_to_a_downloadable_file(
    provider: VeoProvider, state: FakeVeoState
) -> None:
    state.running_polls = 2
    name = await provider.submit(TEXT, "key-1")
    final, seen = await poll_until_terminal(provider, name)

    assert name.startswith(f"models/{MODEL}/operations/")
    assert statuses(seen) == [ProviderStatus.RUNNING, ProviderStatus.SUCCEEDED]
    assert seen[0].next_poll_s == 10.0
    assert "/v1beta/files/" in final.outputs[0].url
    assert await download(provider, final.outputs[0]) == state.video
    assert state.creates == 1
    assert state.jobs[name].body == {
        "instances": [{"prompt": "a fox in the snow"}],
        "parameters": {
            "sampleCount": 1,
            "durationSeconds": 8,
            "aspectRatio": "16:9",
            "resolution": "720p",
        },
    }


async def test_image_goes_inline(provider: VeoProvider, state: FakeVeoState) -> None:
    request = VideoRequest(MODEL, "it starts to snow", 4, 720, 1280, input_image_url=PNG_DATA_URL)
    name = await provider.submit(request, "key-1")

    instance = state.jobs[name].body["instances"][0]
    assert instance["image"] == {
        "bytesBase64Encoded": PNG_DATA_URL.partition(",")[2],
        "mimeType": "image/png",
    }


async def test_download_redirect_to_storage_does_not_carry_the_key(
    provider: VeoProvider, state: FakeVeoState
) -> None:
    state.redirect_downloads_to = "http://storage.test"
    final, _ = await poll_until_terminal(provider, await provider.submit(TEXT, "key-1"))

    assert await download(provider, final.outputs[0]) == state.video
    assert state.leaked_key_downloads == 0


async def test_rate_limit_wait_comes_from_retry_info(
    provider: VeoProvider, state: FakeVeoState
) -> None:
    state.rate_limit_creates = 1
    state.retry_after_s = 12
    with pytest.raises(TransientProviderError, match="RESOURCE_EXHAUSTED") as caught:
        await provider.submit(TEXT, "key-1")
    assert caught.value.retry_after_s == 12.0
    assert caught.value.code == "rate_limited"
    assert state.creates == 0


async def test_overload_is_transient(provider: VeoProvider, state: FakeVeoState) -> None:
    state.server_error_creates = 1
    with pytest.raises(TransientProviderError, match="UNAVAILABLE"):
        await provider.submit(TEXT, "key-1")


async def test_bad_request_is_permanent_with_googles_message(
    provider: VeoProvider, state: FakeVeoState
) -> None:
    state.refuse_next_create = "Your use case is currently not supported."
    with pytest.raises(PermanentProviderError, match="INVALID_ARGUMENT: Your use case") as caught:
        await provider.submit(TEXT, "key-1")
    assert caught.value.code == "provider_rejected"


@pytest.mark.parametrize(
    ("request_", "problem"),
    [
        (VideoRequest(MODEL, "x", 4, 1920, 1080), "1080p only at 8 s"),
        (VideoRequest(MODEL, "x", 5, 1280, 720), "durations are 4, 6 and 8"),
        (VideoRequest(MODEL, "x", 8, 720, 720), "sizes are"),
        (VideoRequest("veo-9", "x", 8, 1280, 720), "unknown veo model"),
        (VideoRequest(MODEL, "x", 8, 1280, 720, input_image_url="https://x/y.png"), "data: URL"),
    ],
)
async def test_requests_veo_would_refuse_are_refused_before_sending(
    provider: VeoProvider, state: FakeVeoState, request_: VideoRequest, problem: str
) -> None:
    with pytest.raises(PermanentProviderError, match=problem) as caught:
        await provider.submit(request_, "key-1")
    assert caught.value.code == "invalid_request"
    assert state.create_attempts == 0


@pytest.mark.parametrize("api_key", ["AIza-wrong", ""])
async def test_wrong_or_missing_key_is_provider_auth(
    http: httpx.AsyncClient, state: FakeVeoState, api_key: str
) -> None:
    provider = VeoProvider(http, api_key=api_key, base_url=BASE_URL)
    with pytest.raises(PermanentProviderError) as caught:
        await provider.submit(TEXT, "key-1")
    assert caught.value.code == "provider_auth"


async def test_generation_failure_carries_googles_error(
    provider: VeoProvider, state: FakeVeoState
) -> None:
    state.fail_next = GENERATION_FAILURE
    final, _ = await poll_until_terminal(provider, await provider.submit(TEXT, "key-1"))

    assert final.status is ProviderStatus.FAILED
    assert final.error_code == "13"
    assert final.error_message == GENERATION_FAILURE.message


async def test_safety_filtered_result_is_content_policy(
    provider: VeoProvider, state: FakeVeoState
) -> None:
    state.block_next_for_content_policy()
    final, _ = await poll_until_terminal(provider, await provider.submit(TEXT, "key-1"))

    assert final.status is ProviderStatus.FAILED
    assert final.error_code == "content_policy"
    assert final.error_message is not None
    assert "usage guidelines" in final.error_message


async def test_deleted_file_is_unavailable(provider: VeoProvider, state: FakeVeoState) -> None:
    state.output_ttl_s = 0.0  # as if the 2-day retention had passed
    final, _ = await poll_until_terminal(provider, await provider.submit(TEXT, "key-1"))
    with pytest.raises(PermanentProviderError) as caught:
        await download(provider, final.outputs[0])
    assert caught.value.code == "output_unavailable"


async def test_unknown_operation_is_not_found(provider: VeoProvider) -> None:
    for name in (f"models/{MODEL}/operations/nope", "../files/x"):
        with pytest.raises(PermanentProviderError) as caught:
            await provider.poll(name)
        assert caught.value.code == "not_found"


async def test_cancel_is_a_no_op(provider: VeoProvider, state: FakeVeoState) -> None:
    name = await provider.submit(TEXT, "key-1")
    await provider.cancel(name)
    await provider.cancel(name)
    final, _ = await poll_until_terminal(provider, name)
    assert final.status is ProviderStatus.SUCCEEDED


async def test_signed_webhook_names_the_operation(
    provider: VeoProvider, state: FakeVeoState
) -> None:
    name = await provider.submit(TEXT, "key-1")
    headers, body = state.webhook(name, now=NOW)

    event = provider.parse_webhook(headers, body, NOW + 10)
    assert event.provider_job_id == name
    assert event.event_id == headers["webhook-id"]
    assert event.result is None


async def test_duplicate_delivery_has_the_same_event_id(
    provider: VeoProvider, state: FakeVeoState
) -> None:
    headers, body = state.webhook(await provider.submit(TEXT, "key-1"), now=NOW)
    first = provider.parse_webhook(headers, body, NOW)
    again = provider.parse_webhook(headers, body, NOW + 60)
    assert first.event_id == again.event_id


async def test_wrongly_signed_webhook_is_rejected(
    provider: VeoProvider, state: FakeVeoState
) -> None:
    wrong = "whsec_" + base64.b64encode(b"not the secret").decode()
    headers, body = state.webhook(await provider.submit(TEXT, "key-1"), now=NOW, secret=wrong)
    with pytest.raises(WebhookRejected) as caught:
        provider.parse_webhook(headers, body, NOW)
    assert caught.value.code == "webhook_signature"


async def test_tampered_webhook_body_is_rejected(
    provider: VeoProvider, state: FakeVeoState
) -> None:
    headers, body = state.webhook(await provider.submit(TEXT, "key-1"), now=NOW)
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(headers, body.replace(b"video", b"vidya"), NOW)


async def test_replayed_webhook_is_stale(provider: VeoProvider, state: FakeVeoState) -> None:
    headers, body = state.webhook(await provider.submit(TEXT, "key-1"), now=NOW)
    with pytest.raises(WebhookRejected) as caught:
        provider.parse_webhook(headers, body, NOW + 301)
    assert caught.value.code == "webhook_stale"


async def test_webhook_with_missing_headers_is_rejected(provider: VeoProvider) -> None:
    with pytest.raises(WebhookRejected) as caught:
        provider.parse_webhook({}, b"{}", NOW)
    assert caught.value.code == "webhook_malformed"


async def test_webhooks_need_a_secret(http: httpx.AsyncClient, state: FakeVeoState) -> None:
    provider = VeoProvider(http, api_key=state.api_key, base_url=BASE_URL)
    assert not provider.supports_webhooks
    headers, body = state.webhook("models/m/operations/x", now=NOW)
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(headers, body, NOW)
    with pytest.raises(ConfigError):
        VeoProvider(http, api_key="k", webhook_secret="whsec_not base64!")


async def test_on_loopback(state: FakeVeoState) -> None:
    async with serve_on_loopback(create_fake_veo(state)) as base_url, httpx.AsyncClient() as http:
        provider = VeoProvider(http, api_key=state.api_key, base_url=base_url)
        final, _ = await poll_until_terminal(provider, await provider.submit(TEXT, "key-1"))
        assert final.outputs[0].url.startswith(base_url)
        assert await download(provider, final.outputs[0]) == state.video
        # A hand-off to another origin (localhost vs 127.0.0.1) goes without the key.
        state.redirect_downloads_to = base_url.replace("127.0.0.1", "localhost")
        assert await download(provider, final.outputs[0]) == state.video
        assert state.leaked_key_downloads == 0
