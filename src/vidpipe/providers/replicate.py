"""Replicate predictions: official video models through ``/v1/models/{owner}/{name}/predictions``.

A prediction goes ``starting`` (queued, cold boot included) → ``processing`` →
``succeeded`` / ``failed`` / ``canceled``, or ``aborted`` when its deadline passed before
it started. Output files are deleted an hour after completion, so they are downloaded
at once. Webhooks are signed per Standard Webhooks (HMAC-SHA256 with a ``whsec_``
secret); the helpers for that scheme live here and are public, as other signers
(the simulated provider) use the same scheme.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from vidpipe.errors import PermanentProviderError, ProviderError, TransientProviderError
from vidpipe.providers.base import (
    ModelInfo,
    OutputRef,
    PollResult,
    Provider,
    ProviderStatus,
    VideoRequest,
    WebhookEvent,
    WebhookRejected,
)
from vidpipe.providers.http import error_for, request

__all__ = [
    "DEFAULT_BASE_URL",
    "MODELS",
    "ReplicateProvider",
    "prediction_result",
    "sign_standard_webhook",
    "standard_webhook_key",
    "verify_standard_webhook",
]

DEFAULT_BASE_URL = "https://api.replicate.com"
# Standard Webhooks' recommended window either side of the sender's timestamp.
WEBHOOK_TOLERANCE_S = 300.0

_HAILUO_SIZES = {"1366x768": "768p", "1920x1080": "1080p"}
_SEEDANCE_SIZES = {"1280x720": "720p", "720x1280": "720p", "864x480": "480p", "480x864": "480p"}
_SEEDANCE_ASPECTS = {"1280x720": "16:9", "720x1280": "9:16", "864x480": "16:9", "480x864": "9:16"}
_WAN_SIZES = {"832x480": "480p", "1280x720": "720p", "1920x1080": "1080p"}
_BOTH_KINDS = ("text-to-video", "image-to-video")


@dataclass(frozen=True)
class _ModelSpec:
    """How one model's inputs are written: the wire names and the allowed values."""

    info: ModelInfo
    resolution_of: Mapping[str, str]
    image_field: str
    # Allowed durations, when the model takes only some values in its range.
    durations: tuple[int, ...] | None = None
    aspect_of: Mapping[str, str] | None = None
    takes_seed: bool = False
    # 1080p renders only at 6 s (Hailuo).
    longest_1080p_s: int | None = None


def _hailuo(model_id: str, description: str) -> _ModelSpec:
    return _ModelSpec(
        info=ModelInfo(
            id=model_id,
            sizes=tuple(_HAILUO_SIZES),
            min_seconds=6,
            max_seconds=10,
            kinds=_BOTH_KINDS,
            fps=25,
            description=description,
        ),
        resolution_of=_HAILUO_SIZES,
        image_field="first_frame_image",
        durations=(6, 10),
        longest_1080p_s=6,
    )


def _seedance(model_id: str, description: str) -> _ModelSpec:
    return _ModelSpec(
        info=ModelInfo(
            id=model_id,
            sizes=tuple(_SEEDANCE_SIZES),
            min_seconds=4,
            max_seconds=15,
            kinds=_BOTH_KINDS,
            fps=24,
            description=description,
        ),
        resolution_of=_SEEDANCE_SIZES,
        aspect_of=_SEEDANCE_ASPECTS,
        image_field="image",
        takes_seed=True,
    )


_SPECS: dict[str, _ModelSpec] = {
    spec.info.id: spec
    for spec in (
        _hailuo("minimax/hailuo-02", "MiniMax Hailuo-02: 6 or 10 s; 1080p only at 6 s."),
        _hailuo("minimax/hailuo-2.3", "MiniMax Hailuo 2.3: 6 or 10 s; 1080p only at 6 s."),
        _seedance("bytedance/seedance-2.0", "ByteDance Seedance 2.0, with audio."),
        _seedance("bytedance/seedance-2.0-fast", "ByteDance Seedance 2.0 Fast, with audio."),
        _ModelSpec(
            info=ModelInfo(
                id="wan-video/wan-2.5-i2v",
                sizes=tuple(_WAN_SIZES),
                min_seconds=5,
                max_seconds=10,
                kinds=("image-to-video",),
                fps=24,
                description="Wan 2.5 image-to-video; the output follows the image's shape.",
            ),
            resolution_of=_WAN_SIZES,
            image_field="image",
            durations=(5, 10),
            takes_seed=True,
        ),
    )
}
MODELS: tuple[ModelInfo, ...] = tuple(spec.info for spec in _SPECS.values())

_STATUSES = {
    "starting": ProviderStatus.QUEUED,
    "processing": ProviderStatus.RUNNING,
    "succeeded": ProviderStatus.SUCCEEDED,
    "failed": ProviderStatus.FAILED,
    "canceled": ProviderStatus.CANCELED,
    "aborted": ProviderStatus.CANCELED,
}
# Replicate's moderation failures read "…flagged as sensitive… (E005)"; models that
# run their own filter say NSFW or safety. There is no structured field for it.
_CONTENT_POLICY = re.compile(
    r"\bE005\b|flagged as sensitive|\bnsfw\b|content polic|safety (?:filter|check|system)", re.I
)
# tqdm progress bars in the logs: " 45%|████▌     | 9/20".
_TQDM_PERCENT = re.compile(r"(\d{1,3})%\|")


class ReplicateProvider(Provider):
    """Provider "replicate": official video models, polled or told by signed webhooks."""

    name = "replicate"
    # Replicate has no idempotency key: a create whose answer was lost may have
    # started a prediction that nothing will ever poll.
    accepts_idempotency_key = False
    typical_latency_s = 120.0
    supports_webhooks = True

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        webhook_secret: str | None = None,
        cancel_after_s: int | None = None,
    ) -> None:
        """``webhook_secret`` is the ``whsec_…`` from ``GET /v1/webhooks/default/secret``;
        without it no webhook is asked for. ``cancel_after_s`` sets Replicate's
        server-side deadline (``Cancel-After``) on every prediction."""
        super().__init__(http)
        self._client = http
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self._webhook_key = None if webhook_secret is None else standard_webhook_key(webhook_secret)
        self.supports_webhooks = self._webhook_key is not None
        self.cancel_after_s = cancel_after_s

    def models(self) -> tuple[ModelInfo, ...]:
        return MODELS

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    async def submit(self, request: VideoRequest, idempotency_key: str) -> str:
        body: dict[str, Any] = {"input": build_input(request)}
        if request.callback_url is not None and self.supports_webhooks:
            body["webhook"] = request.callback_url
            body["webhook_events_filter"] = ["start", "completed"]
        headers = self._headers()
        if self.cancel_after_s is not None:
            headers["Cancel-After"] = f"{self.cancel_after_s}s"
        url = f"{self.base_url}/v1/models/{request.model}/predictions"
        response = await _send(self._client, "POST", url, json=body, headers=headers)
        if response.is_error:
            raise _error(response)
        prediction_id = _json_object(response).get("id")
        if not isinstance(prediction_id, str) or not prediction_id:
            raise TransientProviderError(
                "replicate: create answered without an id", code="bad_response"
            )
        return prediction_id

    async def poll(self, provider_job_id: str) -> PollResult:
        url = f"{self.base_url}/v1/predictions/{provider_job_id}"
        response = await _send(self._client, "GET", url, headers=self._headers())
        if response.status_code == 404:
            raise PermanentProviderError(
                f"replicate: no prediction {provider_job_id!r}",
                code="not_found",
                provider_job_id=provider_job_id,
            )
        if response.is_error:
            raise _error(response)
        return prediction_result(_json_object(response))

    async def cancel(self, provider_job_id: str) -> None:
        url = f"{self.base_url}/v1/predictions/{provider_job_id}/cancel"
        response = await _send(self._client, "POST", url, headers=self._headers())
        # Canceling a finished prediction answers 200 with it unchanged; an unknown one
        # has nothing left to stop.
        if response.is_error and response.status_code != 404:
            raise _error(response)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> WebhookEvent:
        if self._webhook_key is None:
            raise WebhookRejected(
                "replicate: no webhook secret configured", code="webhooks_unconfigured"
            )
        event_id = verify_standard_webhook(self._webhook_key, headers, body, now)
        prediction = _webhook_json(body)
        prediction_id = prediction.get("id")
        if not isinstance(prediction_id, str) or not prediction_id:
            raise WebhookRejected(
                "replicate webhook without a prediction id", code="webhook_malformed"
            )
        return WebhookEvent(
            event_id=event_id, provider_job_id=prediction_id, result=prediction_result(prediction)
        )


def build_input(request: VideoRequest) -> dict[str, Any]:
    """The model-specific ``input`` object for ``request``; refuses what the model cannot do."""
    spec = _SPECS.get(request.model)
    if spec is None:
        raise PermanentProviderError(
            f"replicate: unknown model {request.model!r}", code="invalid_request"
        )
    size = f"{request.width}x{request.height}"
    problems = []
    if size not in spec.resolution_of:
        problems.append(f"size {size} not in {', '.join(spec.resolution_of)}")
    if not spec.info.min_seconds <= request.seconds <= spec.info.max_seconds or (
        spec.durations is not None and request.seconds not in spec.durations
    ):
        allowed = spec.durations or (spec.info.min_seconds, spec.info.max_seconds)
        problems.append(f"seconds {request.seconds} not allowed ({allowed})")
    elif (
        spec.longest_1080p_s is not None
        and spec.resolution_of.get(size) == "1080p"
        and request.seconds > spec.longest_1080p_s
    ):
        problems.append(f"1080p is only made {spec.longest_1080p_s} s long")
    if request.input_image_url is None and "text-to-video" not in spec.info.kinds:
        problems.append("this model needs an input image")
    if problems:
        raise PermanentProviderError(
            f"replicate {request.model}: " + "; ".join(problems), code="invalid_request"
        )
    fields: dict[str, Any] = {
        "prompt": request.prompt,
        "duration": request.seconds,
        "resolution": spec.resolution_of[size],
    }
    if spec.aspect_of is not None:
        fields["aspect_ratio"] = spec.aspect_of[size]
    if request.input_image_url is not None:
        fields[spec.image_field] = request.input_image_url
    if spec.takes_seed and request.seed is not None:
        fields["seed"] = request.seed
    return fields


def prediction_result(prediction: Mapping[str, Any]) -> PollResult:
    """A prediction object (from GET or a webhook) as a PollResult."""
    raw_status = prediction.get("status")
    status = _STATUSES.get(raw_status) if isinstance(raw_status, str) else None
    if status is None:
        raise TransientProviderError(
            f"replicate: unknown prediction status {raw_status!r}", code="bad_response"
        )
    if status is ProviderStatus.SUCCEEDED:
        return PollResult(status, progress=100, outputs=_outputs(prediction.get("output")))
    if status is ProviderStatus.FAILED:
        message = str(prediction.get("error") or "the prediction failed")
        code = "content_policy" if _CONTENT_POLICY.search(message) else "generation_failed"
        return PollResult(status, error_code=code, error_message=message)
    if raw_status == "aborted":
        return PollResult(
            status,
            error_code="deadline",
            error_message="the prediction's deadline passed before it started (not billed)",
        )
    if status is ProviderStatus.RUNNING:
        return PollResult(status, progress=_progress(prediction.get("logs")))
    if status is ProviderStatus.QUEUED:
        return PollResult(status, progress=0)
    return PollResult(status)


def _outputs(output: Any) -> tuple[OutputRef, ...]:
    # The video models' output schema is one URI; some models return a list.
    urls = output if isinstance(output, list) else [output]
    return tuple(OutputRef(url) for url in urls if isinstance(url, str) and url)


def _progress(logs: Any) -> int | None:
    if not isinstance(logs, str):
        return None
    found = _TQDM_PERCENT.findall(logs)
    # 100 is kept for a finished prediction with its output in place.
    return min(int(found[-1]), 99) if found else None


# --- Standard Webhooks (https://www.standardwebhooks.com) --------------------------


def standard_webhook_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional)."""
    encoded = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from exc


def sign_standard_webhook(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for a delivery: ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify_standard_webhook(
    key: bytes,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    *,
    tolerance_s: float = WEBHOOK_TOLERANCE_S,
) -> str:
    """Check a delivery's signature and freshness; return its ``webhook-id``.

    ``headers`` has lower-case names. Raises WebhookRejected.
    """
    webhook_id = headers.get("webhook-id")
    timestamp_text = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not webhook_id or not timestamp_text or not signatures:
        raise WebhookRejected("missing webhook-id/-timestamp/-signature", code="webhook_malformed")
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise WebhookRejected(
            "webhook-timestamp is not an integer", code="webhook_malformed"
        ) from None
    if abs(now - timestamp) > tolerance_s:
        raise WebhookRejected(
            f"webhook timestamp {timestamp} is more than {tolerance_s:.0f} s from now",
            code="webhook_stale",
        )
    expected = sign_standard_webhook(key, webhook_id, timestamp, body)
    # Several space-separated signatures may be sent while a secret is rotated.
    if not any(hmac.compare_digest(expected, given) for given in signatures.split()):
        raise WebhookRejected("webhook signature does not match", code="webhook_signature")
    return webhook_id


# --- helpers --------------------------------------------------------------------------


async def _send(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    return await request(http, "replicate", method, url, **kwargs)


def _error(response: httpx.Response) -> ProviderError:
    """A non-2xx answer as our error; problem+json's ``detail`` is the reason."""
    code = None
    if response.status_code in (400, 422) and _CONTENT_POLICY.search(response.text):
        code = "content_policy"
    return error_for("replicate", response, code=code)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as exc:
        raise TransientProviderError(
            f"replicate: HTTP {response.status_code} answer is not JSON", code="bad_response"
        ) from exc
    if not isinstance(data, dict):
        raise TransientProviderError("replicate: answer is not a JSON object", code="bad_response")
    return data


def _webhook_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise WebhookRejected("webhook body is not JSON", code="webhook_malformed") from exc
    if not isinstance(data, dict):
        raise WebhookRejected("webhook body is not a JSON object", code="webhook_malformed")
    return data
