"""A fake Kling AI API (``/v1/videos/text2video`` and ``/image2video``), in memory.

Checks the self-minted JWT the real API wants (HS256 with the secret key, ``iss`` the
access key, ``nbf``/``exp`` against the fake's clock) and answers every call in Kling's
envelope ``{code, message, request_id, data}`` with Kling's codes (1000-1004 auth,
1102 resource pack depleted, 1201 bad parameters, 1301 content safety, 1302 rate
limit, 5001 unavailable). Tasks move submitted → processing → succeed/failed
(``task_status_msg``), are read back on the endpoint that made them, and carry
``task_result.videos[].url`` on the fake that can expire (404). ``external_task_id``
must be unique, as Kling requires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vidpipe.testing.fakes._common_rkvl import FakeFailure, FakeJob, FakeProviderState, Phase

__all__ = ["FakeKlingState", "create_fake_kling"]

_MODELS = (
    "kling-v1",
    "kling-v1-6",
    "kling-v2-master",
    "kling-v2-1-master",
    "kling-v2-5-turbo",
    "kling-v2-6",
)
_STATUSES = {
    Phase.QUEUED: "submitted",
    Phase.RUNNING: "processing",
    Phase.SUCCEEDED: "succeed",
    Phase.FAILED: "failed",
}

CONTENT_POLICY = FakeFailure(
    "Failure to pass the risk control system, please modify the prompt.", content_policy=True
)
GENERATION_FAILURE = FakeFailure("Video generation failed, please try again later.")


@dataclass
class FakeKlingState(FakeProviderState):
    access_key: str = "ak-fake-kling"
    secret_key: str = "sk-fake-kling-secret"
    # The next create answers this (HTTP status, Kling code, message) instead.
    next_create_error: tuple[int, int, str] | None = None
    # The endpoint each task was created on: it is only found there.
    endpoints: dict[str, str] = field(default_factory=dict)

    def block_next_for_content_policy(self) -> None:
        self.fail_next = CONTENT_POLICY


def create_fake_kling(state: FakeKlingState) -> Starlette:
    def envelope(
        code: int,
        message: str,
        data: Any = None,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Response:
        body = {"code": code, "message": message, "request_id": str(uuid.uuid4()), "data": data}
        return JSONResponse(body, status_code=status, headers=headers)

    def auth_problem(request: Request) -> Response | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            return envelope(1000, "Authorization is empty", status=401)
        claims = _verify_hs256(token, state.secret_key)
        if claims is None or claims.get("iss") != state.access_key:
            return envelope(1002, "Authorization is invalid", status=401)
        now = state.clock()
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
            return envelope(1004, "Authorization is expired", status=401)
        if isinstance(claims.get("nbf"), int) and claims["nbf"] > now:
            return envelope(1003, "Authorization is not yet valid", status=401)
        return None

    def task(job: FakeJob, phase: Phase, request: Request) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task_id": job.id,
            "task_status": _STATUSES[phase],
            "task_info": {"external_task_id": job.body.get("external_task_id")},
            "created_at": int(job.created_at * 1000),
            "updated_at": int(state.clock() * 1000),
        }
        if phase is Phase.FAILED and job.failure is not None:
            data["task_status_msg"] = job.failure.message
        if phase is Phase.SUCCEEDED:
            token = state.issue_output(job.id)
            origin = str(request.base_url).rstrip("/")
            duration = job.body.get("duration", "5")
            data["task_result"] = {
                "videos": [
                    {
                        "id": f"v{job.id}",
                        "url": f"{origin}/_fake/outputs/{token}.mp4",
                        "duration": duration,
                    }
                ]
            }
        return data

    async def create(request: Request) -> Response:
        refused = auth_problem(request)
        if refused is not None:
            return refused
        state.create_attempts += 1
        if state.next_create_error is not None:
            status, code, message = state.next_create_error
            state.next_create_error = None
            return envelope(code, message, status=status)
        fault = state.take_create_fault()
        if fault == 429:
            return envelope(
                1302,
                "The API request rate exceeds the limit",
                status=429,
                headers={"retry-after": str(state.retry_after_s)},
            )
        if fault is not None:
            return envelope(5001, "Service temporarily unavailable", status=fault)
        try:
            body = await request.json()
        except ValueError:
            return envelope(1200, "Invalid request body", status=400)
        endpoint = request.path_params["endpoint"]
        problem = state.take_refusal() or _validate(body, endpoint, state)
        if problem is not None:
            return envelope(1201, problem, status=400)
        task_id = str(random.randrange(10**17, 10**18))
        job = state.new_job(task_id, body)
        state.endpoints[task_id] = endpoint
        return envelope(0, "SUCCEED", task(job, Phase.QUEUED, request))

    async def get_task(request: Request) -> Response:
        refused = auth_problem(request)
        if refused is not None:
            return refused
        job = state.jobs.get(request.path_params["task_id"])
        if job is None or state.endpoints[job.id] != request.path_params["endpoint"]:
            return envelope(1203, "Resource not found", status=404)
        return envelope(0, "SUCCEED", task(job, job.observe(), request))

    async def download(request: Request) -> Response:
        found = state.read_output(request.path_params["token"])
        if isinstance(found, int):
            return Response("Not Found", status_code=found)
        return Response(found, media_type="video/mp4")

    endpoint = "{endpoint:str}"
    return Starlette(
        routes=[
            Route(f"/v1/videos/{endpoint}", create, methods=["POST"]),
            Route(f"/v1/videos/{endpoint}/{{task_id}}", get_task, methods=["GET"]),
            Route("/_fake/outputs/{token}.mp4", download, methods=["GET"]),
        ]
    )


def _validate(body: Any, endpoint: str, state: FakeKlingState) -> str | None:
    if endpoint not in ("text2video", "image2video"):
        return f"Unsupported endpoint {endpoint}"
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    if body.get("model_name", "kling-v1") not in _MODELS:
        return f"model_name is invalid: {body.get('model_name')}"
    prompt = body.get("prompt")
    if endpoint == "text2video" and (not isinstance(prompt, str) or not prompt):
        return "prompt is required"
    if isinstance(prompt, str) and len(prompt) > 2500:
        return "prompt cannot exceed 2500 characters"
    if body.get("mode", "std") not in ("std", "pro"):
        return "mode must be std or pro"
    if body.get("duration", "5") not in ("5", "10"):
        return "duration must be '5' or '10'"
    if endpoint == "text2video" and body.get("aspect_ratio", "16:9") not in ("16:9", "9:16", "1:1"):
        return "aspect_ratio must be 16:9, 9:16 or 1:1"
    if endpoint == "image2video":
        image = body.get("image")
        if not isinstance(image, str) or not image:
            return "image is required"
        if image.startswith("data:"):
            return "image: base64 must not carry a data: prefix"
    external = body.get("external_task_id")
    if external is not None and any(
        j.body.get("external_task_id") == external for j in state.jobs.values()
    ):
        return f"external_task_id {external} already exists"
    return None


def _verify_hs256(token: str, secret: str) -> dict[str, Any] | None:
    """The claims of a valid HS256 JWT, else None (written apart from the adapter's
    encoder so a mistake there is caught here)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header = json.loads(_unb64url(parts[0]))
        claims = json.loads(_unb64url(parts[1]))
        signature = _unb64url(parts[2])
    except (ValueError, binascii.Error):
        return None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        return None
    expected = hmac.new(
        secret.encode(), f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256
    ).digest()
    if not hmac.compare_digest(signature, expected) or not isinstance(claims, dict):
        return None
    return claims


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
