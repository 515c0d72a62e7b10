"""Kling AI's official API (api-singapore.klingai.com): text2video and image2video tasks.

Auth is a JWT the client mints itself: HS256 with the secret key, ``iss`` the access
key, valid 30 minutes. Every answer is an envelope ``{code, message, request_id,
data}``; ``code`` 0 is success, other codes say more than the HTTP status does (a 429
may be "resource pack depleted", which no retry fixes). A task is read back on the
endpoint that made it, so the provider job id is ``"{endpoint}/{task_id}"``. Kling has
no cancel, and its callbacks are unsigned (not accepted as webhooks here).

Each create carries an ``external_task_id`` derived from the idempotency key: it ties
Kling's records to vidpipe's attempt, and since Kling requires it unique, a second
create with one key is refused rather than billed twice. The refusal does not tell the
first task's id, so the adapter still does not claim to accept idempotency keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

import httpx

from vidpipe.core.clock import Clock, SystemClock
from vidpipe.errors import PermanentProviderError, ProviderError, TransientProviderError
from vidpipe.providers.base import (
    ModelInfo,
    OutputRef,
    PollResult,
    Provider,
    ProviderStatus,
    VideoRequest,
)
from vidpipe.providers.http import error_for, request

__all__ = ["DEFAULT_BASE_URL", "KlingProvider", "encode_hs256_jwt"]

log = logging.getLogger("vidpipe.providers.kling")

DEFAULT_BASE_URL = "https://api-singapore.klingai.com"
_TOKEN_LIFETIME_S = 1800
# Kling's own examples backdate nbf by 5 s to absorb clock skew.
_NOT_BEFORE_SKEW_S = 5
_MAX_PROMPT_CHARS = 2500

# Output size → (aspect_ratio, mode). Standard mode renders 720p, professional 1080p;
# Kling documents the modes, not their pixel sizes.
_SIZES = {
    "1280x720": ("16:9", "std"),
    "720x1280": ("9:16", "std"),
    "720x720": ("1:1", "std"),
    "1920x1080": ("16:9", "pro"),
    "1080x1920": ("9:16", "pro"),
    "1080x1080": ("1:1", "pro"),
}
# Kling takes duration as the strings "5" and "10".
_DURATIONS = (5, 10)


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
    _info("kling-v1", "Kling 1.0; 5 or 10 s; 720p standard, 1080p professional mode."),
    _info("kling-v1-6", "Kling 1.6; 5 or 10 s."),
    _info("kling-v2-master", "Kling 2.0 Master; 5 or 10 s."),
    _info("kling-v2-1-master", "Kling 2.1 Master; 5 or 10 s."),
    _info("kling-v2-5-turbo", "Kling 2.5 Turbo; 5 or 10 s."),
    _info("kling-v2-6", "Kling 2.6; 5 or 10 s."),
)

_STATUSES = {
    "submitted": ProviderStatus.QUEUED,
    "processing": ProviderStatus.RUNNING,
    "succeed": ProviderStatus.SUCCEEDED,
    "failed": ProviderStatus.FAILED,
}
_JOB_ID = re.compile(r"(?P<endpoint>text2video|image2video)/(?P<task_id>[A-Za-z0-9_\-]+)")
# A failed task says why in free text only; Kling calls moderation "risk control".
_POLICY_WORDS = re.compile(r"risk|safety|sensitive|violat|moderat|policy|inappropriate", re.I)


class KlingProvider(Provider):
    """Provider "kling": see the module docstring."""

    name = "kling"
    accepts_idempotency_key = False
    # No figure in Kling's docs; resellers quote 1-2 minutes for 5-10 s.
    typical_latency_s = 90.0

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        access_key: str,
        secret_key: str,
        base_url: str = DEFAULT_BASE_URL,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(http)
        self._client = http
        self._access_key = access_key
        self._secret_key = secret_key
        self.base_url = base_url.rstrip("/")
        self._clock = clock or SystemClock()

    def models(self) -> tuple[ModelInfo, ...]:
        return _MODELS

    async def submit(self, request: VideoRequest, idempotency_key: str) -> str:
        endpoint, body = _create_body(request, _external_task_id(idempotency_key))
        response = await self._call("POST", f"/v1/videos/{endpoint}", json=body)
        envelope = _json(response, PermanentProviderError)
        if response.is_error or envelope.get("code") != 0:
            raise self._error(response, envelope)
        data = envelope.get("data")
        task_id = data.get("task_id") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not _JOB_ID.fullmatch(f"{endpoint}/{task_id}"):
            # The task may exist (and bill) without our knowing its id: retrying
            # could start a second one.
            raise PermanentProviderError(
                f"kling: create answered without a task id: {response.text[:200]}",
                code="unexpected_response",
            )
        log.info("kling %s task %s created", endpoint, task_id)
        return f"{endpoint}/{task_id}"

    async def poll(self, provider_job_id: str) -> PollResult:
        if not _JOB_ID.fullmatch(provider_job_id):
            raise PermanentProviderError(
                f"kling: {provider_job_id!r} is not a kling job id",
                code="not_found",
                provider_job_id=provider_job_id,
            )
        response = await self._call("GET", f"/v1/videos/{provider_job_id}")
        envelope = _json(response, TransientProviderError)
        if response.status_code == 404:
            raise PermanentProviderError(
                f"kling: no task {provider_job_id}",
                code="not_found",
                provider_job_id=provider_job_id,
            )
        if response.is_error or envelope.get("code") != 0:
            raise self._error(response, envelope)
        data = envelope.get("data")
        return _poll_result(data if isinstance(data, dict) else {})

    async def cancel(self, provider_job_id: str) -> None:
        # Kling documents no cancel: the task runs on (and holds a concurrency slot
        # until it ends); vidpipe just stops looking at it.
        log.info("kling has no cancel; task %s is left to finish", provider_job_id)

    def token(self) -> str:
        """A fresh API token (JWT) for the configured keys."""
        now = int(self._clock.now())
        claims = {
            "iss": self._access_key,
            "exp": now + _TOKEN_LIFETIME_S,
            "nbf": now - _NOT_BEFORE_SKEW_S,
        }
        return encode_hs256_jwt(claims, self._secret_key)

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        # Minted per call: cheap, and never stale after a long pause.
        headers = {"Authorization": f"Bearer {self.token()}"}
        return await request(
            self._client, self.name, method, self.base_url + path, headers=headers, **kwargs
        )

    def _error(self, response: httpx.Response, envelope: Mapping[str, Any]) -> ProviderError:
        """Kling's envelope code decides where the HTTP status would mislead."""
        code = envelope.get("code")
        message = f"{code}: {envelope.get('message') or response.reason_phrase}"
        if isinstance(code, int):
            if 1100 <= code <= 1102:
                # Account in arrears or resource pack used up: sent as 429, not transient.
                return PermanentProviderError(f"kling: {message}", code="provider_account")
            if code in (1300, 1301):
                return PermanentProviderError(f"kling: {message}", code="content_policy")
            if code in (1103, 1304):
                # Unauthorized resource, or a request from outside the IP allow-list.
                return PermanentProviderError(f"kling: {message}", code="provider_auth")
        return error_for(self.name, response, message=message)


def encode_hs256_jwt(claims: Mapping[str, Any], secret: str) -> str:
    """A compact JWS (RFC 7515) over ``claims``, signed HMAC-SHA256 with ``secret``."""
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = f"{_b64url_json(header)}.{_b64url_json(claims)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def _b64url_json(value: Mapping[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _external_task_id(idempotency_key: str) -> str:
    # Hashed: keys may be long or carry characters Kling might not take.
    return "vidpipe-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def _create_body(req: VideoRequest, external_task_id: str) -> tuple[str, dict[str, Any]]:
    if req.model not in {m.id for m in _MODELS}:
        raise _invalid(f"unknown kling model {req.model!r}")
    size = f"{req.width}x{req.height}"
    if size not in _SIZES:
        raise _invalid(f"kling sizes are {', '.join(_SIZES)}")
    if req.seconds not in _DURATIONS:
        raise _invalid("kling durations are 5 and 10 s")
    if len(req.prompt) > _MAX_PROMPT_CHARS:
        raise _invalid(f"kling prompts are at most {_MAX_PROMPT_CHARS} characters")
    aspect_ratio, mode = _SIZES[size]
    body: dict[str, Any] = {
        "model_name": req.model,
        "prompt": req.prompt,
        "mode": mode,
        "duration": str(req.seconds),
        "external_task_id": external_task_id,
    }
    if req.callback_url:
        body["callback_url"] = req.callback_url
    if not req.input_image_url:
        body["aspect_ratio"] = aspect_ratio
        return "text2video", body
    # Image-to-video takes its shape from the image; inline images are bare base64.
    image = req.input_image_url
    if image.startswith("data:"):
        _, _, image = image.partition(",")
    body["image"] = image
    return "image2video", body


def _poll_result(data: Mapping[str, Any]) -> PollResult:
    raw = data.get("task_status")
    status = _STATUSES.get(raw) if isinstance(raw, str) else None
    if status is None:
        # Unknown status: keep polling; the worker's budget ends it.
        log.warning("kling task %s has unknown status %r", data.get("task_id"), raw)
        return PollResult(ProviderStatus.RUNNING)
    if status is ProviderStatus.SUCCEEDED:
        result = data.get("task_result")
        videos = result.get("videos") if isinstance(result, dict) else None
        urls = [v["url"] for v in videos or [] if isinstance(v, dict) and v.get("url")]
        if not urls:
            return PollResult(
                ProviderStatus.FAILED,
                error_code="no_output",
                error_message="kling reported success without a video URL",
            )
        return PollResult(status, progress=100, outputs=tuple(OutputRef(u) for u in urls))
    if status is ProviderStatus.FAILED:
        reason = str(data.get("task_status_msg") or "kling task failed")
        code = "content_policy" if _POLICY_WORDS.search(reason) else "generation_failed"
        return PollResult(status, error_code=code, error_message=reason)
    return PollResult(status, progress=0 if status is ProviderStatus.QUEUED else None)


def _json(response: httpx.Response, error: type[ProviderError]) -> dict[str, Any]:
    """The envelope. ``error`` when it is missing: Permanent after a create (the task may
    exist, so retrying could start a second), Transient after a read. Error statuses
    without an envelope (a proxy's 502 page) give an empty one, for error_for to judge."""
    try:
        data = response.json()
    except ValueError as exc:
        if response.is_error:
            return {}
        raise error(
            f"kling: HTTP {response.status_code} with a body that is not JSON",
            code="unexpected_response",
        ) from exc
    if not isinstance(data, dict):
        if response.is_error:
            return {}
        raise error("kling: expected a JSON object", code="unexpected_response")
    return data


def _invalid(message: str) -> PermanentProviderError:
    return PermanentProviderError(message, code="invalid_request")
