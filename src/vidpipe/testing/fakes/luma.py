"""A fake Luma Dream Machine API (``/dream-machine/v1``), in memory.

Bearer key; ``POST /generations/video`` validated like the SDK's params and answering
the whole ``Generation``; ``GET /generations/{id}`` moving queued → dreaming →
completed/failed (``failure_reason``); ``DELETE /generations/{id}`` (then 404); errors
as ``{"detail": "…"}``; ``assets.video`` URLs on the fake that can expire (403, like
the pre-signed storage URLs Luma hands out).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from vidpipe.testing.fakes._common_rkvl import (
    FakeFailure,
    FakeJob,
    FakeProviderState,
    Phase,
    iso_utc,
)

__all__ = ["FakeLumaState", "create_fake_luma"]

PREFIX = "/dream-machine/v1"
_MODELS = ("ray-1-6", "ray-2", "ray-flash-2")
_ASPECTS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
_STATES = {
    Phase.QUEUED: "queued",
    Phase.RUNNING: "dreaming",
    Phase.SUCCEEDED: "completed",
    Phase.FAILED: "failed",
}

CONTENT_POLICY = FakeFailure(
    "400: prompt not allowed because advanced moderation failed", content_policy=True
)
GENERATION_FAILURE = FakeFailure("500: internal error while generating the video")


@dataclass
class FakeLumaState(FakeProviderState):
    api_key: str = "luma-test-key"
    expired_status: int = 403

    def block_next_for_content_policy(self) -> None:
        self.fail_next = CONTENT_POLICY


def create_fake_luma(state: FakeLumaState) -> Starlette:
    def error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {state.api_key}"

    def generation(request: Request, job: FakeJob, phase: Phase) -> dict[str, Any]:
        assets: dict[str, str] | None = None
        if phase is Phase.SUCCEEDED:
            token = state.issue_output(job.id)
            assets = {"video": f"{_origin(request)}/_fake/outputs/{token}.mp4"}
        return {
            "id": job.id,
            "generation_type": "video",
            "state": _STATES[phase],
            "failure_reason": job.failure.message
            if phase is Phase.FAILED and job.failure
            else None,
            "created_at": iso_utc(job.created_at),
            "assets": assets,
            "model": job.body.get("model"),
            "request": job.body,
        }

    async def create(request: Request) -> Response:
        if not authorized(request):
            return error(401, "Invalid API key")
        state.create_attempts += 1
        fault = state.take_create_fault()
        if fault == 429:
            return error(429, "Too many requests", {"retry-after": str(state.retry_after_s)})
        if fault is not None:
            return error(fault, "Service temporarily unavailable")
        try:
            body = await request.json()
        except ValueError:
            return error(400, "Invalid JSON body")
        problem = state.take_refusal() or _validate(body)
        if problem is not None:
            return error(400, problem)
        job = state.new_job(str(uuid.uuid4()), body)
        return JSONResponse(generation(request, job, Phase.QUEUED), status_code=201)

    async def get_generation(request: Request) -> Response:
        if not authorized(request):
            return error(401, "Invalid API key")
        job = state.jobs.get(request.path_params["generation_id"])
        if job is None or job.deleted:
            return error(404, "Generation not found")
        return JSONResponse(generation(request, job, job.observe()))

    async def delete_generation(request: Request) -> Response:
        if not authorized(request):
            return error(401, "Invalid API key")
        job = state.jobs.get(request.path_params["generation_id"])
        if job is None or job.deleted:
            return error(404, "Generation not found")
        if not job.phase.terminal:
            job.canceled = True
        job.deleted = True
        return Response(status_code=204)

    async def download(request: Request) -> Response:
        found = state.read_output(request.path_params["token"])
        if isinstance(found, int):
            return Response("AccessDenied: Request has expired", status_code=found)
        return Response(found, media_type="video/mp4")

    api = [
        Route("/generations/video", create, methods=["POST"]),
        Route("/generations/{generation_id}", get_generation, methods=["GET"]),
        Route("/generations/{generation_id}", delete_generation, methods=["DELETE"]),
    ]
    return Starlette(
        routes=[
            Mount(PREFIX, routes=api),
            Route("/_fake/outputs/{token}.mp4", download, methods=["GET"]),
        ]
    )


def _validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "Body must be a JSON object"
    if body.get("model") not in _MODELS:
        return f"model: Input should be {', '.join(map(repr, _MODELS))}"
    if "aspect_ratio" in body and body["aspect_ratio"] not in _ASPECTS:
        return f"aspect_ratio: Input should be one of {', '.join(_ASPECTS)}"
    if "duration" in body and body["duration"] not in ("5s", "9s"):
        return "duration: Input should be '5s' or '9s'"
    if "resolution" in body and body["resolution"] not in ("540p", "720p", "1080p", "4k"):
        return "resolution: Input should be '540p', '720p', '1080p' or '4k'"
    keyframes = body.get("keyframes")
    if keyframes is not None:
        frame0 = keyframes.get("frame0") if isinstance(keyframes, dict) else None
        if not isinstance(frame0, dict) or frame0.get("type") != "image" or not frame0.get("url"):
            return "keyframes.frame0: expected {type: 'image', url}"
    if not isinstance(body.get("prompt"), str) and keyframes is None:
        return "prompt: a prompt or keyframes are required"
    return None


def _origin(request: Request) -> str:
    # Inside a Mount, base_url carries the mount path; outputs live at the root.
    return f"{request.url.scheme}://{request.url.netloc}"
