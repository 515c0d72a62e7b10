"""The HTTP shape of each call, and reading answers, shared by the sync and async clients.

Nothing here does I/O: a call is described as a :class:`Request`, and a response is
turned into a model or an :class:`~vidpipe.client.APIError` by pure functions.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from vidpipe.client._errors import (
    APIError,
    RateLimited,
    VideoFailed,
    VidpipeClientError,
    WaitTimeout,
    error_class,
)
from vidpipe.client._models import Variant, Video
from vidpipe.client._retry import poll_after_s, retry_after_s

M = TypeVar("M", bound=BaseModel)

IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str | int] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def base_url(url: str) -> str:
    """The server's root: ``http://host:8000`` and ``http://host:8000/v1`` both work."""
    root = url.rstrip("/")
    return root.removesuffix("/v1")


def new_idempotency_key() -> str:
    return f"vidpipe-client-{uuid.uuid4()}"


def video_body(
    prompt: str,
    *,
    seconds: int | str | None,
    size: str | None,
    aspect_ratio: str | None,
    model: str | None,
    seed: int | None,
    metadata: Mapping[str, str] | None,
    fallback_models: Sequence[str] | None,
    max_cost_usd: float | None,
    webhook_url: str | None,
    derivatives: Sequence[str] | None,
) -> dict[str, Any]:
    """The JSON body of a create (or estimate); unset fields are left to the server."""
    body: dict[str, Any] = {"prompt": prompt}
    optional: dict[str, Any] = {
        "seconds": seconds,
        "size": size,
        "aspect_ratio": aspect_ratio,
        "model": model,
        "seed": seed,
        "metadata": dict(metadata) if metadata is not None else None,
        "fallback_models": list(fallback_models) if fallback_models is not None else None,
        "max_cost_usd": max_cost_usd,
        "webhook_url": webhook_url,
        "derivatives": list(derivatives) if derivatives is not None else None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


class ShortFields(TypedDict, total=False):
    """The fields of ``POST /v1/shorts``; those left out take the server's defaults.

    Give a ``topic``, your own ``script`` (narration text) or your own ``scenes``.
    ``template`` is one of :meth:`Client.templates`; ``aspect_ratio`` is ``9:16``,
    ``16:9`` or ``1:1``; ``visual_model`` is ``procedural`` (offline stills) or a video
    model for a generated clip per scene; ``music_mood`` is ``calm``, ``upbeat`` or
    ``dramatic``.
    """

    topic: str
    script: str
    scenes: Sequence[str]
    template: str
    voice: str
    speech_engine: str
    aspect_ratio: str
    target_seconds: float
    visual_model: str
    llm: bool
    llm_model: str
    captions: bool
    music: bool
    music_mood: str
    music_name: str
    seed: int
    metadata: Mapping[str, str]
    max_cost_usd: float


def short_body(fields: ShortFields) -> dict[str, Any]:
    """The JSON body of ``POST /v1/shorts``; fields given as None are left out too."""
    body: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    if "scenes" in body:
        body["scenes"] = list(body["scenes"])
    if "metadata" in body:
        body["metadata"] = dict(body["metadata"])
    return body


def _create_at(path: str, body: dict[str, Any], idempotency_key: str | None) -> Request:
    # A key is always sent, so a create retried after a lost answer returns the same job.
    key = idempotency_key if idempotency_key is not None else new_idempotency_key()
    return Request("POST", path, json=body, headers={IDEMPOTENCY_HEADER: key})


def create(body: dict[str, Any], idempotency_key: str | None) -> Request:
    return _create_at("/v1/videos", body, idempotency_key)


def create_job(body: dict[str, Any], idempotency_key: str | None) -> Request:
    return _create_at("/v1/jobs", body, idempotency_key)


def create_short(body: dict[str, Any], idempotency_key: str | None) -> Request:
    return _create_at("/v1/shorts", body, idempotency_key)


def estimate(body: dict[str, Any]) -> Request:
    return Request("POST", "/v1/videos", params={"dry_run": "true"}, json=body)


def _video_path(video_id: str, suffix: str = "") -> str:
    if not video_id:
        raise ValueError("video_id must not be empty")
    return f"/v1/videos/{quote(video_id, safe='')}{suffix}"


def get(video_id: str) -> Request:
    return Request("GET", _video_path(video_id))


def list_videos(
    *, limit: int | None, after: str | None, status: str | None, order: str | None
) -> Request:
    params: dict[str, str | int] = {}
    if limit is not None:
        params["limit"] = limit
    if after is not None:
        params["after"] = after
    if status is not None:
        params["status"] = status
    if order is not None:
        params["order"] = order
    return Request("GET", "/v1/videos", params=params)


def cancel(video_id: str) -> Request:
    return Request("POST", _video_path(video_id, "/cancel"))


def delete(video_id: str) -> Request:
    return Request("DELETE", _video_path(video_id))


def content(video_id: str, variant: Variant) -> Request:
    return Request("GET", _video_path(video_id, "/content"), params={"variant": variant})


def retry(video_id: str) -> Request:
    return Request("POST", _video_path(video_id, "/retry"))


def steps(video_id: str) -> Request:
    return Request("GET", _video_path(video_id, "/steps"))


def templates() -> Request:
    return Request("GET", "/v1/templates")


def template(name: str) -> Request:
    if not name:
        raise ValueError("name must not be empty")
    return Request("GET", f"/v1/templates/{quote(name, safe='')}")


def build(http: httpx.Client | httpx.AsyncClient, request: Request) -> httpx.Request:
    return http.build_request(
        request.method,
        request.path,
        params=request.params or None,
        json=request.json,
        headers=request.headers or None,
    )


def api_error(response: httpx.Response) -> APIError:
    """The typed error of an error response (its body must have been read)."""
    status = response.status_code
    code, message, param, kind = f"http_{status}", response.reason_phrase or "error", None, None
    try:
        payload = response.json()
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
        param = error.get("param") if isinstance(error.get("param"), str) else None
        kind = error.get("type") if isinstance(error.get("type"), str) else None
    elif response.text:
        message = response.text[:500]
    cls = error_class(status)
    if cls is RateLimited:
        return RateLimited(
            status,
            code,
            message,
            param,
            type=kind,
            headers=response.headers,
            retry_after_s=retry_after_s(response.headers, time.time()),
        )
    return cls(status, code, message, param, type=kind, headers=response.headers)


def parse(response: httpx.Response, model: type[M]) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise VidpipeClientError(
            f"unexpected answer from {response.request.method} {response.request.url.path}: "
            f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}"
        ) from exc


class Waiter:
    """The polling decisions of ``wait``: what to report, when to poll next, when to stop."""

    def __init__(
        self,
        timeout_s: float,
        poll_interval_s: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self._clock = clock
        self._deadline: float = clock() + timeout_s
        self._reported: int | None = None

    def progressed(self, video: Video) -> bool:
        """True the first time and whenever the progress went up since the last report."""
        if self._reported is not None and video.progress <= self._reported:
            return False
        self._reported = video.progress
        return True

    def next_delay(self, video: Video, headers: Mapping[str, str]) -> float:
        """Seconds until the next poll of a video that has not completed.

        Raises :class:`VideoFailed` when it ended otherwise, :class:`WaitTimeout` when the
        time is up.
        """
        if video.terminal:
            raise VideoFailed(video)
        left = self._deadline - self._clock()
        if left <= 0:
            raise WaitTimeout(video, self.timeout_s)
        interval = (
            self.poll_interval_s if self.poll_interval_s is not None else poll_after_s(headers)
        )
        return min(max(interval, 0.01), left)
