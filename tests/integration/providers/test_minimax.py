"""MiniMaxProvider against the fake MiniMax API, in process and on loopback."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from vidpipe.errors import PermanentProviderError, TransientProviderError
from vidpipe.providers.base import OutputRef, ProviderStatus, VideoRequest, WebhookRejected
from vidpipe.providers.minimax import MiniMaxProvider
from vidpipe.testing.fakes._common_rfm import Outcome, poll_to_end, sample_mp4, serve_on_loopback
from vidpipe.testing.fakes.minimax import FakeMiniMaxState, create_fake_minimax

BASE_URL = "http://minimax.test"
TEXT = VideoRequest(
    model="MiniMax-Hailuo-02", prompt="a red kite", seconds=10, width=1366, height=768
)
IMAGE = VideoRequest(
    model="I2V-01",
    prompt="the boat drifts",
    seconds=6,
    width=1280,
    height=720,
    input_image_url="https://example.com/boat.png",
)


@pytest.fixture
def state() -> FakeMiniMaxState:
    return FakeMiniMaxState(video=sample_mp4())


@pytest.fixture
async def http(state: FakeMiniMaxState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_fake_minimax(state))
    async with httpx.AsyncClient(transport=transport) as client:
        yield client


@pytest.fixture
def provider(http: httpx.AsyncClient, state: FakeMiniMaxState) -> MiniMaxProvider:
    return MiniMaxProvider(http, api_key=state.api_key, base_url=BASE_URL)


async def fetch(provider: MiniMaxProvider, url: str) -> bytes:
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    await provider.fetch_output(OutputRef(url), sink)
    return b"".join(chunks)


async def test_task_runs_to_a_downloadable_file(
    provider: MiniMaxProvider, state: FakeMiniMaxState
) -> None:
    state.queued_polls, state.running_polls = 2, 2
    job_id = await provider.submit(TEXT, "key-1")
    final, seen = await poll_to_end(provider, job_id)

    assert [r.status for r in seen] == [
        ProviderStatus.QUEUED,  # Preparing
        ProviderStatus.QUEUED,  # Queueing
        ProviderStatus.RUNNING,
        ProviderStatus.RUNNING,
        ProviderStatus.SUCCEEDED,
    ]
    assert await fetch(provider, final.outputs[0].url) == state.video
    assert state.jobs[job_id].input == {
        "model": "MiniMax-Hailuo-02",
        "prompt": "a red kite",
        "duration": 10,
        "resolution": "768P",
    }
    assert state.creates == 1


async def test_image_to_video_sends_the_first_frame_and_no_callback(
    provider: MiniMaxProvider, state: FakeMiniMaxState
) -> None:
    request = dataclasses.replace(IMAGE, callback_url="https://me.test/hook")
    job_id = await provider.submit(request, "key-1")
    job = state.jobs[job_id]
    assert job.input["first_frame_image"] == "https://example.com/boat.png"
    # MiniMax callbacks are unsigned: the adapter never asks for one.
    assert job.webhook_url is None
    assert "callback_url" not in job.input


async def test_throttling_by_base_resp_is_transient(
    provider: MiniMaxProvider, state: FakeMiniMaxState
) -> None:
    state.rate_limited_creates = 1
    with pytest.raises(TransientProviderError) as info:
        await provider.submit(TEXT, "key-1")
    assert info.value.code == "rate_limited"
    assert "1002" in info.value.message
    assert state.creates == 0


async def test_edge_429_is_transient_with_retry_after(
    provider: MiniMaxProvider, state: FakeMiniMaxState
) -> None:
    state.edge_throttles, state.retry_after_s = 1, 4
    with pytest.raises(TransientProviderError) as info:
        await provider.submit(TEXT, "key-1")
    assert (info.value.code, info.value.retry_after_s) == ("rate_limited", 4.0)
    assert state.create_attempts == 0


async def test_server_errors_are_transient(
    provider: MiniMaxProvider, state: FakeMiniMaxState
) -> None:
    state.server_errors = 1
    with pytest.raises(TransientProviderError) as info:
        await provider.submit(TEXT, "key-1")
    assert info.value.code == "http_502"
    job_id = await provider.submit(TEXT, "key-1")
    state.server_errors = 1
    with pytest.raises(TransientProviderError):
        await provider.poll(job_id)


async def test_invalid_parameters_are_permanent_with_minimaxs_reason(
    provider: MiniMaxProvider, state: FakeMiniMaxState
) -> None:
    with pytest.raises(PermanentProviderError) as info:
        await provider.submit(dataclasses.replace(TEXT, prompt="x" * 2001), "key-1")
    assert info.value.code == "provider_rejected"
    assert "2013" in info.value.message
    assert "longer than 2000" in info.value.message
    assert state.creates == 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"width": 1920, "height": 1080}, "1080P is only made 6 s long"),
        ({"seconds": 8}, "seconds 8"),
        ({"model": "T2V-01", "input_image_url": "https://example.com/x.png"}, "takes no input"),
    ],
)
async def test_requests_the_model_cannot_do_are_refused_before_sending(
    provider: MiniMaxProvider, state: FakeMiniMaxState, change: dict[str, object], reason: str
) -> None:
    with pytest.raises(PermanentProviderError, match=reason) as info:
        await provider.submit(dataclasses.replace(TEXT, **change), "key-1")  # type: ignore[arg-type]
    assert info.value.code == "invalid_request"
    assert state.create_attempts == 0


async def test_bad_key_is_permanent_auth_error(http: httpx.AsyncClient) -> None:
    provider = MiniMaxProvider(http, api_key="wrong", base_url=BASE_URL)
    with pytest.raises(PermanentProviderError) as info:
        await provider.submit(TEXT, "key-1")
    assert info.value.code == "provider_auth"
    assert "login fail" in info.value.message


async def test_sensitive_prompt_is_refused_as_content_policy(
    provider: MiniMaxProvider, state: FakeMiniMaxState
) -> None:
    with pytest.raises(PermanentProviderError) as info:
        await provider.submit(dataclasses.replace(TEXT, prompt="a forbidden thing"), "key-1")
    assert info.value.code == "content_policy"
    assert state.creates == 0


@pytest.mark.parametrize(
    ("outcome", "code", "text"),
    [
        (Outcome.FAIL, "generation_failed", "Fail"),
        (Outcome.CONTENT_POLICY, "content_policy", "1027"),
    ],
)
async def test_failed_tasks(
    provider: MiniMaxProvider, state: FakeMiniMaxState, outcome: Outcome, code: str, text: str
) -> None:
    state.outcomes = [outcome]
    final, _ = await poll_to_end(provider, await provider.submit(TEXT, "key-1"))
    assert final.status is ProviderStatus.FAILED
    assert final.error_code == code
    assert final.error_message is not None
    assert text in final.error_message


async def test_expired_download_link_is_unavailable(
    provider: MiniMaxProvider, state: FakeMiniMaxState
) -> None:
    final, _ = await poll_to_end(provider, await provider.submit(TEXT, "key-1"))
    state.expire_outputs()
    with pytest.raises(PermanentProviderError) as info:
        await fetch(provider, final.outputs[0].url)
    assert info.value.code == "output_unavailable"


async def test_unknown_task_is_permanent(provider: MiniMaxProvider) -> None:
    with pytest.raises(PermanentProviderError) as info:
        await provider.poll("123")
    assert (info.value.code, info.value.provider_job_id) == ("provider_rejected", "123")


async def test_cancel_does_nothing_and_the_task_runs_on(
    provider: MiniMaxProvider, state: FakeMiniMaxState
) -> None:
    job_id = await provider.submit(TEXT, "key-1")
    await provider.cancel(job_id)
    await provider.cancel(job_id)
    final, _ = await poll_to_end(provider, job_id)
    assert final.status is ProviderStatus.SUCCEEDED


def test_webhooks_are_not_supported(provider: MiniMaxProvider) -> None:
    assert provider.supports_webhooks is False
    with pytest.raises(WebhookRejected) as info:
        provider.parse_webhook({}, b"{}", time.time())
    assert info.value.code == "webhooks_unsupported"


async def test_over_loopback(state: FakeMiniMaxState) -> None:
    async with (
        serve_on_loopback(create_fake_minimax(state)) as base_url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        provider = MiniMaxProvider(http, api_key=state.api_key, base_url=base_url)
        final, _ = await poll_to_end(provider, await provider.submit(IMAGE, "key-1"))
        assert final.outputs[0].url.startswith(base_url)
        assert await fetch(provider, final.outputs[0].url) == state.video
