"""A fake fal.ai queue: submit, status, result, cancel, JWKS and Ed25519-signed webhooks.

Speaks the documented wire format: ``Authorization: Key``, ``{request_id, response_url,
status_url, cancel_url}`` on submit, ``IN_QUEUE`` / ``IN_PROGRESS`` / ``COMPLETED``
statuses under the app (``{owner}/{alias}``), model errors as a ``detail`` list of
``{loc, msg, type}``, infrastructure errors as ``detail`` + ``error_type`` (also in
``X-Fal-Error-Type``), and webhooks signed over request id, user id, timestamp and
the body's SHA-256. The signing key is the test's; ``/.well-known/jwks.json`` serves
its public half.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
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

__all__ = ["FakeFalState", "create_fake_fal", "jwk_x"]

FAILURE_DETAIL = "The runner failed while processing the request"
CONTENT_POLICY_MSG = (
    "The content could not be processed because it was flagged by a content checker."
)
# Input rules of the endpoints the fake serves (fal model pages).
_ENDPOINTS: dict[str, dict[str, Any]] = {
    "fal-ai/minimax/hailuo-02/standard/text-to-video": {"durations": {"6", "10"}},
    "fal-ai/minimax/hailuo-02/standard/image-to-video": {
        "durations": {"6", "10"},
        "image": "image_url",
    },
    "fal-ai/kling-video/v2.1/master/text-to-video": {
        "durations": {"5", "10"},
        "aspects": {"16:9", "9:16", "1:1"},
    },
    "fal-ai/kling-video/v2.1/master/image-to-video": {
        "durations": {"5", "10"},
        "image": "image_url",
    },
}


def jwk_x(key: Ed25519PrivateKey) -> str:
    """The JWK ``x`` (unpadded base64url) of a private key's public half."""
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class FakeFalState(FakeProviderState):
    signing_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    user_id: str = "github|fake-user"
    base_url: str = "https://queue.fal.run"

    def webhook(
        self,
        request_id: str,
        *,
        timestamp: int | None = None,
        key: Ed25519PrivateKey | None = None,
        tamper: bool = False,
    ) -> tuple[dict[str, str], bytes]:
        """The completion webhook of a request: lower-case headers and body.

        ``key`` signs with another key (a forgery); ``tamper`` changes the body after
        signing. Sending the same pair again is a duplicate (or, later, a replay).
        """
        job = self.jobs[request_id]
        body = json.dumps(self.webhook_body(job)).encode()
        sent_at = str(int(self.clock()) if timestamp is None else timestamp)
        message = "\n".join(
            (request_id, self.user_id, sent_at, hashlib.sha256(body).hexdigest())
        ).encode()
        signature = (key or self.signing_key).sign(message).hex()
        headers = {
            "x-fal-webhook-request-id": request_id,
            "x-fal-webhook-user-id": self.user_id,
            "x-fal-webhook-timestamp": sent_at,
            "x-fal-webhook-signature": signature,
            "content-type": "application/json",
        }
        if tamper:
            body = body.replace(b'"status"', b'"status" ', 1)
        return headers, body

    def webhook_body(self, job: FakeJob) -> dict[str, Any]:
        body: dict[str, Any] = {"request_id": job.id, "gateway_request_id": job.id}
        if job.canceled:
            return body | {"status": "ERROR", "error": "Request was cancelled", "payload": None}
        if job.outcome is Outcome.SUCCEED:
            return body | {"status": "OK", "payload": self.result(job)}
        status, payload = _failure(job)
        return body | {
            "status": "ERROR",
            "error": f"Invalid status code: {status}",
            "payload": payload,
        }

    def result(self, job: FakeJob) -> dict[str, Any]:
        return {
            "video": {
                "url": f"{self.base_url}/files/{self.output_token(job)}",
                "content_type": "video/mp4",
                "file_name": "output.mp4",
                "file_size": len(self.video),
            }
        }


def create_fake_fal(state: FakeFalState) -> Starlette:
    """The fake as an ASGI app; ``state`` is shared with the test."""

    def guarded(request: Request) -> Response | None:
        state.base_url = external_base(request)
        if state.take_server_error():
            return Response(
                "<html><body><h1>503 Service Temporarily Unavailable</h1>nginx</body></html>", 503
            )
        if request.headers.get("authorization") != f"Key {state.api_key}":
            return JSONResponse({"detail": "No user found for Key ID and Secret"}, status_code=401)
        return None

    def find(request: Request) -> FakeJob | None:
        job = state.jobs.get(request.path_params["request_id"])
        app = f"{request.path_params['owner']}/{request.path_params['alias']}"
        if job is None or not job.model.startswith(app + "/"):
            return None
        return job

    async def submit(request: Request) -> Response:
        if (early := guarded(request)) is not None:
            return early
        state.create_attempts += 1
        if state.take_rate_limit():
            return JSONResponse(
                {"detail": "Too many requests"},
                status_code=429,
                headers={"Retry-After": str(state.retry_after_s)},
            )
        endpoint = request.path_params["endpoint"]
        rules = _ENDPOINTS.get(endpoint)
        if rules is None:
            return JSONResponse({"detail": f"Application {endpoint!r} not found"}, status_code=404)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"detail": "Invalid JSON body"}, status_code=400)
        problems = _invalid(rules, body)
        if problems:
            return JSONResponse({"detail": problems}, status_code=422)
        job = state.new_job(
            str(uuid.uuid4()), endpoint, body, request.query_params.get("fal_webhook")
        )
        app_url = f"{state.base_url}/{'/'.join(endpoint.split('/')[:2])}/requests/{job.id}"
        return JSONResponse(
            {
                "request_id": job.id,
                "gateway_request_id": job.id,
                "response_url": app_url,
                "status_url": f"{app_url}/status",
                "cancel_url": f"{app_url}/cancel",
                "queue_position": 0,
            }
        )

    async def status(request: Request) -> Response:
        if (early := guarded(request)) is not None:
            return early
        job = find(request)
        if job is None:
            return JSONResponse({"detail": "Request not found"}, status_code=404)
        phase = job.advance()
        response_url = f"{state.base_url}{request.url.path.removesuffix('/status')}"
        if phase is Phase.QUEUED:
            return JSONResponse(
                {"status": "IN_QUEUE", "queue_position": 0, "response_url": response_url},
                status_code=202,
            )
        if phase is Phase.RUNNING:
            logs = [{"message": f"step {job.polls}", "level": "INFO", "source": "user"}]
            return JSONResponse(
                {"status": "IN_PROGRESS", "logs": logs, "response_url": response_url},
                status_code=202,
            )
        body: dict[str, Any] = {
            "status": "COMPLETED",
            "logs": [],
            "metrics": {"inference_time": 1.5},
            "response_url": response_url,
        }
        if phase is Phase.CANCELED:
            body |= {"error": "Request was cancelled", "error_type": "client_cancelled"}
        elif job.outcome is Outcome.FAIL:
            body |= {"error": FAILURE_DETAIL, "error_type": "runner_server_error"}
        return JSONResponse(body)

    async def result(request: Request) -> Response:
        if (early := guarded(request)) is not None:
            return early
        job = find(request)
        if job is None:
            return JSONResponse({"detail": "Request not found"}, status_code=404)
        phase = job.phase()
        if phase in (Phase.QUEUED, Phase.RUNNING):
            return JSONResponse({"detail": "Request is still in progress"}, status_code=400)
        if phase is Phase.CANCELED:
            return _request_error(499, "Request was cancelled", "client_cancelled")
        if job.outcome is Outcome.SUCCEED:
            return JSONResponse(state.result(job), headers={"x-fal-request-id": job.id})
        status, payload = _failure(job)
        headers = {"x-fal-request-id": job.id, "x-fal-retryable": "false"}
        if "error_type" in payload:
            headers["x-fal-error-type"] = payload["error_type"]
        return JSONResponse(payload, status_code=status, headers=headers)

    async def cancel(request: Request) -> Response:
        if (early := guarded(request)) is not None:
            return early
        job = find(request)
        if job is None:
            return JSONResponse({"detail": "Request not found"}, status_code=404)
        state.cancels += 1
        phase = job.phase()
        if phase in (Phase.DONE, Phase.CANCELED):
            return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
        # fal stops only requests that have not started; a running one runs on.
        if phase is Phase.QUEUED:
            job.canceled = True
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

    async def jwks(request: Request) -> Response:
        key = {"kty": "OKP", "crv": "Ed25519", "kid": "fake-1", "x": jwk_x(state.signing_key)}
        return JSONResponse({"keys": [key]})

    async def files(request: Request) -> Response:
        return state.serve_file(
            request.path_params["token"],
            lambda: JSONResponse({"detail": "File not found"}, status_code=404),
        )

    app_path = "/{owner}/{alias}/requests/{request_id}"
    return Starlette(
        routes=[
            Route("/.well-known/jwks.json", jwks, methods=["GET"]),
            Route("/files/{token}", files, methods=["GET"]),
            Route(app_path + "/status", status, methods=["GET"]),
            Route(app_path + "/cancel", cancel, methods=["PUT"]),
            Route(app_path, result, methods=["GET"]),
            Route("/{endpoint:path}", submit, methods=["POST"]),
        ]
    )


def _invalid(rules: dict[str, Any], body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return [_detail(["body"], "Input should be a valid dictionary", "dict_type")]
    problems = []
    if not isinstance(body.get("prompt"), str) or not body["prompt"].strip():
        problems.append(_detail(["body", "prompt"], "Field required", "missing"))
    image = rules.get("image")
    if image and not body.get(image):
        problems.append(_detail(["body", image], "Field required", "missing"))
    if "duration" in body and body["duration"] not in rules["durations"]:
        allowed = " or ".join(f"'{d}'" for d in sorted(rules["durations"], key=int))
        problems.append(_detail(["body", "duration"], f"Input should be {allowed}", "enum"))
    if "aspect_ratio" in body and body["aspect_ratio"] not in rules.get("aspects", ()):
        problems.append(_detail(["body", "aspect_ratio"], "Input should be a known ratio", "enum"))
    return problems


def _detail(loc: list[str], msg: str, type: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": type, "url": f"https://docs.fal.ai/errors#{type}"}


def _failure(job: FakeJob) -> tuple[int, dict[str, Any]]:
    """The result's HTTP status and error body for a job that failed."""
    if job.outcome is Outcome.CONTENT_POLICY:
        detail = _detail(["body", "prompt"], CONTENT_POLICY_MSG, "content_policy_violation")
        return 422, {"detail": [detail]}
    return 500, {"detail": FAILURE_DETAIL, "error_type": "runner_server_error"}


def _request_error(status: int, detail: str, error_type: str) -> Response:
    return JSONResponse(
        {"detail": detail, "error_type": error_type},
        status_code=status,
        headers={"x-fal-error-type": error_type},
    )
