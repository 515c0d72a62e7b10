"""ReplicateProvider against the fake Replicate API, in process and on loopback."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from vidpipe.errors import PermanentProviderError, TransientProviderError
from vidpipe.providers.base import OutputRef, ProviderStatus, VideoRequest, WebhookRejected
from vidpipe.providers.replicate import ReplicateProvider, prediction_result
from vidpipe.testing.fakes._common_rfm import Outcome, poll_to_end, sample_mp4, serve_on_loopback
from vidpipe.testing.fakes.replicate import FakeReplicateState, create_fake_replicate

BASE_URL = "http://replicate.test"
# A fixed "now" for webhook freshness checks.
NOW = 1_800_000_000
TEXT = VideoRequest(
    model="minimax/hailuo-02", prompt="a kite over hills", seconds=6, width=1366, height=768
)
IMAGE = VideoRequest(
    model="wan-video/wan-2.5-i2v",
    prompt="the boat drifts",
    seconds=5,
    width=1280,
    height=720,
    seed=7,
    input_image_url="https://example.com/boat.png",
)


@pytest.fixture
def state() -> FakeReplicateState:
    return FakeReplicateState(video=sample_mp4())


@pytest.fixture
async def http(state: FakeReplicateState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_fake_replicate(state))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


@pytest.fixture
def provider(http: httpx.AsyncClient, state: FakeReplicateState) -> ReplicateProvider:
    return ReplicateProvider(
        http, api_key=state.api_key, base_url=BASE_URL, webhook_secret=state.webhook_secret
    )


async def fetch(provider: ReplicateProvider, url: str) -> bytes:
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    await provider.fetch_output(OutputRef(url), sink)
    return b"".join(chunks)


async def test_text_to_video_runs_to_a_downloadable_output(
    provider: ReplicateProvider, state: FakeReplicateState
) -> None:
    state.queued_polls, state.running_polls = 2, 3
    job_id = await provider.submit(TEXT, "key-1")
    final, seen = await poll_to_end(provider, job_id)

    assert [r.status for r in seen] == [
        ProviderStatus.QUEUED,
        ProviderStatus.QUEUED,
        ProviderStatus.RUNNING,
        ProviderStatus.RUNNING,
        ProviderStatus.RUNNING,
        ProviderStatus.SUCCEEDED,
    ]
    running = [r.progress for r in seen if r.status is ProviderStatus.RUNNING]
    assert running == sorted(running)
    assert all(p is not None and 0 <= p < 100 for p in running)
    assert final.progress == 100
    assert len(final.outputs) == 1
    assert await fetch(provider, final.outputs[0].url) == state.video
    assert state.creates == 1
    assert state.jobs[job_id].input == {"prompt": TEXT.prompt, "duration": 6, "resolution": "768p"}


async def test_image_to_video_and_webhook_are_sent(
    provider: ReplicateProvider, state: FakeReplicateState
) -> None:
    request = dataclasses.replace(IMAGE, callback_url="https://me.test/hook")
    job_id = await provider.submit(request, "key-1")

    job = state.jobs[job_id]
    assert job.model == "wan-video/wan-2.5-i2v"
    assert job.input == {
        "prompt": "the boat drifts",
        "duration": 5,
        "resolution": "720p",
        "image": "https://example.com/boat.png",
        "seed": 7,
    }
    assert job.webhook_url == "https://me.test/hook"


async def test_no_webhook_is_asked_for_without_a_secret(
    http: httpx.AsyncClient, state: FakeReplicateState
) -> None:
    provider = ReplicateProvider(http, api_key=state.api_key, base_url=BASE_URL)
    request = dataclasses.replace(TEXT, callback_url="https://me.test/hook")
    job_id = await provider.submit(request, "key-1")

    assert not provider.supports_webhooks
    assert state.jobs[job_id].webhook_url is None
    with pytest.raises(WebhookRejected) as info:
        provider.parse_webhook({}, b"{}", time.time())
    assert info.value.code == "webhooks_unconfigured"


async def test_throttled_create_is_transient_with_retry_after(
    provider: ReplicateProvider, state: FakeReplicateState
) -> None:
    state.rate_limited_creates, state.retry_after_s = 1, 7
    with pytest.raises(TransientProviderError) as info:
        await provider.submit(TEXT, "key-1")
    assert info.value.code == "rate_limited"
    assert info.value.retry_after_s == 7.0
    assert state.creates == 0

    await provider.submit(TEXT, "key-1")
    assert (state.create_attempts, state.creates) == (2, 1)


async def test_server_errors_are_transient(
    provider: ReplicateProvider, state: FakeReplicateState
) -> None:
    state.server_errors = 1
    with pytest.raises(TransientProviderError) as info:
        await provider.submit(TEXT, "key-1")
    assert info.value.code == "http_503"

    job_id = await provider.submit(TEXT, "key-1")
    state.server_errors = 1
    with pytest.raises(TransientProviderError):
        await provider.poll(job_id)
    assert state.creates == 1


async def test_validation_error_is_permanent_with_replicates_reason(
    provider: ReplicateProvider, state: FakeReplicateState
) -> None:
    blank = dataclasses.replace(TEXT, prompt="   ")
    with pytest.raises(PermanentProviderError) as info:
        await provider.submit(blank, "key-1")
    assert info.value.code == "provider_rejected"
    assert "prompt is required" in info.value.message
    assert state.creates == 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"seconds": 8}, "seconds 8 not allowed"),
        ({"width": 1920, "height": 1080, "seconds": 10}, "1080p is only made 6 s long"),
        ({"width": 640, "height": 360}, "size 640x360"),
        ({"model": "nobody/nothing"}, "unknown model"),
    ],
)
async def test_requests_the_model_cannot_do_are_refused_before_sending(
    provider: ReplicateProvider, state: FakeReplicateState, change: dict[str, object], reason: str
) -> None:
    with pytest.raises(PermanentProviderError, match=reason) as info:
        await provider.submit(dataclasses.replace(TEXT, **change), "key-1")
    assert info.value.code == "invalid_request"
    assert state.create_attempts == 0


async def test_image_only_model_needs_an_image(provider: ReplicateProvider) -> None:
    with pytest.raises(PermanentProviderError, match="needs an input image"):
        await provider.submit(dataclasses.replace(IMAGE, input_image_url=None), "k")


async def test_bad_token_is_permanent_auth_error(
    http: httpx.AsyncClient, state: FakeReplicateState
) -> None:
    provider = ReplicateProvider(http, api_key="r8_wrong", base_url=BASE_URL)
    with pytest.raises(PermanentProviderError) as info:
        await provider.submit(TEXT, "key-1")
    assert info.value.code == "provider_auth"
    assert "valid authentication token" in info.value.message


@pytest.mark.parametrize(
    ("outcome", "status", "code", "text"),
    [
        (Outcome.FAIL, ProviderStatus.FAILED, "generation_failed", "E1001"),
        (Outcome.CONTENT_POLICY, ProviderStatus.FAILED, "content_policy", "flagged as sensitive"),
        (Outcome.ABORTED, ProviderStatus.CANCELED, "deadline", "not billed"),
    ],
)
async def test_unsuccessful_predictions(
    provider: ReplicateProvider,
    state: FakeReplicateState,
    outcome: Outcome,
    status: ProviderStatus,
    code: str,
    text: str,
) -> None:
    state.outcomes = [outcome]
    final, _ = await poll_to_end(provider, await provider.submit(TEXT, "key-1"))

    assert final.status is status
    assert final.error_code == code
    assert final.error_message is not None
    assert text in final.error_message
    assert final.outputs == ()


async def test_expired_output_is_unavailable(
    provider: ReplicateProvider, state: FakeReplicateState
) -> None:
    final, _ = await poll_to_end(provider, await provider.submit(TEXT, "key-1"))
    state.expire_outputs()

    with pytest.raises(PermanentProviderError) as info:
        await fetch(provider, final.outputs[0].url)
    assert info.value.code == "output_unavailable"


async def test_cancel_is_idempotent(provider: ReplicateProvider, state: FakeReplicateState) -> None:
    state.queued_polls = 5
    job_id = await provider.submit(TEXT, "key-1")
    await provider.cancel(job_id)
    await provider.cancel(job_id)

    final, seen = await poll_to_end(provider, job_id)
    assert [r.status for r in seen] == [ProviderStatus.CANCELED]
    assert final.error_code is None
    await provider.cancel(job_id)
    await provider.cancel("no-such-prediction")
    assert state.cancels == 3


async def test_cancel_after_success_changes_nothing(
    provider: ReplicateProvider, state: FakeReplicateState
) -> None:
    job_id = await provider.submit(TEXT, "key-1")
    await poll_to_end(provider, job_id)
    await provider.cancel(job_id)
    assert (await provider.poll(job_id)).status is ProviderStatus.SUCCEEDED


async def test_unknown_prediction_is_not_found(provider: ReplicateProvider) -> None:
    with pytest.raises(PermanentProviderError) as info:
        await provider.poll("nope")
    assert (info.value.code, info.value.provider_job_id) == ("not_found", "nope")


async def test_good_webhook_is_read(provider: ReplicateProvider, state: FakeReplicateState) -> None:
    job_id = await provider.submit(TEXT, "key-1")
    await poll_to_end(provider, job_id)
    headers, body = state.webhook(job_id)

    event = provider.parse_webhook(headers, body, time.time())
    assert event.event_id == headers["webhook-id"]
    assert event.provider_job_id == job_id
    assert event.result is not None
    assert event.result.status is ProviderStatus.SUCCEEDED
    assert len(event.result.outputs) == 1


async def test_duplicate_delivery_has_the_same_event_id(
    provider: ReplicateProvider, state: FakeReplicateState
) -> None:
    job_id = await provider.submit(TEXT, "key-1")
    first = state.webhook(job_id, webhook_id="msg_1")
    again = state.webhook(job_id, webhook_id="msg_1")
    now = time.time()
    assert provider.parse_webhook(*first, now).event_id == "msg_1"
    assert provider.parse_webhook(*again, now + 60).event_id == "msg_1"


@pytest.mark.parametrize(
    ("forge", "code"),
    [
        ({"secret": "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"}, "webhook_signature"),
        ({"tamper": True}, "webhook_signature"),
        ({"timestamp": NOW - 301}, "webhook_stale"),
        ({"timestamp": NOW + 301}, "webhook_stale"),
    ],
)
async def test_forged_or_stale_webhooks_are_rejected(
    provider: ReplicateProvider, state: FakeReplicateState, forge: dict[str, object], code: str
) -> None:
    state.clock = lambda: float(NOW)
    job_id = await provider.submit(TEXT, "key-1")
    headers, body = state.webhook(job_id, **forge)  # type: ignore[arg-type]
    with pytest.raises(WebhookRejected) as info:
        provider.parse_webhook(headers, body, NOW)
    assert info.value.code == code


async def test_replayed_webhook_is_rejected_once_stale(
    provider: ReplicateProvider, state: FakeReplicateState
) -> None:
    job_id = await provider.submit(TEXT, "key-1")
    headers, body = state.webhook(job_id)
    sent_at = int(headers["webhook-timestamp"])
    provider.parse_webhook(headers, body, sent_at + 10)
    with pytest.raises(WebhookRejected) as info:
        provider.parse_webhook(headers, body, sent_at + 600)
    assert info.value.code == "webhook_stale"


async def test_webhook_without_signature_headers_is_malformed(provider: ReplicateProvider) -> None:
    with pytest.raises(WebhookRejected) as info:
        provider.parse_webhook({"webhook-id": "x"}, b"{}", time.time())
    assert info.value.code == "webhook_malformed"


@pytest.mark.parametrize(
    ("logs", "progress"),
    [("", None), ("  5%|5/100\n 45%|####  | 45/100", 45), ("100%|##########| 20/20", 99)],
)
def test_progress_comes_from_tqdm_lines_in_the_logs(logs: str, progress: int | None) -> None:
    result = prediction_result({"status": "processing", "logs": logs})
    assert result.progress == progress


async def test_over_loopback(state: FakeReplicateState) -> None:
    async with (
        serve_on_loopback(create_fake_replicate(state)) as base_url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        provider = ReplicateProvider(http, api_key=state.api_key, base_url=base_url)
        final, _ = await poll_to_end(provider, await provider.submit(TEXT, "key-1"))
        assert final.outputs[0].url.startswith(base_url)
        assert await fetch(provider, final.outputs[0].url) == state.video
