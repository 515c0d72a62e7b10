"""A fake Replicate API: official-model predictions, cancel, signed webhooks, delivery files.

Speaks the documented wire format: ``Authorization: Bearer``, prediction objects with
``starting`` / ``processing`` / ``succeeded`` / ``failed`` / ``canceled`` / ``aborted``,
tqdm progress in ``logs``, RFC 7807 problem+json errors, 429 with Retry-After, and
Standard Webhooks signatures (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vidpipe.providers.replicate import sign_standard_webhook, standard_webhook_key
from vidpipe.testing.fakes._common_rfm import (
    FakeJob,
    FakeProviderState,
    Outcome,
    Phase,
    external_base,
)

__all__ = ["FakeReplicateState", "create_fake_replicate"]

FAILURE_MESSAGE = "Prediction failed: the model ran out of memory (E1001)"
CONTENT_POLICY_MESSAGE = (
    "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
)
_ANY_DURATION = frozenset(range(-1, 16)) - {0}
# What each official model's input schema accepts (replicate.com model API pages).
_MODELS: dict[str, dict[str, Any]] = {
    "minimax/hailuo-02": {
        "durations": {6, 10},
        "resolutions": {"512p", "768p", "1080p"},
        "image": "first_frame_image",
        "longest_1080p_s": 6,
    },
    "minimax/hailuo-2.3": {
        "durations": {6, 10},
        "resolutions": {"768p", "1080p"},
        "image": "first_frame_image",
        "longest_1080p_s": 6,
    },
    "bytedance/seedance-2.0": {
        "durations": _ANY_DURATION,
        "resolutions": {"480p", "720p", "1080p"},
        "aspects": {"16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "adaptive"},
    },
    "bytedance/seedance-2.0-fast": {
        "durations": _ANY_DURATION,
        "resolutions": {"480p", "720p", "1080p"},
        "aspects": {"16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "adaptive"},
    },
    "wan-video/wan-2.5-i2v": {
        "durations": {5, 10},
        "resolutions": {"480p", "720p", "1080p"},
        "image": "image",
        "image_required": True,
    },
}


def _new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass
class FakeReplicateState(FakeProviderState):
    webhook_secret: str = field(default_factory=_new_secret)
    # Where clients reached the fake, for URLs in predictions and webhooks.
    base_url: str = "https://api.replicate.com"

    def prediction(self, job: FakeJob) -> dict[str, Any]:
        """The prediction object of ``job`` as it stands (without moving it)."""
        return _prediction(self, job, job.phase())

    def webhook(
        self,
        job_id: str,
        *,
        timestamp: int | None = None,
        webhook_id: str | None = None,
        secret: str | None = None,
        tamper: bool = False,
    ) -> tuple[dict[str, str], bytes]:
        """A webhook delivery for the job's current state: lower-case headers and body.

        ``secret`` signs with another secret (a forgery); ``tamper`` changes the body
        after signing; the same ``webhook_id`` twice is a duplicate delivery.
        """
        body = json.dumps(self.prediction(self.jobs[job_id])).encode()
        sent_at = int(self.clock()) if timestamp is None else timestamp
        msg_id = webhook_id or "msg_" + secrets.token_hex(12)
        key = standard_webhook_key(secret or self.webhook_secret)
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(sent_at),
            "webhook-signature": sign_standard_webhook(key, msg_id, sent_at, body),
            "content-type": "application/json",
        }
        if tamper:
            body = body.replace(b'"status"', b'"status" ', 1)
        return headers, body


def create_fake_replicate(state: FakeReplicateState) -> Starlette:
    """The fake as an ASGI app; ``state`` is shared with the test."""

    def guarded(request: Request) -> Response | None:
        state.base_url = external_base(request)
        if state.take_server_error():
            return Response("<html><body>503 Service Unavailable</body></html>", 503)
        if request.headers.get("authorization") != f"Bearer {state.api_key}":
            return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        return None

    async def create(request: Request) -> Response:
        if (early := guarded(request)) is not None:
            return early
        state.create_attempts += 1
        if state.take_rate_limit():
            return _problem(
                429,
                "Request was throttled",
                f"Request was throttled. Expected available in {state.retry_after_s} second.",
                headers={"Retry-After": str(state.retry_after_s)},
            )
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        rules = _MODELS.get(model)
        if rules is None:
            return _problem(404, "Not found", f"Model {model} does not exist")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _problem(400, "Invalid JSON", "The request body is not valid JSON")
        problems = _invalid_fields(rules, body.get("input") if isinstance(body, dict) else None)
        if problems:
            return _problem(
                422,
                "Input validation failed",
                "\n".join(f"- {p}" for p in problems),
                extra={"invalid_fields": [{"type": "invalid", "details": p} for p in problems]},
            )
        webhook = body.get("webhook")
        job = state.new_job(
            secrets.token_hex(13),
            model,
            body["input"],
            webhook if isinstance(webhook, str) else None,
        )
        return JSONResponse(_prediction(state, job, job.phase()), status_code=201)

    async def get(request: Request) -> Response:
        if (early := guarded(request)) is not None:
            return early
        job = state.jobs.get(request.path_params["id"])
        if job is None:
            return _problem(404, "Not found", "Not found.")
        return JSONResponse(_prediction(state, job, job.advance()))

    async def cancel(request: Request) -> Response:
        if (early := guarded(request)) is not None:
            return early
        job = state.jobs.get(request.path_params["id"])
        if job is None:
            return _problem(404, "Not found", "Not found.")
        state.cancels += 1
        if job.phase() in (Phase.QUEUED, Phase.RUNNING):
            job.canceled = True
        return JSONResponse(_prediction(state, job, job.phase()))

    async def secret(request: Request) -> Response:
        if (early := guarded(request)) is not None:
            return early
        return JSONResponse({"key": state.webhook_secret})

    async def delivery(request: Request) -> Response:
        return state.serve_file(request.path_params["token"], lambda: Response("Not Found", 404))

    return Starlette(
        routes=[
            Route("/v1/models/{owner}/{name}/predictions", create, methods=["POST"]),
            Route("/v1/predictions/{id}", get, methods=["GET"]),
            Route("/v1/predictions/{id}/cancel", cancel, methods=["POST"]),
            Route("/v1/webhooks/default/secret", secret, methods=["GET"]),
            Route("/files/{token}", delivery, methods=["GET"]),
        ]
    )


def _invalid_fields(rules: dict[str, Any], input: Any) -> list[str]:
    if not isinstance(input, dict):
        return ["input: input is required and must be an object"]
    problems = []
    image_field = rules.get("image")
    has_prompt = isinstance(input.get("prompt"), str) and input["prompt"].strip()
    if not has_prompt and not (image_field and input.get(image_field)):
        problems.append("input.prompt: prompt is required")
    if rules.get("image_required") and not input.get(image_field):
        problems.append(f"input.{image_field}: {image_field} is required")
    if "duration" in input and input["duration"] not in rules["durations"]:
        allowed = ", ".join(str(d) for d in sorted(rules["durations"]))
        problems.append(f"input.duration: duration must be one of the following: {allowed}")
    if "resolution" in input and input["resolution"] not in rules["resolutions"]:
        problems.append("input.resolution: resolution is not one of the allowed values")
    if "aspect_ratio" in input and input["aspect_ratio"] not in rules.get("aspects", ()):
        problems.append("input.aspect_ratio: aspect_ratio is not one of the allowed values")
    longest = rules.get("longest_1080p_s")
    if longest and input.get("resolution") == "1080p" and input.get("duration", 0) > longest:
        problems.append(f"input.duration: 1080p videos are at most {longest} s long")
    return problems


def _prediction(state: FakeReplicateState, job: FakeJob, phase: Phase) -> dict[str, Any]:
    base = state.base_url
    created = _iso(job.created_at)
    started = None if phase is Phase.QUEUED else _iso(job.created_at + 1)
    status, output, error, logs = "starting", None, None, ""
    if phase is Phase.RUNNING:
        status = "processing"
        percent = int(job.running_share * 100)
        logs = f"Generating video\n{percent:3d}%|{'#' * (percent // 10):<10}| {percent}/100"
    elif phase is Phase.CANCELED:
        status = "canceled"
    elif phase is Phase.DONE:
        if job.outcome is Outcome.SUCCEED:
            status = "succeeded"
            output = f"{base}/files/{state.output_token(job)}"
        elif job.outcome is Outcome.ABORTED:
            status, started = "aborted", None
        else:
            status = "failed"
            error = (
                CONTENT_POLICY_MESSAGE if job.outcome is Outcome.CONTENT_POLICY else FAILURE_MESSAGE
            )
    terminal = status in ("succeeded", "failed", "canceled", "aborted")
    return {
        "id": job.id,
        "model": job.model,
        "version": "hidden",
        "input": job.input,
        "logs": logs,
        "output": output,
        "data_removed": False,
        "error": error,
        "status": status,
        "created_at": created,
        "started_at": started,
        "completed_at": _iso(job.created_at + 2) if terminal else None,
        "urls": {
            "get": f"{base}/v1/predictions/{job.id}",
            "cancel": f"{base}/v1/predictions/{job.id}/cancel",
        },
        "metrics": {"predict_time": 1.0} if status == "succeeded" else {},
    }


def _problem(
    status: int,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        **(extra or {}),
    }
    return JSONResponse(
        body, status_code=status, headers=headers, media_type="application/problem+json"
    )


def _iso(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat().replace("+00:00", "Z")
