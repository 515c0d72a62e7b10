"""A fake MiniMax video API: create, query, file retrieve, and the file download itself.

Speaks the documented wire format: ``Authorization: Bearer``, answers as HTTP 200 with
``base_resp {status_code, status_msg}`` (non-zero is an error: 1002 throttled, 1004
auth, 1026 sensitive prompt, 1027 sensitive output, 2013 invalid parameters), task
statuses ``Preparing`` / ``Queueing`` / ``Processing`` / ``Success`` / ``Fail``, and
``file_id`` → ``file.download_url`` (a signed link that answers 403 once expired).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vidpipe.testing.fakes._common_rfm import (
    FakeJob,
    FakeProviderState,
    Outcome,
    Phase,
    external_base,
)

__all__ = ["FakeMiniMaxState", "create_fake_minimax"]

_RESOLUTION_SIZES = {
    "512P": (912, 512),
    "720P": (1280, 720),
    "768P": (1366, 768),
    "1080P": (1920, 1080),
}
_MODELS: dict[str, dict[str, Any]] = {
    "MiniMax-Hailuo-02": {"resolutions": {"512P", "768P", "1080P"}, "durations": {6, 10}},
    "MiniMax-Hailuo-2.3": {"resolutions": {"768P", "1080P"}, "durations": {6, 10}},
    "T2V-01-Director": {"resolutions": {"720P"}, "durations": {6}},
    "T2V-01": {"resolutions": {"720P"}, "durations": {6}},
    "I2V-01-Director": {"resolutions": {"720P"}, "durations": {6}, "image_required": True},
    "I2V-01-live": {"resolutions": {"720P"}, "durations": {6}, "image_required": True},
    "I2V-01": {"resolutions": {"720P"}, "durations": {6}, "image_required": True},
}


@dataclass
class FakeMiniMaxState(FakeProviderState):
    # Prompts with any of these words are refused at create (base_resp 1026).
    sensitive_words: tuple[str, ...] = ("forbidden",)
    # The next N requests are throttled by the edge with HTTP 429 and Retry-After,
    # before MiniMax's own base_resp 1002 (``rate_limited_creates``) could answer.
    edge_throttles: int = 0
    # MiniMax's download links last 9 hours.
    output_ttl_s: float = 9 * 3600.0


def create_fake_minimax(state: FakeMiniMaxState) -> Starlette:
    """The fake as an ASGI app; ``state`` is shared with the test."""
    files: dict[str, FakeJob] = {}

    def guarded(request: Request) -> Response | None:
        if state.take_server_error():
            return Response("<html><body>502 Bad Gateway</body></html>", 502)
        if state.edge_throttles > 0:
            state.edge_throttles -= 1
            return Response(
                "Too Many Requests", 429, headers={"Retry-After": str(state.retry_after_s)}
            )
        if request.headers.get("authorization") != f"Bearer {state.api_key}":
            return _base_resp(
                1004,
                "login fail: Please carry the API secret key in the 'Authorization' field "
                "of the request header",
            )
        return None

    async def create(request: Request) -> Response:
        if (early := guarded(request)) is not None:
            return early
        state.create_attempts += 1
        if state.take_rate_limit():
            return _base_resp(1002, "rate limit exceeded, please retry later", task_id="")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _base_resp(2013, "invalid params, request body is not JSON", task_id="")
        problem = _invalid(body)
        if problem:
            return _base_resp(2013, f"invalid params, {problem}", task_id="")
        prompt = str(body.get("prompt", "")).lower()
        if any(word in prompt for word in state.sensitive_words):
            return _base_resp(1026, "input new_sensitive", task_id="")
        task_id = str(secrets.randbelow(10**15) + 10**14)
        state.new_job(task_id, body["model"], body, body.get("callback_url"))
        return _base_resp(0, "success", task_id=task_id)

    async def query(request: Request) -> Response:
        if (early := guarded(request)) is not None:
            return early
        job = state.jobs.get(request.query_params.get("task_id", ""))
        if job is None:
            return _base_resp(2013, "invalid params, task_id not found")
        phase = job.advance()
        width, height = _size(job)
        fields: dict[str, Any] = {
            "task_id": job.id,
            "file_id": "",
            "video_width": 0,
            "video_height": 0,
        }
        if phase is Phase.QUEUED:
            return _base_resp(
                0, "success", **fields, status="Preparing" if job.polls == 1 else "Queueing"
            )
        if phase is Phase.RUNNING:
            return _base_resp(0, "success", **fields, status="Processing")
        if phase is Phase.DONE and job.outcome is Outcome.SUCCEED:
            file_id = f"{job.id}01"
            files[file_id] = job
            fields |= {"file_id": file_id, "video_width": width, "video_height": height}
            return _base_resp(0, "success", **fields, status="Success")
        if job.outcome is Outcome.CONTENT_POLICY:
            return _base_resp(1027, "output new_sensitive", **fields, status="Fail")
        # A plain failure: the query worked, the task did not, and no reason is given.
        return _base_resp(0, "success", **fields, status="Fail")

    async def retrieve(request: Request) -> Response:
        if (early := guarded(request)) is not None:
            return early
        file_id = request.query_params.get("file_id", "")
        job = files.get(file_id)
        if job is None:
            return _base_resp(2013, "invalid params, file_id not found")
        token = state.output_token(job)
        file = {
            "file_id": int(file_id),
            "bytes": len(state.video),
            "created_at": int(job.created_at),
            "filename": "output.mp4",
            "purpose": "video_generation",
            "download_url": f"{external_base(request)}/files/{token}?Expires=9h&Signature=fake",
        }
        return _base_resp(0, "success", file=file)

    async def download(request: Request) -> Response:
        return state.serve_file(
            request.path_params["token"],
            lambda: Response(
                "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
                "<Message>Request has expired.</Message></Error>",
                403,
                media_type="application/xml",
            ),
        )

    return Starlette(
        routes=[
            Route("/v1/video_generation", create, methods=["POST"]),
            Route("/v1/query/video_generation", query, methods=["GET"]),
            Route("/v1/files/retrieve", retrieve, methods=["GET"]),
            Route("/files/{token}", download, methods=["GET"]),
        ]
    )


def _invalid(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be an object"
    rules = _MODELS.get(body.get("model", ""))
    if rules is None:
        return f"unknown model {body.get('model')!r}"
    if not isinstance(body.get("prompt"), str) and not body.get("first_frame_image"):
        return "prompt is required"
    if len(body.get("prompt") or "") > 2000:
        return "prompt is longer than 2000 characters"
    if rules.get("image_required") and not body.get("first_frame_image"):
        return "first_frame_image is required for this model"
    duration = body.get("duration", 6)
    resolution = body.get("resolution", "768P" if "Hailuo" in body["model"] else "720P")
    if duration not in rules["durations"]:
        return f"duration {duration} is not supported by {body['model']}"
    if resolution not in rules["resolutions"]:
        return f"resolution {resolution} is not supported by {body['model']}"
    if resolution == "1080P" and duration != 6:
        return "1080P supports only 6 s"
    return None


def _size(job: FakeJob) -> tuple[int, int]:
    resolution = job.input.get("resolution") or ("768P" if "Hailuo" in job.model else "720P")
    return _RESOLUTION_SIZES.get(str(resolution), (1280, 720))


def _base_resp(status_code: int, status_msg: str, **fields: Any) -> JSONResponse:
    return JSONResponse(
        {**fields, "base_resp": {"status_code": status_code, "status_msg": status_msg}}
    )
