"""The contract every provider adapter fulfils.

An adapter maps one provider's API onto submit / poll / cancel / fetch_output with the
common statuses. Nothing provider-specific leaks past it; adapters know nothing of
jobs, steps or the database.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import httpx

from vidpipe.errors import PermanentProviderError, TransientProviderError, VidpipeError


class ProviderStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (ProviderStatus.SUCCEEDED, ProviderStatus.FAILED, ProviderStatus.CANCELED)


@dataclass(frozen=True)
class VideoRequest:
    """What a provider is asked to make: already validated against its capabilities."""

    model: str
    prompt: str
    seconds: int
    width: int
    height: int
    fps: int = 30
    seed: int | None = None
    # Image-to-video: the first frame (an https URL or a data: URL).
    input_image_url: str | None = None
    # Where the provider should send its webhook, for adapters that support them.
    callback_url: str | None = None


@dataclass(frozen=True)
class OutputRef:
    """Where a finished output can be fetched from (provider URLs expire)."""

    url: str
    content_type: str = "video/mp4"


@dataclass(frozen=True)
class PollResult:
    status: ProviderStatus
    progress: int | None = None
    outputs: tuple[OutputRef, ...] = ()
    error_code: str | None = None
    error_message: str | None = None
    # The provider's own hint of when to look again, if it gave one.
    next_poll_s: float | None = None
    # What the provider says this job cost, where it reports it (USD).
    cost_usd: float | None = None


@dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook from a provider, reduced to what vidpipe acts on."""

    # Unique per delivery (the provider's id, else a hash of the body), to drop repeats.
    event_id: str
    provider_job_id: str
    # The job's state as the webhook tells it, when the payload carries it; the worker
    # still confirms by polling before acting on a terminal status.
    result: PollResult | None = None


class WebhookRejected(VidpipeError):
    """A webhook failed verification (signature, timestamp, shape)."""

    code = "webhook_rejected"
    http_status = 401


@dataclass(frozen=True)
class ModelInfo:
    """A model's capabilities, as the API validates requests against them."""

    id: str
    sizes: tuple[str, ...]
    min_seconds: int
    max_seconds: int
    kinds: tuple[str, ...] = ("text-to-video",)
    fps: int = 30
    description: str = ""


ByteSink = Callable[[bytes], Awaitable[None]]


class Provider(abc.ABC):
    """Base class of adapters. Subclasses set ``name`` and implement the methods.

    Adapters that talk HTTP take the shared ``httpx.AsyncClient`` so tests can point
    them at a fake server (in-process transport or loopback).
    """

    name: str = "base"
    # True when submit() with the same idempotency key never creates a second
    # provider job: a worker resuming an attempt whose job id was not recorded may
    # then submit again safely.
    accepts_idempotency_key: bool = False
    # Seconds a typical job takes; the first poll is scheduled near it.
    typical_latency_s: float = 5.0
    # True when the adapter can pass a callback URL and verify what arrives there.
    supports_webhooks: bool = False
    # True when the provider charges for jobs that it reports failed or that were
    # cancelled after submission (most document that they do not).
    bills_failures: bool = False
    # Validation thresholds this provider's outputs need changed (e.g. synthetic
    # renders compress far below the size floor meant for generated footage).
    validation_overrides: dict[str, object] = {}

    def __init__(self, http: httpx.AsyncClient | None = None) -> None:
        self.http = http

    @abc.abstractmethod
    def models(self) -> tuple[ModelInfo, ...]:
        """The models this adapter serves, with their capabilities."""

    def model(self, model_id: str) -> ModelInfo | None:
        return next((m for m in self.models() if m.id == model_id), None)

    @abc.abstractmethod
    async def submit(self, request: VideoRequest, idempotency_key: str) -> str:
        """Start a job at the provider and return the provider's job id."""

    @abc.abstractmethod
    async def poll(self, provider_job_id: str) -> PollResult:
        """Report the job's normalized status, progress and outputs or error."""

    @abc.abstractmethod
    async def cancel(self, provider_job_id: str) -> None:
        """Ask the provider to stop the job; best effort, idempotent."""

    def parse_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> WebhookEvent:
        """Verify a webhook this provider sent (signature, freshness) and read it.

        ``headers`` has lower-case names. Raises WebhookRejected when it does not verify.
        """
        raise WebhookRejected(f"{self.name} sends no webhooks", code="webhooks_unsupported")

    async def fetch_output(self, output: OutputRef, sink: ByteSink) -> None:
        """Stream an output's bytes into ``sink``. Default: HTTP GET on its URL."""
        if self.http is None:
            raise TransientProviderError(f"{self.name}: no HTTP client to fetch outputs with")
        try:
            async with self.http.stream("GET", output.url) as response:
                if response.status_code >= 500 or response.status_code == 429:
                    raise TransientProviderError(
                        f"output download answered HTTP {response.status_code}"
                    )
                if response.status_code >= 400:
                    # 403/404/410 from a storage URL means it expired or never existed.
                    raise PermanentProviderError(
                        f"output download answered HTTP {response.status_code}",
                        code="output_unavailable",
                    )
                async for chunk in response.aiter_bytes():
                    await sink(chunk)
        except httpx.TransportError as exc:
            raise TransientProviderError(f"output download failed: {exc}") from exc
