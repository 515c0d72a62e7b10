"""Google Veo through the Gemini API (generativelanguage.googleapis.com, v1beta).

``POST models/{model}:predictLongRunning`` starts a long-running operation; polling
``GET v1beta/{operation name}`` says only "not done yet" until ``done`` is true with a
``response`` (videos as Gemini file URIs) or an ``error``. There is no progress, no
cancel, and no idempotency key. Downloads need the API key, which must not follow a
redirect off Google's host. Files are deleted two days after generation.

Webhooks: Gemini signs project-level ("static") webhooks with Standard Webhooks
HMAC-SHA256. Per-request ("dynamic") webhooks are signed with RS256 JWTs instead, which
this adapter does not verify, so it never asks for them: register a static webhook for
``video.generated`` pointing at vidpipe and give its ``whsec_`` secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from vidpipe.errors import (
    ConfigError,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from vidpipe.providers.base import (
    ByteSink,
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

__all__ = ["DEFAULT_BASE_URL", "VeoProvider"]

log = logging.getLogger("vidpipe.providers.veo")

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
API_VERSION = "v1beta"
# Google's examples poll every 10 s.
_POLL_INTERVAL_S = 10.0
_WEBHOOK_TOLERANCE_S = 300.0
_MAX_REDIRECTS = 5

# Output size → (aspectRatio, resolution); 1080p only at 8 s.
_SIZES = {
    "1280x720": ("16:9", "720p"),
    "720x1280": ("9:16", "720p"),
    "1920x1080": ("16:9", "1080p"),
    "1080x1920": ("9:16", "1080p"),
}
_DURATIONS = (4, 6, 8)


def _info(model_id: str, description: str) -> ModelInfo:
    return ModelInfo(
        id=model_id,
        sizes=tuple(_SIZES),
        min_seconds=min(_DURATIONS),
        max_seconds=max(_DURATIONS),
        kinds=("text-to-video", "image-to-video"),
        fps=24,
        description=description,
    )


_MODELS = (
    _info("veo-3.1-generate-preview", "Veo 3.1 with audio; 4, 6 or 8 s; 1080p needs 8 s."),
    _info("veo-3.1-fast-generate-preview", "Veo 3.1 Fast; 4, 6 or 8 s; 1080p needs 8 s."),
)

# An operation name as the API issues it; it becomes part of a URL path.
_OPERATION = re.compile(r"models/[A-Za-z0-9.\-]+/operations/[A-Za-z0-9_\-]+")
_DATA_URL = re.compile(r"data:(?P<mime>image/[\w.+-]+);base64,(?P<data>.*)", re.S)
_RETRY_DELAY = re.compile(r"(?P<seconds>\d+(?:\.\d+)?)s")


class VeoProvider(Provider):
    """Provider "veo": see the module docstring."""

    name = "veo"
    accepts_idempotency_key = False
    # Google: "Min: 11 seconds; Max: 6 minutes (during peak hours)".
    typical_latency_s = 60.0

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        webhook_secret: str | None = None,
    ) -> None:
        """``webhook_secret``: the ``whsec_…`` signing secret of a static Gemini webhook
        subscribed to ``video.generated``; without it webhooks are refused."""
        super().__init__(http)
        self._client = http
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self._webhook_key = None if webhook_secret is None else _webhook_key(webhook_secret)
        self.supports_webhooks = self._webhook_key is not None

    def models(self) -> tuple[ModelInfo, ...]:
        return _MODELS

    async def submit(self, request: VideoRequest, idempotency_key: str) -> str:
        # Validated first: the model id becomes part of the URL path.
        body = _create_body(request)
        # request.callback_url is not passed on: see the module docstring.
        response = await self._call(
            "POST", f"/{API_VERSION}/models/{request.model}:predictLongRunning", json=body
        )
        if response.is_error:
            raise self._error(response)
        name = _json(response, PermanentProviderError).get("name")
        if not isinstance(name, str) or not _OPERATION.fullmatch(name):
            # The operation may run (and bill) without our knowing its name: retrying
            # could start a second one.
            raise PermanentProviderError(
                f"veo: create answered without an operation name: {response.text[:200]}",
                code="unexpected_response",
            )
        log.info("veo operation %s started", name)
        return name

    async def poll(self, provider_job_id: str) -> PollResult:
        if not _OPERATION.fullmatch(provider_job_id):
            raise PermanentProviderError(
                f"veo: {provider_job_id!r} is not an operation name",
                code="not_found",
                provider_job_id=provider_job_id,
            )
        response = await self._call("GET", f"/{API_VERSION}/{provider_job_id}")
        if response.status_code == 404:
            raise PermanentProviderError(
                f"veo: no operation {provider_job_id}",
                code="not_found",
                provider_job_id=provider_job_id,
            )
        if response.is_error:
            raise self._error(response)
        return _poll_result(_json(response, TransientProviderError))

    async def cancel(self, provider_job_id: str) -> None:
        # The Gemini API has no cancel for video operations: the job runs on (and is
        # billed); vidpipe just stops looking at it.
        log.info("veo has no cancel; operation %s is left to finish", provider_job_id)

    async def fetch_output(self, output: OutputRef, sink: ByteSink) -> None:
        """Download with the API key, which is only ever sent to the API's own origin:
        redirects to storage hosts are followed without it."""
        url = output.url
        for _ in range(_MAX_REDIRECTS + 1):
            headers = {"x-goog-api-key": self._api_key} if _same_origin(url, self.base_url) else {}
            try:
                async with self._client.stream(
                    "GET", url, headers=headers, follow_redirects=False
                ) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code >= 500 or response.status_code == 429:
                        raise TransientProviderError(
                            f"veo: output download answered HTTP {response.status_code}"
                        )
                    if response.status_code >= 400:
                        # Files are deleted 2 days after generation: 404 (or 403).
                        raise PermanentProviderError(
                            f"veo: output download answered HTTP {response.status_code}",
                            code="output_unavailable",
                        )
                    async for chunk in response.aiter_bytes():
                        await sink(chunk)
                    return
            except httpx.TransportError as exc:
                raise TransientProviderError(f"veo: output download failed: {exc}") from exc
        raise PermanentProviderError(
            f"veo: more than {_MAX_REDIRECTS} redirects downloading {output.url}",
            code="output_unavailable",
        )

    def parse_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> WebhookEvent:
        if self._webhook_key is None:
            raise WebhookRejected("veo: no webhook secret configured", code="webhooks_unsupported")
        event_id = _verify_standard_webhook(self._webhook_key, headers, body, now)
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise WebhookRejected("veo webhook body is not JSON", code="webhook_malformed") from exc
        data = payload.get("data") if isinstance(payload, dict) else None
        name = (data.get("name") or data.get("id")) if isinstance(data, dict) else None
        if not isinstance(name, str) or not name:
            raise WebhookRejected("veo webhook names no operation", code="webhook_malformed")
        # The payload is thin (a pointer and a status): the worker polls for the truth.
        return WebhookEvent(event_id=event_id, provider_job_id=name)

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"x-goog-api-key": self._api_key}
        return await request(
            self._client, self.name, method, self.base_url + path, headers=headers, **kwargs
        )

    def _error(self, response: httpx.Response) -> ProviderError:
        """Google's ``{"error": {code, message, status, details}}`` as our error."""
        try:
            error = response.json().get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        if not isinstance(error, dict):
            error = {}
        details = [d for d in error.get("details") or [] if isinstance(d, dict)]
        message = f"{error.get('status') or response.status_code}: {error.get('message') or ''}"
        # A wrong key is a 400 INVALID_ARGUMENT whose ErrorInfo reason says so.
        if any(d.get("reason") == "API_KEY_INVALID" for d in details):
            return error_for(self.name, response, code="provider_auth", message=message)
        translated = error_for(self.name, response, message=message)
        if translated.retry_after_s is None:
            # Google puts the wait in a google.rpc.RetryInfo detail, not a header.
            delays = (d.get("retryDelay") for d in details if "RetryInfo" in str(d.get("@type")))
            for delay in delays:
                matched = _RETRY_DELAY.fullmatch(str(delay))
                if matched:
                    translated.retry_after_s = float(matched["seconds"])
                    break
        return translated


def _create_body(req: VideoRequest) -> dict[str, Any]:
    if req.model not in {m.id for m in _MODELS}:
        raise _invalid(f"unknown veo model {req.model!r}")
    size = f"{req.width}x{req.height}"
    if size not in _SIZES:
        raise _invalid(f"veo sizes are {', '.join(_SIZES)}")
    if req.seconds not in _DURATIONS:
        raise _invalid("veo durations are 4, 6 and 8 s")
    aspect_ratio, resolution = _SIZES[size]
    if resolution == "1080p" and req.seconds != 8:
        raise _invalid("veo makes 1080p only at 8 s")
    instance: dict[str, Any] = {"prompt": req.prompt}
    if req.input_image_url:
        instance["image"] = _inline_image(req.input_image_url)
    # No seed: the Gemini API (unlike Vertex) refuses it for video.
    return {
        "instances": [instance],
        "parameters": {
            "sampleCount": 1,
            "durationSeconds": req.seconds,
            "aspectRatio": aspect_ratio,
            "resolution": resolution,
        },
    }


def _inline_image(url: str) -> dict[str, str]:
    """The Gemini API takes the first frame inline (no URLs), so only data: URLs work:
    fetching an arbitrary URL from this server would let callers probe our network."""
    matched = _DATA_URL.fullmatch(url)
    if matched is None:
        raise _invalid("veo needs the input image as a base64 data: URL (image/*)")
    try:
        base64.b64decode(matched["data"], validate=True)
    except binascii.Error as exc:
        raise _invalid("the input image data: URL is not valid base64") from exc
    return {"bytesBase64Encoded": matched["data"], "mimeType": matched["mime"]}


def _poll_result(operation: dict[str, Any]) -> PollResult:
    if not operation.get("done"):
        # Queued and running look the same here, and there is no progress.
        return PollResult(ProviderStatus.RUNNING, next_poll_s=_POLL_INTERVAL_S)
    error = operation.get("error")
    if isinstance(error, dict):
        code = error.get("status") or error.get("code") or "generation_failed"
        return PollResult(
            ProviderStatus.FAILED,
            error_code=str(code),
            error_message=str(error.get("message") or "veo operation failed"),
        )
    response = operation.get("response") or {}
    video_response = response.get("generateVideoResponse") if isinstance(response, dict) else None
    if not isinstance(video_response, dict):
        video_response = {}
    samples = video_response.get("generatedSamples") or []
    uris = [
        s["video"]["uri"]
        for s in samples
        if isinstance(s, dict) and isinstance(s.get("video"), dict) and s["video"].get("uri")
    ]
    if uris:
        return PollResult(
            ProviderStatus.SUCCEEDED, progress=100, outputs=tuple(OutputRef(u) for u in uris)
        )
    if video_response.get("raiMediaFilteredCount"):
        reasons = video_response.get("raiMediaFilteredReasons") or ["filtered by safety filters"]
        return PollResult(
            ProviderStatus.FAILED,
            error_code="content_policy",
            error_message="; ".join(map(str, reasons)),
        )
    return PollResult(
        ProviderStatus.FAILED,
        error_code="no_output",
        error_message="veo finished without a video URI",
    )


def _webhook_key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error as exc:
        raise ConfigError("the veo webhook secret must be 'whsec_' followed by base64") from exc


def _verify_standard_webhook(
    key: bytes, headers: Mapping[str, str], body: bytes, now: float
) -> str:
    """Check a Standard Webhooks delivery (HMAC-SHA256 over ``id.timestamp.body``, within
    the tolerance of ``now``) and return its ``webhook-id``."""
    msg_id = headers.get("webhook-id")
    timestamp_text = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not timestamp_text or not signatures:
        raise WebhookRejected("missing webhook-id/-timestamp/-signature", code="webhook_malformed")
    try:
        timestamp = int(timestamp_text)
    except ValueError as exc:
        raise WebhookRejected(
            "webhook-timestamp is not an integer", code="webhook_malformed"
        ) from exc
    # Checked before the signature is: an old, validly signed delivery is a replay.
    if abs(now - timestamp) > _WEBHOOK_TOLERANCE_S:
        raise WebhookRejected(
            f"webhook timestamp is {now - timestamp:.0f} s from now", code="webhook_stale"
        )
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # Several "v1,<sig>" entries, space-separated, while a secret is being rotated.
    for entry in signatures.split():
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return msg_id
    raise WebhookRejected("webhook signature does not match", code="webhook_signature")


def _same_origin(url: str, base_url: str) -> bool:
    a, b = urlsplit(url), urlsplit(base_url)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def _json(response: httpx.Response, error: type[ProviderError]) -> dict[str, Any]:
    """The body as a JSON object. ``error``: Permanent after a create (the operation may
    exist, so retrying could start a second), Transient after a read."""
    try:
        data = response.json()
    except ValueError as exc:
        raise error(
            f"veo: HTTP {response.status_code} with a body that is not JSON",
            code="unexpected_response",
        ) from exc
    if not isinstance(data, dict):
        raise error("veo: expected a JSON object", code="unexpected_response")
    return data


def _invalid(message: str) -> PermanentProviderError:
    return PermanentProviderError(message, code="invalid_request")
