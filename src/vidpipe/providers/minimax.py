"""MiniMax Hailuo video generation: create a task, query it, swap its file id for a URL.

``POST /v1/video_generation`` gives a ``task_id``; ``GET /v1/query/video_generation``
reports ``Preparing`` / ``Queueing`` / ``Processing`` / ``Success`` / ``Fail``; on
success ``GET /v1/files/retrieve`` turns the ``file_id`` into a ``download_url``.
Errors mostly come as HTTP 200 with a non-zero ``base_resp.status_code``; that code
decides the error's class here.

MiniMax has no cancel endpoint, and its callbacks are unsigned (and first need a
``challenge`` echoed within 3 s), so this adapter polls only.
"""

from __future__ import annotations

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
)
from vidpipe.providers.http import error_for, request

__all__ = ["DEFAULT_BASE_URL", "MODELS", "MiniMaxProvider", "base_resp_error", "build_body"]

DEFAULT_BASE_URL = "https://api.minimax.io"

_HAILUO_SIZES = {"1366x768": "768P", "1920x1080": "1080P"}
_V01_SIZES = {"1280x720": "720P"}

# base_resp.status_code → (our code, transient?). From MiniMax's error-code table as
# mirrored by its resellers; codes not listed are permanent.
_BASE_RESP_CODES: dict[int, tuple[str, bool]] = {
    1000: ("provider_internal", True),  # unknown error
    1001: ("timeout", True),
    1002: ("rate_limited", True),
    1004: ("provider_auth", False),  # login fail / bad key
    1008: ("provider_balance", False),  # insufficient balance
    1024: ("provider_internal", True),
    1026: ("content_policy", False),  # the prompt is sensitive
    1027: ("content_policy", False),  # the generated video is sensitive
    1033: ("provider_internal", True),  # system / downstream error
    1039: ("rate_limited", True),  # token limit
    1042: ("provider_rejected", False),  # too many invisible characters
    2013: ("provider_rejected", False),  # invalid parameters
}
_STATUSES = {
    "Preparing": ProviderStatus.QUEUED,
    "Queueing": ProviderStatus.QUEUED,
    "Processing": ProviderStatus.RUNNING,
    "Success": ProviderStatus.SUCCEEDED,
    "Fail": ProviderStatus.FAILED,
}


@dataclass(frozen=True)
class _ModelSpec:
    info: ModelInfo
    resolution_of: Mapping[str, str]
    durations: tuple[int, ...]
    longest_1080p_s: int | None = None


def _v01(model_id: str, kinds: tuple[str, ...], description: str) -> _ModelSpec:
    return _ModelSpec(
        info=ModelInfo(
            id=model_id,
            sizes=tuple(_V01_SIZES),
            min_seconds=6,
            max_seconds=6,
            kinds=kinds,
            fps=25,
            description=description,
        ),
        resolution_of=_V01_SIZES,
        durations=(6,),
    )


_T2V = ("text-to-video",)
_I2V = ("image-to-video",)
_SPECS: dict[str, _ModelSpec] = {
    spec.info.id: spec
    for spec in (
        _ModelSpec(
            info=ModelInfo(
                id="MiniMax-Hailuo-02",
                sizes=tuple(_HAILUO_SIZES),
                min_seconds=6,
                max_seconds=10,
                kinds=("text-to-video", "image-to-video"),
                fps=25,
                description="Hailuo-02: 6 or 10 s at 768p, 6 s at 1080p.",
            ),
            resolution_of=_HAILUO_SIZES,
            durations=(6, 10),
            longest_1080p_s=6,
        ),
        _v01("T2V-01-Director", _T2V, "T2V-01 with [camera] commands in the prompt, 720p 6 s."),
        _v01("T2V-01", _T2V, "T2V-01, 720p 6 s."),
        _v01("I2V-01-Director", _I2V, "I2V-01 with [camera] commands, 720p 6 s."),
        _v01("I2V-01-live", _I2V, "I2V-01 for illustrations brought to life, 720p 6 s."),
        _v01("I2V-01", _I2V, "I2V-01, 720p 6 s."),
    )
}
MODELS: tuple[ModelInfo, ...] = tuple(spec.info for spec in _SPECS.values())


class MiniMaxProvider(Provider):
    """Provider "minimax": Hailuo and 01-series video models, polled."""

    name = "minimax"
    accepts_idempotency_key = False
    typical_latency_s = 120.0
    # Callbacks exist but are unsigned: nothing could tell ours from a forgery.
    supports_webhooks = False

    def __init__(
        self, http: httpx.AsyncClient, *, api_key: str, base_url: str = DEFAULT_BASE_URL
    ) -> None:
        super().__init__(http)
        self._client = http
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")

    def models(self) -> tuple[ModelInfo, ...]:
        return MODELS

    async def submit(self, request: VideoRequest, idempotency_key: str) -> str:
        data = await self._call("POST", "/v1/video_generation", json=build_body(request))
        _raise_for_base_resp(data)
        task_id = data.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise TransientProviderError(
                "minimax: create answered without a task_id", code="bad_response"
            )
        return task_id

    async def poll(self, provider_job_id: str) -> PollResult:
        data = await self._call(
            "GET", "/v1/query/video_generation", params={"task_id": provider_job_id}
        )
        status = _STATUSES.get(str(data.get("status")))
        if status is None:
            # No status: the query itself failed, and base_resp says why.
            _raise_for_base_resp(data, provider_job_id)
            raise TransientProviderError(
                f"minimax: unknown task status {data.get('status')!r}", code="bad_response"
            )
        if status is ProviderStatus.FAILED:
            return _failure(data)
        if status is ProviderStatus.SUCCEEDED:
            file_id = data.get("file_id")
            if not file_id:
                return PollResult(
                    ProviderStatus.FAILED,
                    error_code="no_output",
                    error_message="minimax: task succeeded without a file_id",
                )
            url = await self._download_url(str(file_id))
            return PollResult(ProviderStatus.SUCCEEDED, progress=100, outputs=(OutputRef(url),))
        return PollResult(status, progress=0 if status is ProviderStatus.QUEUED else None)

    async def cancel(self, provider_job_id: str) -> None:
        """MiniMax has no cancel endpoint: the task runs on (and is billed) regardless."""

    async def _download_url(self, file_id: str) -> str:
        data = await self._call("GET", "/v1/files/retrieve", params={"file_id": file_id})
        _raise_for_base_resp(data)
        file = data.get("file")
        url = file.get("download_url") if isinstance(file, dict) else None
        if not isinstance(url, str) or not url:
            raise TransientProviderError("minimax: file has no download_url", code="bad_response")
        return url

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await request(
            self._client,
            "minimax",
            method,
            self.base_url + path,
            headers={"Authorization": f"Bearer {self._api_key}"},
            **kwargs,
        )
        if response.is_error:
            raise error_for("minimax", response, message=_message(response))
        try:
            data = response.json()
        except ValueError as exc:
            raise TransientProviderError(
                f"minimax: HTTP {response.status_code} answer is not JSON", code="bad_response"
            ) from exc
        if not isinstance(data, dict):
            raise TransientProviderError(
                "minimax: answer is not a JSON object", code="bad_response"
            )
        return data


def build_body(request: VideoRequest) -> dict[str, Any]:
    """The create body for ``request``; refuses what the model cannot do."""
    spec = _SPECS.get(request.model)
    if spec is None:
        raise PermanentProviderError(
            f"minimax: unknown model {request.model!r}", code="invalid_request"
        )
    size = f"{request.width}x{request.height}"
    resolution = spec.resolution_of.get(size)
    problems = []
    if resolution is None:
        problems.append(f"size {size} not in {', '.join(spec.resolution_of)}")
    if request.seconds not in spec.durations:
        problems.append(f"seconds {request.seconds} not in {spec.durations}")
    elif (
        spec.longest_1080p_s is not None
        and resolution == "1080P"
        and request.seconds > spec.longest_1080p_s
    ):
        problems.append(f"1080P is only made {spec.longest_1080p_s} s long")
    if request.input_image_url is None and "text-to-video" not in spec.info.kinds:
        problems.append("this model needs an input image")
    if request.input_image_url is not None and "image-to-video" not in spec.info.kinds:
        problems.append("this model takes no input image")
    if problems:
        raise PermanentProviderError(
            f"minimax {request.model}: " + "; ".join(problems), code="invalid_request"
        )
    body: dict[str, Any] = {
        "model": request.model,
        "prompt": request.prompt,
        "duration": request.seconds,
        "resolution": resolution,
    }
    if request.input_image_url is not None:
        body["first_frame_image"] = request.input_image_url
    return body


def base_resp_error(
    data: Mapping[str, Any], provider_job_id: str | None = None
) -> ProviderError | None:
    """The error a non-zero ``base_resp.status_code`` stands for, or None when it is 0."""
    base_resp = data.get("base_resp")
    if not isinstance(base_resp, dict):
        return TransientProviderError("minimax: answer without base_resp", code="bad_response")
    status_code = base_resp.get("status_code")
    if status_code == 0:
        return None
    message = f"minimax: {status_code}: {base_resp.get('status_msg') or 'error'}"
    code, transient = _BASE_RESP_CODES.get(
        status_code if isinstance(status_code, int) else -1, ("provider_rejected", False)
    )
    if transient:
        return TransientProviderError(message, code=code, provider_job_id=provider_job_id)
    return PermanentProviderError(message, code=code, provider_job_id=provider_job_id)


def _raise_for_base_resp(data: Mapping[str, Any], provider_job_id: str | None = None) -> None:
    error = base_resp_error(data, provider_job_id)
    if error is not None:
        raise error


def _failure(data: Mapping[str, Any]) -> PollResult:
    base_resp = data.get("base_resp")
    status_code = base_resp.get("status_code") if isinstance(base_resp, dict) else None
    status_msg = base_resp.get("status_msg") if isinstance(base_resp, dict) else None
    code = _BASE_RESP_CODES.get(status_code, ("", False))[0] if isinstance(status_code, int) else ""
    if status_code and status_msg:
        message = f"{status_code}: {status_msg}"
    else:
        # The query succeeded (base_resp 0) while the task failed: no reason is given.
        message = "MiniMax reported the task as Fail"
    return PollResult(
        ProviderStatus.FAILED,
        error_code="content_policy" if code == "content_policy" else "generation_failed",
        error_message=message,
    )


def _message(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("base_resp"), dict):
        return str(data["base_resp"].get("status_msg"))
    return None
