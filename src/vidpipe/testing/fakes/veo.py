"""A fake Gemini API for Veo: long-running operations and file downloads, in memory.

``x-goog-api-key`` on every call (missing: 403 PERMISSION_DENIED; wrong: 400
INVALID_ARGUMENT with ErrorInfo reason API_KEY_INVALID, as Google answers);
``POST /v1beta/models/{model}:predictLongRunning`` validated per the Veo 3.1 table;
``GET /v1beta/{operation}`` with ``done`` flipping after N polls to a response
(``generateVideoResponse.generatedSamples[].video.uri``), an ``error``, or a
safety-filtered result (``raiMediaFilteredCount``); ``GET /v1beta/files/{id}:download``
that needs the key, can redirect to a keyless storage URL, and forgets files after a
TTL. Errors are ``{"error": {code, message, status, details}}``; a 429 carries its wait
in a google.rpc.RetryInfo detail. Static-webhook deliveries can be built signed
(Standard Webhooks), wrongly signed or replayed.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from vidpipe.testing.fakes._common_rkvl import (
    FakeFailure,
    FakeJob,
    FakeProviderState,
    iso_utc,
    sign_standard_webhook,
)

__all__ = ["FakeVeoState", "create_fake_veo"]

_MODELS = ("veo-3.1-generate-preview", "veo-3.1-fast-generate-preview")
_GRPC = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}

GENERATION_FAILURE = FakeFailure("Video generation failed due to an internal error.", "13")
CONTENT_POLICY = FakeFailure(
    "The video was filtered because it may violate our usage guidelines.",
    content_policy=True,
)


@dataclass
class FakeVeoState(FakeProviderState):
    api_key: str = "AIza-fake-veo-key"
    webhook_secret: str = field(
        default_factory=lambda: "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    )
    # When set, downloads answer 302 to a storage URL at this origin (still served by
    # this fake), as Google's files API may hand off to a storage host.
    redirect_downloads_to: str | None = None
    # Storage downloads that arrived carrying the API key (there should be none).
    leaked_key_downloads: int = 0

    def block_next_for_content_policy(self) -> None:
        self.fail_next = CONTENT_POLICY

    def webhook(
        self,
        operation: str,
        *,
        now: float,
        secret: str | None = None,
        msg_id: str | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """A ``video.generated`` delivery for ``operation``: headers and body, signed
        with ``secret`` (default: the right one) and stamped ``now``."""
        job = self.jobs.get(operation)
        payload = {
            "type": "video.generated",
            "version": "v1",
            "timestamp": iso_utc(now),
            "data": {"id": operation} | ({"error_code": "FAILED"} if job and job.failure else {}),
        }
        body = json.dumps(payload).encode()
        headers = sign_standard_webhook(
            secret or self.webhook_secret,
            body,
            msg_id=msg_id or f"msg_{uuid.uuid4().hex}",
            timestamp=int(now),
        )
        return headers, body


def create_fake_veo(state: FakeVeoState) -> Starlette:
    def error(status: int, message: str, details: list[dict[str, Any]] | None = None) -> Response:
        body: dict[str, Any] = {"code": status, "message": message, "status": _GRPC[status]}
        if details:
            body["details"] = details
        return JSONResponse({"error": body}, status_code=status)

    def check_key(request: Request) -> Response | None:
        key = request.headers.get("x-goog-api-key")
        if not key:
            return error(403, "Method doesn't allow unregistered callers.")
        if key != state.api_key:
            return error(
                400,
                "API key not valid. Please pass a valid API key.",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                    }
                ],
            )
        return None

    async def predict(request: Request) -> Response:
        refused = check_key(request)
        if refused is not None:
            return refused
        model = request.path_params["model"]
        if model not in _MODELS:
            return error(404, f"models/{model} is not found for API version v1beta.")
        state.create_attempts += 1
        fault = state.take_create_fault()
        if fault == 429:
            return error(
                429,
                "Resource has been exhausted (e.g. check quota).",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": f"{state.retry_after_s}s",
                    }
                ],
            )
        if fault is not None:
            return error(fault, "The model is overloaded. Please try again later.")
        try:
            body = await request.json()
        except ValueError:
            return error(400, "Invalid JSON payload received.")
        problem = state.take_refusal() or _validate(body)
        if problem is not None:
            return error(400, problem)
        name = f"models/{model}/operations/{uuid.uuid4().hex[:12]}"
        state.new_job(name, body)
        return JSONResponse({"name": name})

    async def get_operation(request: Request) -> Response:
        refused = check_key(request)
        if refused is not None:
            return refused
        name = f"models/{request.path_params['model']}/operations/{request.path_params['op']}"
        job = state.jobs.get(name)
        if job is None:
            return error(404, f"Operation {name} not found.")
        phase = job.observe()
        if not phase.terminal:
            return JSONResponse({"name": name})
        return JSONResponse({"name": name, "done": True, **_outcome(request, state, job)})

    async def download_file(request: Request) -> Response:
        refused = check_key(request)
        if refused is not None:
            return refused
        token = request.path_params["file"]
        if request.query_params.get("alt") != "media":
            return error(400, "Only alt=media downloads are served by this fake.")
        if state.redirect_downloads_to is not None:
            target = f"{state.redirect_downloads_to}/_fake/storage/{token}"
            return RedirectResponse(target, status_code=302)
        found = state.read_output(token)
        if isinstance(found, int):
            return error(found, f"File files/{token} does not exist or was deleted.")
        return Response(found, media_type="video/mp4")

    async def storage(request: Request) -> Response:
        if "x-goog-api-key" in request.headers:
            state.leaked_key_downloads += 1
        found = state.read_output(request.path_params["token"])
        if isinstance(found, int):
            return Response("Not Found", status_code=found)
        return Response(found, media_type="video/mp4")

    return Starlette(
        routes=[
            Route("/v1beta/models/{model}:predictLongRunning", predict, methods=["POST"]),
            Route("/v1beta/models/{model}/operations/{op}", get_operation, methods=["GET"]),
            Route("/v1beta/files/{file}:download", download_file, methods=["GET"]),
            Route("/_fake/storage/{token}", storage, methods=["GET"]),
        ]
    )


def _outcome(request: Request, state: FakeVeoState, job: FakeJob) -> dict[str, Any]:
    video_response: dict[str, Any]
    if job.failure is not None and not job.failure.content_policy:
        return {"error": {"code": int(job.failure.code or 13), "message": job.failure.message}}
    if job.failure is not None:
        video_response = {
            "raiMediaFilteredCount": 1,
            "raiMediaFilteredReasons": [job.failure.message],
        }
    else:
        token = state.issue_output(job.id)
        uri = f"{_origin(request)}/v1beta/files/{token}:download?alt=media"
        video_response = {"generatedSamples": [{"video": {"uri": uri}}]}
    return {
        "response": {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta."
            "PredictLongRunningResponse",
            "generateVideoResponse": video_response,
        }
    }


def _validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    instances = body.get("instances")
    if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
        return "instances must hold exactly one instance."
    instance = instances[0]
    if not isinstance(instance.get("prompt"), str) and "image" not in instance:
        return "A prompt or an image is required."
    image = instance.get("image")
    if image is not None and (
        not isinstance(image, dict)
        or not image.get("bytesBase64Encoded")
        or not image.get("mimeType")
    ):
        return "image must have bytesBase64Encoded and mimeType; GCS URIs are not supported."
    params = body.get("parameters") or {}
    duration = params.get("durationSeconds", 8)
    resolution = params.get("resolution", "720p")
    if params.get("sampleCount", 1) != 1:
        return "sampleCount must be 1 for this model."
    if duration not in (4, 6, 8, "4", "6", "8"):
        return "durationSeconds must be 4, 6 or 8."
    if params.get("aspectRatio", "16:9") not in ("16:9", "9:16"):
        return "aspectRatio must be 16:9 or 9:16."
    if resolution not in ("720p", "1080p"):
        return "resolution must be 720p or 1080p."
    if resolution == "1080p" and int(duration) != 8:
        return "1080p resolution requires durationSeconds 8."
    if "seed" in params:
        return "seed parameter is not supported in the Gemini API."
    return None


def _origin(request: Request) -> str:
    return str(request.base_url).rstrip("/")
