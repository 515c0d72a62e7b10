"""fal.ai queue: submit to ``queue.fal.run/{endpoint}``, poll its status, fetch its result.

A request is ``IN_QUEUE`` → ``IN_PROGRESS`` → ``COMPLETED``; a completed request that
failed carries ``error`` in its status, or answers its result GET with an error body
(a ``detail`` list of typed errors for model errors, ``detail`` + ``error_type`` for
infrastructure ones). Status, result and cancel live under the endpoint's app
(``{owner}/{alias}``) rather than its full path, so vidpipe's job id for a request is
``{owner}/{alias}/{request_id}``.

Webhooks are Ed25519-signed: the message is request id, user id, timestamp and the
SHA-256 of the body, one per line, verified against any key of fal's JWKS. Keys come
from the constructor, or from a JWKS URL loaded with :meth:`FalProvider.refresh_webhook_keys`
(parse_webhook is synchronous and never fetches).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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
    "FalProvider",
    "load_jwks",
    "public_key_from_jwk_x",
    "webhook_message",
]

DEFAULT_BASE_URL = "https://queue.fal.run"
WEBHOOK_TOLERANCE_S = 300.0
_CONTENT_POLICY_TYPES = frozenset({"content_policy_violation"})
_CANCELED_TYPES = frozenset({"client_cancelled", "request_cancelled"})


@dataclass(frozen=True)
class _FalModel:
    """One model: its endpoints per kind and how its inputs are written."""

    info: ModelInfo
    text_path: str | None
    image_path: str | None
    durations: tuple[int, ...]
    aspect_of: Mapping[str, str] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


_SPECS: dict[str, _FalModel] = {
    spec.info.id: spec
    for spec in (
        _FalModel(
            info=ModelInfo(
                id="fal-ai/minimax/hailuo-02/standard",
                sizes=("1366x768",),
                min_seconds=6,
                max_seconds=10,
                kinds=("text-to-video", "image-to-video"),
                fps=25,
                description="MiniMax Hailuo-02 Standard (768p), 6 or 10 s.",
            ),
            text_path="text-to-video",
            image_path="image-to-video",
            durations=(6, 10),
            extra={"prompt_optimizer": True},
        ),
        _FalModel(
            info=ModelInfo(
                id="fal-ai/kling-video/v2.1/master",
                sizes=("1920x1080", "1080x1920"),
                min_seconds=5,
                max_seconds=10,
                kinds=("text-to-video", "image-to-video"),
                fps=24,
                description="Kling 2.1 Master, 5 or 10 s.",
            ),
            text_path="text-to-video",
            image_path="image-to-video",
            durations=(5, 10),
            aspect_of={"1920x1080": "16:9", "1080x1920": "9:16"},
        ),
    )
}
MODELS: tuple[ModelInfo, ...] = tuple(spec.info for spec in _SPECS.values())


class FalProvider(Provider):
    """Provider "fal": queue API with Ed25519-signed webhooks."""

    name = "fal"
    # No idempotency header is documented for the queue.
    accepts_idempotency_key = False
    typical_latency_s = 180.0
    supports_webhooks = True

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        webhook_public_keys: Sequence[str] = (),
        jwks_url: str | None = None,
    ) -> None:
        """``api_key`` is the FAL_KEY (``KEY_ID:KEY_SECRET`` or a plain key).
        ``webhook_public_keys`` are JWKS ``x`` values (base64url Ed25519 keys);
        ``jwks_url`` names a JWKS to load with :meth:`refresh_webhook_keys`.
        Without either, no webhook is asked for."""
        super().__init__(http)
        self._client = http
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.jwks_url = jwks_url
        self._static_keys = tuple(public_key_from_jwk_x(x) for x in webhook_public_keys)
        self._jwks_keys: tuple[Ed25519PublicKey, ...] = ()
        self.jwks_loaded_at: float | None = None
        self.supports_webhooks = bool(self._static_keys) or jwks_url is not None

    def models(self) -> tuple[ModelInfo, ...]:
        return MODELS

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self._api_key}"}

    async def submit(self, request: VideoRequest, idempotency_key: str) -> str:
        spec, path, body = build_submission(request)
        params = {}
        if request.callback_url is not None and self.supports_webhooks:
            params["fal_webhook"] = request.callback_url
        url = f"{self.base_url}/{spec.info.id}/{path}"
        response = await _send(
            self._client, "POST", url, json=body, params=params, headers=self._headers()
        )
        if response.is_error:
            raise _error(response)
        request_id = _json_object(response).get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise TransientProviderError(
                "fal: submit answered without a request_id", code="bad_response"
            )
        return f"{_app_of(spec.info.id)}/{request_id}"

    async def poll(self, provider_job_id: str) -> PollResult:
        base = self._request_url(provider_job_id)
        response = await _send(self._client, "GET", f"{base}/status", headers=self._headers())
        if response.status_code == 404:
            raise PermanentProviderError(
                f"fal: no request {provider_job_id!r}",
                code="not_found",
                provider_job_id=provider_job_id,
            )
        if response.is_error:
            raise _error(response)
        status = _json_object(response)
        state = status.get("status")
        if state == "IN_QUEUE":
            return PollResult(ProviderStatus.QUEUED, progress=0)
        if state == "IN_PROGRESS":
            return PollResult(ProviderStatus.RUNNING)
        # FAILED and CANCELED are not in fal's client; some third-party schemas list them.
        if state in ("CANCELED", "CANCELLED"):
            return PollResult(ProviderStatus.CANCELED, error_code="canceled")
        if state == "FAILED":
            return _failure(status.get("error_type"), status.get("error"), status.get("detail"))
        if state != "COMPLETED":
            raise TransientProviderError(f"fal: unknown status {state!r}", code="bad_response")
        if status.get("error"):
            return _failure(status.get("error_type"), status["error"], None)
        return await self._result(base)

    async def _result(self, base: str) -> PollResult:
        response = await _send(self._client, "GET", base, headers=self._headers())
        if response.is_success:
            outputs = _outputs(_json_object(response))
            if not outputs:
                return PollResult(
                    ProviderStatus.FAILED,
                    error_code="no_output",
                    error_message="fal: the result names no video",
                )
            return PollResult(ProviderStatus.SUCCEEDED, progress=100, outputs=outputs)
        body = _json_or_none(response)
        error_type = response.headers.get("x-fal-error-type") or (
            body.get("error_type") if body else None
        )
        detail = body.get("detail") if body else None
        typed = isinstance(detail, list) or error_type is not None
        # A 429, an auth failure or an ingress 5xx without fal's error body says nothing
        # about the request itself: look again later.
        if response.status_code in (401, 403, 429) or not typed:
            raise _error(response)
        return _failure(error_type, None, detail)

    async def cancel(self, provider_job_id: str) -> None:
        url = f"{self._request_url(provider_job_id)}/cancel"
        response = await _send(self._client, "PUT", url, headers=self._headers())
        if response.is_success or response.status_code == 404:
            return
        body = _json_or_none(response)
        # fal only cancels requests that have not started; a finished one is fine too.
        if response.status_code == 400 and body and body.get("status") == "ALREADY_COMPLETED":
            return
        raise _error(response)

    async def refresh_webhook_keys(self) -> int:
        """Load the JWKS from ``jwks_url`` through the shared client; return the key count.

        Call at start-up and now and then (fal rotates keys); a webhook that no known
        key verifies is rejected.
        """
        if self.jwks_url is None:
            return len(self._static_keys)
        response = await _send(self._client, "GET", self.jwks_url)
        if response.is_error:
            raise _error(response)
        try:
            keys = load_jwks(response.content)
        except ValueError as exc:
            raise TransientProviderError(f"fal: bad JWKS: {exc}", code="bad_response") from exc
        self._jwks_keys = keys
        self.jwks_loaded_at = time.time()
        return len(keys)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes, now: float) -> WebhookEvent:
        keys = self._static_keys + self._jwks_keys
        if not keys:
            raise WebhookRejected("fal: no webhook keys loaded", code="webhooks_unconfigured")
        request_id = headers.get("x-fal-webhook-request-id")
        user_id = headers.get("x-fal-webhook-user-id")
        timestamp = headers.get("x-fal-webhook-timestamp")
        signature_hex = headers.get("x-fal-webhook-signature")
        if not request_id or not user_id or not timestamp or not signature_hex:
            raise WebhookRejected("missing x-fal-webhook-* headers", code="webhook_malformed")
        try:
            sent_at = int(timestamp)
            signature = bytes.fromhex(signature_hex)
        except ValueError:
            raise WebhookRejected(
                "bad webhook timestamp or signature", code="webhook_malformed"
            ) from None
        if abs(now - sent_at) > WEBHOOK_TOLERANCE_S:
            raise WebhookRejected(
                f"webhook timestamp {sent_at} is more than {WEBHOOK_TOLERANCE_S:.0f} s from now",
                code="webhook_stale",
            )
        message = webhook_message(request_id, user_id, timestamp, body)
        if not any(_verifies(key, signature, message) for key in keys):
            raise WebhookRejected("webhook signature does not match", code="webhook_signature")
        data = _webhook_json(body)
        if data.get("request_id") != request_id:
            raise WebhookRejected("webhook body names another request", code="webhook_malformed")
        return WebhookEvent(
            # fal resends the same body on retries: its hash names the delivery.
            event_id="fal-" + hashlib.sha256(body).hexdigest()[:32],
            # The body names only the request, not its app: see the module docstring.
            provider_job_id=request_id,
            result=_webhook_result(data),
        )

    def _request_url(self, provider_job_id: str) -> str:
        app, _, request_id = provider_job_id.rpartition("/")
        if app.count("/") != 1 or not request_id:
            raise PermanentProviderError(
                f"fal: {provider_job_id!r} is not an '<owner>/<alias>/<request id>'",
                code="not_found",
                provider_job_id=provider_job_id,
            )
        return f"{self.base_url}/{app}/requests/{request_id}"


def build_submission(request: VideoRequest) -> tuple[_FalModel, str, dict[str, Any]]:
    """The model, the endpoint subpath and the input body for ``request``."""
    spec = _SPECS.get(request.model)
    if spec is None:
        raise PermanentProviderError(
            f"fal: unknown model {request.model!r}", code="invalid_request"
        )
    size = f"{request.width}x{request.height}"
    path = spec.image_path if request.input_image_url is not None else spec.text_path
    problems = []
    if size not in spec.info.sizes:
        problems.append(f"size {size} not in {', '.join(spec.info.sizes)}")
    if request.seconds not in spec.durations:
        problems.append(f"seconds {request.seconds} not in {spec.durations}")
    if path is None:
        problems.append("this model does not take that kind of request")
    if problems or path is None:
        raise PermanentProviderError(
            f"fal {request.model}: " + "; ".join(problems), code="invalid_request"
        )
    # fal's video endpoints take the duration as a string enum ("6", "10").
    body: dict[str, Any] = {"prompt": request.prompt, "duration": str(request.seconds)}
    body.update(spec.extra)
    if request.input_image_url is not None:
        body["image_url"] = request.input_image_url
    elif spec.aspect_of is not None:
        body["aspect_ratio"] = spec.aspect_of[size]
    return spec, path, body


def webhook_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """What fal signs: request id, user id, timestamp and the body's SHA-256, one per line."""
    return "\n".join((request_id, user_id, timestamp, hashlib.sha256(body).hexdigest())).encode()


def public_key_from_jwk_x(x: str) -> Ed25519PublicKey:
    """An Ed25519 public key from a JWK ``x`` (base64url, padding optional)."""
    try:
        raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not a base64url Ed25519 public key: {x!r}") from exc


def load_jwks(document: bytes) -> tuple[Ed25519PublicKey, ...]:
    """The Ed25519 keys of a JWKS: ``{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": …}]}``."""
    data = json.loads(document)
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list):
        raise ValueError("no 'keys' list")
    found = tuple(
        public_key_from_jwk_x(jwk["x"])
        for jwk in keys
        if isinstance(jwk, dict) and jwk.get("crv") == "Ed25519" and isinstance(jwk.get("x"), str)
    )
    if not found:
        raise ValueError("no Ed25519 key in the JWKS")
    return found


def _verifies(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _app_of(model_id: str) -> str:
    owner, alias, *_ = model_id.split("/")
    return f"{owner}/{alias}"


def _outputs(result: Mapping[str, Any]) -> tuple[OutputRef, ...]:
    video = result.get("video")
    if isinstance(video, dict) and isinstance(video.get("url"), str):
        return (OutputRef(video["url"], video.get("content_type") or "video/mp4"),)
    return ()


def _failure(error_type: Any, error: Any, detail: Any) -> PollResult:
    """A finished request that did not succeed, from fal's error fields."""
    types = {str(error_type)} if error_type else set()
    messages = [str(error)] if error else []
    if isinstance(detail, list):
        for item in detail:
            if isinstance(item, dict):
                types.add(str(item.get("type")))
                messages.append(f"{item.get('msg')} ({item.get('type')})")
    elif detail:
        messages.append(str(detail))
    message = "; ".join(messages) or "the request failed"
    if types & _CANCELED_TYPES:
        return PollResult(ProviderStatus.CANCELED, error_code="canceled", error_message=message)
    code = "content_policy" if types & _CONTENT_POLICY_TYPES else "generation_failed"
    return PollResult(ProviderStatus.FAILED, error_code=code, error_message=message)


def _webhook_result(data: Mapping[str, Any]) -> PollResult:
    payload = data.get("payload")
    if data.get("status") == "OK" and isinstance(payload, dict):
        outputs = _outputs(payload)
        if outputs:
            return PollResult(ProviderStatus.SUCCEEDED, progress=100, outputs=outputs)
    detail = payload.get("detail") if isinstance(payload, dict) else None
    return _failure(None, data.get("error") or data.get("payload_error"), detail)


async def _send(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    return await request(http, "fal", method, url, **kwargs)


def _error(response: httpx.Response) -> ProviderError:
    """A non-2xx answer as our error, with fal's typed ``detail`` as the reason."""
    body = _json_or_none(response)
    detail = body.get("detail") if body else None
    if isinstance(detail, list):
        failure = _failure(body.get("error_type") if body else None, None, detail)
        code = "content_policy" if failure.error_code == "content_policy" else None
        return error_for("fal", response, code=code, message=failure.error_message)
    return error_for("fal", response)


def _json_or_none(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _json_object(response: httpx.Response) -> dict[str, Any]:
    data = _json_or_none(response)
    if data is None:
        raise TransientProviderError(
            f"fal: HTTP {response.status_code} answer is not a JSON object", code="bad_response"
        )
    return data


def _webhook_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise WebhookRejected("webhook body is not JSON", code="webhook_malformed") from exc
    if not isinstance(data, dict):
        raise WebhookRejected("webhook body is not a JSON object", code="webhook_malformed")
    return data
