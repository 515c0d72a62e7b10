"""Luma Dream Machine (api.lumalabs.ai/dream-machine/v1): Ray 2 generations, polled.

A create answers the whole ``Generation``; ``GET /generations/{id}`` tells its
``state`` (queued, dreaming, completed, failed). Luma takes no idempotency key. It can
POST the generation to a ``callback_url``, but unsigned, so vidpipe cannot verify those
calls: the adapter passes the URL when asked and leaves webhooks unsupported.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote

import httpx

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

__all__ = ["DEFAULT_BASE_URL", "LumaProvider"]

log = logging.getLogger("vidpipe.providers.luma")

DEFAULT_BASE_URL = "https://api.lumalabs.ai/dream-machine/v1"

# Output size → (aspect_ratio, resolution). Luma names a resolution by its short side;
# the exact pixel sizes are not documented, these are the conventional ones.
_SIZES = {
    "960x540": ("16:9", "540p"),
    "540x960": ("9:16", "540p"),
    "540x540": ("1:1", "540p"),
    "1280x720": ("16:9", "720p"),
    "720x1280": ("9:16", "720p"),
    "720x720": ("1:1", "720p"),
    "1920x1080": ("16:9", "1080p"),
    "1080x1920": ("9:16", "1080p"),
    "1080x1080": ("1:1", "1080p"),
}
# Luma takes duration as the strings "5s" and "9s".
_DURATIONS = (5, 9)


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


# ray-1-6 is left out: the sources do not say it honours resolution or duration, and
# vidpipe checks the output's exact size and length.
_MODELS = (
    _info("ray-2", "Luma Ray 2, 5 or 9 s, 540p to 1080p."),
    _info("ray-flash-2", "Luma Ray Flash 2 (faster, cheaper), 5 or 9 s, 540p to 1080p."),
)

_STATUSES = {
    "queued": ProviderStatus.QUEUED,
    "dreaming": ProviderStatus.RUNNING,
    "completed": ProviderStatus.SUCCEEDED,
    "failed": ProviderStatus.FAILED,
}
# Luma gives a failure as free text only; moderation refusals are recognised by words.
_POLICY_WORDS = re.compile(r"moderat|safety|policy|not allowed|blocked|inappropriate", re.I)


class LumaProvider(Provider):
    """Provider "luma": see the module docstring."""

    name = "luma"
    accepts_idempotency_key = False
    # No documented figure; Luma's own MCP server README says 15-60 s.
    typical_latency_s = 30.0

    def __init__(
        self, http: httpx.AsyncClient, *, api_key: str, base_url: str = DEFAULT_BASE_URL
    ) -> None:
        super().__init__(http)
        self._client = http
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")

    def models(self) -> tuple[ModelInfo, ...]:
        return _MODELS

    async def submit(self, request: VideoRequest, idempotency_key: str) -> str:
        response = await self._call("POST", "/generations/video", json=_create_body(request))
        if response.is_error:
            raise error_for(self.name, response)
        generation_id = _json(response, PermanentProviderError).get("id")
        if not isinstance(generation_id, str) or not generation_id:
            # The generation may exist (and bill) without our knowing its id:
            # retrying could start a second one.
            raise PermanentProviderError(
                f"luma: create answered without an id: {response.text[:200]}",
                code="unexpected_response",
            )
        log.info("luma generation %s created", generation_id)
        return generation_id

    async def poll(self, provider_job_id: str) -> PollResult:
        response = await self._call("GET", f"/generations/{quote(provider_job_id, safe='')}")
        if response.status_code == 404:
            # Deleted (our cancel) or never issued.
            raise PermanentProviderError(
                f"luma: no generation {provider_job_id}",
                code="not_found",
                provider_job_id=provider_job_id,
            )
        if response.is_error:
            raise error_for(self.name, response)
        return _poll_result(_json(response, TransientProviderError))

    async def cancel(self, provider_job_id: str) -> None:
        # Luma has no cancel, only DELETE; whether deleting stops a queued job is not
        # documented. A 404 means it is already gone.
        response = await self._call("DELETE", f"/generations/{quote(provider_job_id, safe='')}")
        if response.status_code == 404 or not response.is_error:
            return
        raise error_for(self.name, response)

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._api_key}"}
        return await request(
            self._client, self.name, method, self.base_url + path, headers=headers, **kwargs
        )


def _create_body(req: VideoRequest) -> dict[str, Any]:
    if req.model not in {m.id for m in _MODELS}:
        raise _invalid(f"unknown luma model {req.model!r}")
    size = f"{req.width}x{req.height}"
    if size not in _SIZES:
        raise _invalid(f"luma sizes are {', '.join(_SIZES)}")
    if req.seconds not in _DURATIONS:
        raise _invalid("luma durations are 5 and 9 s")
    aspect_ratio, resolution = _SIZES[size]
    body: dict[str, Any] = {
        "model": req.model,
        "prompt": req.prompt,
        "aspect_ratio": aspect_ratio,
        "resolution": resolution,
        "duration": f"{req.seconds}s",
    }
    if req.input_image_url:
        body["keyframes"] = {"frame0": {"type": "image", "url": req.input_image_url}}
    if req.callback_url:
        body["callback_url"] = req.callback_url
    return body


def _poll_result(generation: dict[str, Any]) -> PollResult:
    state = generation.get("state")
    status = _STATUSES.get(state) if isinstance(state, str) else None
    if status is None:
        # Unknown state: keep polling; the worker's budget ends it.
        log.warning("luma generation %s has unknown state %r", generation.get("id"), state)
        return PollResult(ProviderStatus.RUNNING)
    if status is ProviderStatus.SUCCEEDED:
        assets = generation.get("assets") or {}
        video = assets.get("video") if isinstance(assets, dict) else None
        if not isinstance(video, str) or not video:
            return PollResult(
                ProviderStatus.FAILED,
                error_code="no_output",
                error_message="luma reported completion without a video URL",
            )
        return PollResult(status, progress=100, outputs=(OutputRef(video),))
    if status is ProviderStatus.FAILED:
        reason = str(generation.get("failure_reason") or "luma generation failed")
        code = "content_policy" if _POLICY_WORDS.search(reason) else "generation_failed"
        return PollResult(status, error_code=code, error_message=reason)
    return PollResult(status, progress=0 if status is ProviderStatus.QUEUED else None)


def _json(response: httpx.Response, error: type[ProviderError]) -> dict[str, Any]:
    """The body as a JSON object. ``error``: Permanent after a create (the generation may
    exist, so retrying could start a second), Transient after a read."""
    try:
        data = response.json()
    except ValueError as exc:
        raise error(
            f"luma: HTTP {response.status_code} with a body that is not JSON",
            code="unexpected_response",
        ) from exc
    if not isinstance(data, dict):
        raise error("luma: expected a JSON object", code="unexpected_response")
    return data


def _invalid(message: str) -> PermanentProviderError:
    return PermanentProviderError(message, code="invalid_request")
