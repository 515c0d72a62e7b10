"""FalProvider against the fake fal queue, in process and on loopback."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vidpipe.errors import PermanentProviderError, TransientProviderError
from vidpipe.providers.base import OutputRef, ProviderStatus, VideoRequest, WebhookRejected
from vidpipe.providers.fal import FalProvider
from vidpipe.testing.fakes._common_rfm import Outcome, poll_to_end, sample_mp4, serve_on_loopback
from vidpipe.testing.fakes.fal import FakeFalState, create_fake_fal, jwk_x

BASE_URL = "http://fal.test"
NOW = 1_800_000_000
TEXT = VideoRequest(
    model="fal-ai/kling-video/v2.1/master",
    prompt="a red kite",
    seconds=5,
    width=1080,
    height=1920,
)
IMAGE = VideoRequest(
    model="fal-ai/minimax/hailuo-02/standard",
    prompt="the boat drifts",
    seconds=10,
    width=1366,
    height=768,
    input_image_url="https://example.com/boat.png",
)


@pytest.fixture(scope="module")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def state(signing_key: Ed25519PrivateKey) -> FakeFalState:
    return FakeFalState(video=sample_mp4(), signing_key=signing_key, clock=lambda: float(NOW))


@pytest.fixture
async def http(state: FakeFalState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_fake_fal(state))
    async with httpx.AsyncClient(transport=transport) as client:
        yield client


@pytest.fixture
def provider(http: httpx.AsyncClient, state: FakeFalState) -> FalProvider:
    return FalProvider(
        http,
        api_key=state.api_key,
        base_url=BASE_URL,
        webhook_public_keys=[jwk_x(state.signing_key)],
    )


async def fetch(provider: FalProvider, url: str) -> bytes:
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    await provider.fetch_output(OutputRef(url), sink)
    return b"".join(chunks)


async def test_text_to_video_runs_to_a_downloadable_output(
    provider: FalProvider, state: FakeFalState
) -> None:
    state.queued_polls, state.running_polls = 2, 2
    job_id = await provider.submit(TEXT, "key-1")
    final, seen = await poll_to_end(provider, job_id)

    app, _, request_id = job_id.rpartition("/")
    assert app == "fal-ai/kling-video"
    assert [r.status for r in seen] == [
        ProviderStatus.QUEUED,
        ProviderStatus.QUEUED,
        ProviderStatus.RUNNING,
        ProviderStatus.RUNNING,
        ProviderStatus.SUCCEEDED,
    ]
    assert final.progress == 100
    assert await fetch(provider, final.outputs[0].url) == state.video
    job = state.jobs[request_id]
    assert job.model == "fal-ai/kling-video/v2.1/master/text-to-video"
    assert job.input == {"prompt": "a red kite", "duration": "5", "aspect_ratio": "9:16"}
    assert state.creates == 1


async def test_image_to_video_goes_to_the_image_endpoint_with_the_webhook(
    provider: FalProvider, state: FakeFalState
) -> None:
    request = dataclasses.replace(IMAGE, callback_url="https://me.test/hook?t=1")
    job_id = await provider.submit(request, "key-1")

    job = state.jobs[job_id.rpartition("/")[2]]
    assert job.model == "fal-ai/minimax/hailuo-02/standard/image-to-video"
    assert job.input == {
        "prompt": "the boat drifts",
        "duration": "10",
        "prompt_optimizer": True,
        "image_url": "https://example.com/boat.png",
    }
    assert job.webhook_url == "https://me.test/hook?t=1"


async def test_throttled_submit_is_transient_with_retry_after(
    provider: FalProvider, state: FakeFalState
) -> None:
    state.rate_limited_creates, state.retry_after_s = 1, 3
    with pytest.raises(TransientProviderError) as info:
        await provider.submit(TEXT, "key-1")
    assert (info.value.code, info.value.retry_after_s) == ("rate_limited", 3.0)
    assert state.creates == 0


async def test_server_errors_are_transient(provider: FalProvider, state: FakeFalState) -> None:
    state.server_errors = 1
    with pytest.raises(TransientProviderError):
        await provider.submit(TEXT, "key-1")
    job_id = await provider.submit(TEXT, "key-1")
    state.server_errors = 1
    with pytest.raises(TransientProviderError):
        await provider.poll(job_id)
    assert state.creates == 1


async def test_validation_error_is_permanent_with_fals_reason(
    provider: FalProvider, state: FakeFalState
) -> None:
    with pytest.raises(PermanentProviderError) as info:
        await provider.submit(dataclasses.replace(TEXT, prompt=""), "key-1")
    assert info.value.code == "provider_rejected"
    assert "Field required (missing)" in info.value.message
    assert state.creates == 0


async def test_requests_the_model_cannot_do_are_refused_before_sending(
    provider: FalProvider, state: FakeFalState
) -> None:
    with pytest.raises(PermanentProviderError, match="seconds 7") as info:
        await provider.submit(dataclasses.replace(TEXT, seconds=7), "key-1")
    assert info.value.code == "invalid_request"
    assert state.create_attempts == 0


async def test_bad_key_is_permanent_auth_error(http: httpx.AsyncClient) -> None:
    provider = FalProvider(http, api_key="wrong", base_url=BASE_URL)
    with pytest.raises(PermanentProviderError) as info:
        await provider.submit(TEXT, "key-1")
    assert info.value.code == "provider_auth"


@pytest.mark.parametrize(
    ("outcome", "code", "text"),
    [
        (Outcome.FAIL, "generation_failed", "runner failed"),
        (Outcome.CONTENT_POLICY, "content_policy", "content_policy_violation"),
    ],
)
async def test_failed_requests(
    provider: FalProvider, state: FakeFalState, outcome: Outcome, code: str, text: str
) -> None:
    state.outcomes = [outcome]
    final, _ = await poll_to_end(provider, await provider.submit(TEXT, "key-1"))
    assert final.status is ProviderStatus.FAILED
    assert final.error_code == code
    assert final.error_message is not None
    assert text in final.error_message


async def test_expired_output_is_unavailable(provider: FalProvider, state: FakeFalState) -> None:
    final, _ = await poll_to_end(provider, await provider.submit(TEXT, "key-1"))
    state.expire_outputs()
    with pytest.raises(PermanentProviderError) as info:
        await fetch(provider, final.outputs[0].url)
    assert info.value.code == "output_unavailable"


async def test_cancel_before_start_cancels_and_is_idempotent(
    provider: FalProvider, state: FakeFalState
) -> None:
    state.queued_polls = 3
    job_id = await provider.submit(TEXT, "key-1")
    await provider.cancel(job_id)
    await provider.cancel(job_id)  # ALREADY_COMPLETED: fine

    final, _ = await poll_to_end(provider, job_id)
    assert final.status is ProviderStatus.CANCELED
    await provider.cancel("fal-ai/kling-video/no-such-request")


async def test_cancel_of_a_running_request_lets_it_finish(
    provider: FalProvider, state: FakeFalState
) -> None:
    state.queued_polls = 0
    job_id = await provider.submit(TEXT, "key-1")
    assert (await provider.poll(job_id)).status is ProviderStatus.RUNNING
    await provider.cancel(job_id)
    final, _ = await poll_to_end(provider, job_id)
    assert final.status is ProviderStatus.SUCCEEDED


async def test_malformed_job_id_is_not_found(provider: FalProvider) -> None:
    with pytest.raises(PermanentProviderError) as info:
        await provider.poll("just-an-id")
    assert info.value.code == "not_found"


async def test_good_webhook_is_read(provider: FalProvider, state: FakeFalState) -> None:
    job_id = await provider.submit(TEXT, "key-1")
    request_id = job_id.rpartition("/")[2]
    headers, body = state.webhook(request_id)

    event = provider.parse_webhook(headers, body, NOW + 5)
    assert event.provider_job_id == request_id
    assert event.result is not None
    assert event.result.status is ProviderStatus.SUCCEEDED
    assert await fetch(provider, event.result.outputs[0].url) == state.video


async def test_error_webhook_carries_the_failure(
    provider: FalProvider, state: FakeFalState
) -> None:
    state.outcomes = [Outcome.CONTENT_POLICY]
    request_id = (await provider.submit(TEXT, "key-1")).rpartition("/")[2]
    event = provider.parse_webhook(*state.webhook(request_id), NOW)
    assert event.result is not None
    assert (event.result.status, event.result.error_code) == (
        ProviderStatus.FAILED,
        "content_policy",
    )


async def test_duplicate_delivery_has_the_same_event_id(
    provider: FalProvider, state: FakeFalState
) -> None:
    request_id = (await provider.submit(TEXT, "key-1")).rpartition("/")[2]
    first = provider.parse_webhook(*state.webhook(request_id), NOW)
    # fal's retry of the same webhook: same body, a later timestamp.
    again = provider.parse_webhook(*state.webhook(request_id, timestamp=NOW + 120), NOW + 120)
    assert first.event_id == again.event_id


@pytest.mark.parametrize(
    ("forge", "code"),
    [
        ({"key": Ed25519PrivateKey.generate()}, "webhook_signature"),
        ({"tamper": True}, "webhook_signature"),
        ({"timestamp": NOW - 301}, "webhook_stale"),
        ({"timestamp": NOW + 301}, "webhook_stale"),
    ],
)
async def test_forged_or_stale_webhooks_are_rejected(
    provider: FalProvider, state: FakeFalState, forge: dict[str, object], code: str
) -> None:
    request_id = (await provider.submit(TEXT, "key-1")).rpartition("/")[2]
    headers, body = state.webhook(request_id, **forge)  # type: ignore[arg-type]
    with pytest.raises(WebhookRejected) as info:
        provider.parse_webhook(headers, body, NOW)
    assert info.value.code == code


async def test_replayed_webhook_is_rejected_once_stale(
    provider: FalProvider, state: FakeFalState
) -> None:
    request_id = (await provider.submit(TEXT, "key-1")).rpartition("/")[2]
    headers, body = state.webhook(request_id)
    provider.parse_webhook(headers, body, NOW)
    with pytest.raises(WebhookRejected) as info:
        provider.parse_webhook(headers, body, NOW + 3600)
    assert info.value.code == "webhook_stale"


async def test_webhook_keys_from_the_jwks_url(http: httpx.AsyncClient, state: FakeFalState) -> None:
    provider = FalProvider(
        http, api_key=state.api_key, base_url=BASE_URL, jwks_url=f"{BASE_URL}/.well-known/jwks.json"
    )
    request_id = (await provider.submit(TEXT, "key-1")).rpartition("/")[2]
    delivery = state.webhook(request_id)
    with pytest.raises(WebhookRejected) as info:
        provider.parse_webhook(*delivery, NOW)
    assert info.value.code == "webhooks_unconfigured"

    assert await provider.refresh_webhook_keys() == 1
    assert provider.parse_webhook(*delivery, NOW).provider_job_id == request_id


async def test_over_loopback(state: FakeFalState) -> None:
    async with (
        serve_on_loopback(create_fake_fal(state)) as base_url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        provider = FalProvider(http, api_key=state.api_key, base_url=base_url)
        final, _ = await poll_to_end(provider, await provider.submit(IMAGE, "key-1"))
        assert final.outputs[0].url.startswith(base_url)
        assert await fetch(provider, final.outputs[0].url) == state.video
