"""Runway (api.dev.runwayml.com): gen4 and Veo models behind polled tasks.

A create answers only ``{"id"}``; ``GET /v1/tasks/{id}`` tells the status. THROTTLED
means "over our concurrency limit, stored and waiting", so it is queued, not an error.
Runway takes no idempotency key and sends no webhooks. Output URLs are signed and
expire in 24-48 h; reading the task again gives fresh ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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

__all__ = ["DEFAULT_BASE_URL", "RunwayProvider"]

log = logging.getLogger("vidpipe.providers.runway")

DEFAULT_BASE_URL = "https://api.dev.runwayml.com"
# Required on every call; the date the request and response shapes are pinned to.
API_VERSION = "2024-11-06"
# Runway: "should not expect updates more frequent than once every five seconds".
_POLL_INTERVAL_S = 5.0
_MAX_PROMPT_UTF16 = 1000

_GEN4_RATIOS = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
_VEO_RATIOS = ("1280:720", "720:1280", "1080:1920", "1920:1080")


@dataclass(frozen=True)
class _Model:
    info: ModelInfo
    # Ratios (W:H, which are the output's pixel size) per endpoint; empty: not offered.
    text_ratios: tuple[str, ...]
    image_ratios: tuple[str, ...]
    # The exact durations accepted: ModelInfo can only say min..max.
    durations: tuple[int, ...]
    takes_seed: bool


def _model(
    model_id: str,
    text_ratios: tuple[str, ...],
    image_ratios: tuple[str, ...],
    durations: tuple[int, ...],
    *,
    takes_seed: bool,
    description: str,
) -> _Model:
    ratios = dict.fromkeys(text_ratios + image_ratios)
    kinds = (("text-to-video",) if text_ratios else ()) + (
        ("image-to-video",) if image_ratios else ()
    )
    info = ModelInfo(
        id=model_id,
        sizes=tuple(r.replace(":", "x") for r in ratios),
        min_seconds=min(durations),
        max_seconds=max(durations),
        kinds=kinds,
        fps=24,
        description=description,
    )
    return _Model(info, text_ratios, image_ratios, durations, takes_seed)


_MODELS = (
    _model(
        "gen4.5",
        ("1280:720", "720:1280"),
        _GEN4_RATIOS,
        tuple(range(2, 11)),
        takes_seed=True,
        description="Runway Gen-4.5, 2-10 s. Text-to-video only at 1280x720 and 720x1280.",
    ),
    _model(
        "gen4_turbo",
        (),
        _GEN4_RATIOS,
        tuple(range(2, 11)),
        takes_seed=True,
        description="Runway Gen-4 Turbo, image-to-video only, 2-10 s.",
    ),
    _model(
        "veo3.1",
        _VEO_RATIOS,
        _VEO_RATIOS,
        (4, 6, 8),
        takes_seed=False,
        description="Google Veo 3.1 through Runway; 4, 6 or 8 s.",
    ),
    _model(
        "veo3.1_fast",
        _VEO_RATIOS,
        _VEO_RATIOS,
        (4, 6, 8),
        takes_seed=False,
        description="Google Veo 3.1 Fast through Runway; 4, 6 or 8 s.",
    ),
    _model(
        "veo3",
        _VEO_RATIOS,
        _VEO_RATIOS,
        (8,),
        takes_seed=False,
        description="Google Veo 3 through Runway; 8 s only.",
    ),
)

_QUEUED = {"PENDING", "THROTTLED"}
# Moderation failures: SAFETY.INPUT.*, SAFETY.OUTPUT.*, INPUT_PREPROCESSING.SAFETY.*.
_SAFETY_PREFIXES = ("SAFETY.", "INPUT_PREPROCESSING.SAFETY")


class RunwayProvider(Provider):
    """Provider "runway": see the module docstring."""

    name = "runway"
    accepts_idempotency_key = False
    # Runway's own illustration ("first 5 videos finish in 15 seconds"); an example only.
    typical_latency_s = 15.0

    def __init__(
        self, http: httpx.AsyncClient, *, api_key: str, base_url: str = DEFAULT_BASE_URL
    ) -> None:
        super().__init__(http)
        self._client = http
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")

    def models(self) -> tuple[ModelInfo, ...]:
        return tuple(m.info for m in _MODELS)

    async def submit(self, request: VideoRequest, idempotency_key: str) -> str:
        endpoint, body = _create_body(request)
        response = await self._call("POST", endpoint, json=body)
        if response.is_error:
            raise error_for(self.name, response)
        task_id = _json(response, PermanentProviderError).get("id")
        if not isinstance(task_id, str) or not task_id:
            # The task may exist (and bill) without our knowing its id: retrying
            # could start a second one.
            raise PermanentProviderError(
                f"runway: create answered without a task id: {response.text[:200]}",
                code="unexpected_response",
            )
        log.info("runway task %s created (%s)", task_id, endpoint)
        return task_id

    async def poll(self, provider_job_id: str) -> PollResult:
        response = await self._call("GET", f"/v1/tasks/{quote(provider_job_id, safe='')}")
        if response.status_code == 404:
            # Cancelled-then-deleted tasks, and ids Runway never issued.
            raise PermanentProviderError(
                f"runway: no task {provider_job_id}",
                code="not_found",
                provider_job_id=provider_job_id,
            )
        if response.is_error:
            raise error_for(self.name, response)
        return _poll_result(_json(response, TransientProviderError))

    async def cancel(self, provider_job_id: str) -> None:
        # DELETE cancels a running/queued task and deletes a finished one: either
        # way vidpipe no longer wants it. 404: already deleted or never existed.
        response = await self._call(
            "DELETE", f"/v1/tasks/{quote(provider_job_id, safe='')}", headers={"Accept": "*/*"}
        )
        if response.status_code == 404 or not response.is_error:
            return
        raise error_for(self.name, response)

    async def _call(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        all_headers = {
            "Authorization": f"Bearer {self._api_key}",
            "X-Runway-Version": API_VERSION,
            **(headers or {}),
        }
        return await request(
            self._client, self.name, method, self.base_url + path, headers=all_headers, **kwargs
        )


def _create_body(req: VideoRequest) -> tuple[str, dict[str, Any]]:
    """The endpoint and camelCase body for ``req``; refuses what Runway would refuse."""
    model = next((m for m in _MODELS if m.info.id == req.model), None)
    if model is None:
        raise _invalid(f"unknown runway model {req.model!r}")
    ratio = f"{req.width}:{req.height}"
    ratios = model.image_ratios if req.input_image_url else model.text_ratios
    kind = "image-to-video" if req.input_image_url else "text-to-video"
    if not ratios:
        raise _invalid(f"{req.model} does not do {kind}")
    if ratio not in ratios:
        sizes = ", ".join(r.replace(":", "x") for r in ratios)
        raise _invalid(f"{req.model} {kind} sizes are {sizes}")
    if req.seconds not in model.durations:
        raise _invalid(f"{req.model} durations are {', '.join(map(str, model.durations))} s")
    if len(req.prompt.encode("utf-16-le")) // 2 > _MAX_PROMPT_UTF16:
        raise _invalid(f"runway prompts are at most {_MAX_PROMPT_UTF16} characters")
    body: dict[str, Any] = {
        "model": req.model,
        "promptText": req.prompt,
        "ratio": ratio,
        "duration": req.seconds,
    }
    if req.seed is not None and model.takes_seed:
        body["seed"] = req.seed
    if req.input_image_url:
        body["promptImage"] = req.input_image_url
        return "/v1/image_to_video", body
    return "/v1/text_to_video", body


def _poll_result(task: dict[str, Any]) -> PollResult:
    status = task.get("status")
    if status in _QUEUED:
        return PollResult(ProviderStatus.QUEUED, progress=0, next_poll_s=_POLL_INTERVAL_S)
    if status == "RUNNING":
        return PollResult(
            ProviderStatus.RUNNING,
            progress=_percent(task.get("progress")),
            next_poll_s=_POLL_INTERVAL_S,
        )
    if status == "SUCCEEDED":
        urls = task.get("output") or []
        outputs = tuple(OutputRef(url) for url in urls if isinstance(url, str))
        if not outputs:
            return PollResult(
                ProviderStatus.FAILED,
                error_code="no_output",
                error_message="runway reported success without an output URL",
            )
        return PollResult(ProviderStatus.SUCCEEDED, progress=100, outputs=outputs)
    if status == "FAILED":
        code = task.get("failureCode")
        message = str(task.get("failure") or "runway task failed")
        if isinstance(code, str) and code.startswith(_SAFETY_PREFIXES):
            return PollResult(
                ProviderStatus.FAILED,
                error_code="content_policy",
                error_message=f"{code}: {message}",
            )
        return PollResult(
            ProviderStatus.FAILED,
            error_code=code if isinstance(code, str) and code else "generation_failed",
            error_message=message,
        )
    # The SDK spells it CANCELLED; Runway's own skills doc spells it CANCELED.
    if status in ("CANCELLED", "CANCELED"):
        return PollResult(ProviderStatus.CANCELED)
    # A status this adapter does not know: keep polling; the worker's budget ends it.
    log.warning("runway task %s has unknown status %r", task.get("id"), status)
    return PollResult(ProviderStatus.RUNNING, next_poll_s=_POLL_INTERVAL_S)


def _percent(progress: Any) -> int | None:
    """Runway's ``progress`` is a float, most likely 0..1 (the SDK does not say)."""
    if isinstance(progress, bool) or not isinstance(progress, int | float):
        return None
    share = progress if progress <= 1 else progress / 100
    # 100 is kept for a finished job with its output.
    return max(0, min(99, int(share * 100)))


def _json(response: httpx.Response, error: type[ProviderError]) -> dict[str, Any]:
    """The body as a JSON object. ``error``: Permanent after a create (the task may exist,
    so retrying could start a second one), Transient after a read (reading again is free)."""
    try:
        data = response.json()
    except ValueError as exc:
        raise error(
            f"runway: HTTP {response.status_code} with a body that is not JSON",
            code="unexpected_response",
        ) from exc
    if not isinstance(data, dict):
        raise error("runway: expected a JSON object", code="unexpected_response")
    return data


def _invalid(message: str) -> PermanentProviderError:
    return PermanentProviderError(message, code="invalid_request")
