"""A fake Runway API: the task endpoints of api.dev.runwayml.com, in memory.

Speaks the documented wire format: Bearer key and ``X-Runway-Version`` on every call,
camelCase create bodies validated per model, ``{"id"}`` from a create, tasks that pass
THROTTLED/PENDING → RUNNING (``progress`` 0..1) → SUCCEEDED/FAILED, errors as
``{"error": "…"}``, DELETE that cancels or deletes a task (after which it is 404), and
signed-looking output URLs served by the fake itself, fresh on every task read.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vidpipe.testing.fakes._common_rkvl import (
    FakeFailure,
    FakeProviderState,
    Phase,
    iso_utc,
)

__all__ = ["FakeRunwayState", "create_fake_runway"]

API_VERSION = "2024-11-06"

_GEN4_RATIOS = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
_VEO_RATIOS = ("1280:720", "720:1280", "1080:1920", "1920:1080")


@dataclass(frozen=True)
class _Rules:
    text_ratios: tuple[str, ...]
    image_ratios: tuple[str, ...]
    durations: tuple[int, ...]
    duration_required: bool


# What the real API accepts per model (provider-contracts.md, Runway section).
_MODELS = {
    "gen4_turbo": _Rules((), _GEN4_RATIOS, tuple(range(2, 11)), False),
    "gen4.5": _Rules(("1280:720", "720:1280"), _GEN4_RATIOS, tuple(range(2, 11)), True),
    "veo3.1": _Rules(_VEO_RATIOS, _VEO_RATIOS, (4, 6, 8), False),
    "veo3.1_fast": _Rules(_VEO_RATIOS, _VEO_RATIOS, (4, 6, 8), False),
    "veo3": _Rules(_VEO_RATIOS, _VEO_RATIOS, (8,), True),
}

CONTENT_POLICY = FakeFailure(
    message="The prompt text did not pass content moderation.",
    code="SAFETY.INPUT.TEXT",
    content_policy=True,
)
GENERATION_FAILURE = FakeFailure(
    message="An unexpected error occurred.", code="INTERNAL.BAD_OUTPUT.CODE01"
)


@dataclass
class FakeRunwayState(FakeProviderState):
    api_key: str = "key_" + "ab" * 64
    # Signed storage URLs answer 403 once their signature has expired.
    expired_status: int = 403

    def block_next_for_content_policy(self) -> None:
        self.fail_next = CONTENT_POLICY


def create_fake_runway(state: FakeRunwayState) -> Starlette:
    def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def check_headers(request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {state.api_key}":
            return error(401, "Invalid API key.")
        if request.headers.get("x-runway-version") != API_VERSION:
            return error(400, f"X-Runway-Version header must be {API_VERSION}.")
        return None

    async def create(request: Request) -> Response:
        refused = check_headers(request)
        if refused is not None:
            return refused
        state.create_attempts += 1
        fault = state.take_create_fault()
        if fault == 429:
            return error(
                429, "You have exceeded your rate limit.", {"retry-after": str(state.retry_after_s)}
            )
        if fault is not None:
            return error(fault, "Service unavailable, please retry.")
        try:
            body = await request.json()
        except ValueError:
            return error(400, "Request body must be JSON.")
        image = request.url.path.endswith("/image_to_video")
        problem = state.take_refusal() or _validate(body, image=image)
        if problem is not None:
            return error(400, problem)
        job = state.new_job(str(uuid.uuid4()), body)
        return JSONResponse({"id": job.id})

    async def get_task(request: Request) -> Response:
        refused = check_headers(request)
        if refused is not None:
            return refused
        job = state.jobs.get(request.path_params["task_id"])
        if job is None or job.deleted:
            return error(404, "Task not found.")
        phase = job.observe()
        task: dict[str, Any] = {"id": job.id, "createdAt": iso_utc(job.created_at)}
        if phase is Phase.QUEUED:
            # Over the concurrency limit first (THROTTLED), then waiting its turn.
            task["status"] = "THROTTLED" if job.polls < job.queued_polls else "PENDING"
        elif phase is Phase.RUNNING:
            task.update(status="RUNNING", progress=round(job.progress, 2))
        elif phase is Phase.SUCCEEDED:
            token = state.issue_output(job.id)
            task.update(status="SUCCEEDED", output=[f"{_origin(request)}/_fake/outputs/{token}"])
        elif phase is Phase.FAILED:
            assert job.failure is not None
            task.update(status="FAILED", failure=job.failure.message)
            if job.failure.code is not None:
                task["failureCode"] = job.failure.code
        else:
            task["status"] = "CANCELLED"
        return JSONResponse(task)

    async def delete_task(request: Request) -> Response:
        refused = check_headers(request)
        if refused is not None:
            return refused
        job = state.jobs.get(request.path_params["task_id"])
        if job is None or job.deleted:
            return error(404, "Task not found.")
        # Running/queued tasks are cancelled, finished ones deleted; either way a
        # later GET no longer finds the task.
        if not job.phase.terminal:
            job.canceled = True
        job.deleted = True
        return Response(status_code=204)

    async def download(request: Request) -> Response:
        found = state.read_output(request.path_params["token"])
        if isinstance(found, int):
            return Response("Request has expired", status_code=found, media_type="text/plain")
        return Response(found, media_type="video/mp4")

    return Starlette(
        routes=[
            Route("/v1/text_to_video", create, methods=["POST"]),
            Route("/v1/image_to_video", create, methods=["POST"]),
            Route("/v1/tasks/{task_id}", get_task, methods=["GET"]),
            Route("/v1/tasks/{task_id}", delete_task, methods=["DELETE"]),
            Route("/_fake/outputs/{token}", download, methods=["GET"]),
        ]
    )


def _validate(body: Any, *, image: bool) -> str | None:
    if not isinstance(body, dict):
        return "Request body must be a JSON object."
    rules = _MODELS.get(str(body.get("model")))
    if rules is None:
        return f"Invalid model: {body.get('model')!r}."
    ratios = rules.image_ratios if image else rules.text_ratios
    if not ratios:
        return f"Model {body['model']} is not available on this endpoint."
    if body.get("ratio") not in ratios:
        return f"Invalid ratio: must be one of {', '.join(ratios)}."
    text = body.get("promptText")
    if not image and not isinstance(text, str):
        return "promptText is required."
    if isinstance(text, str) and len(text.encode("utf-16-le")) // 2 > 1000:
        return "promptText must be at most 1000 characters."
    if image and not isinstance(body.get("promptImage"), str | list):
        return "promptImage is required."
    duration = body.get("duration")
    if duration is None and rules.duration_required:
        return "duration is required."
    if duration is not None and duration not in rules.durations:
        return f"Invalid duration: must be one of {', '.join(map(str, rules.durations))}."
    return None


def _origin(request: Request) -> str:
    return str(request.base_url).rstrip("/")
