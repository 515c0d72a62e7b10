"""Small JSON routes the UI needs beyond the public API, scoped to the caller's tenant.

``/ui/api/session`` (who the key is), ``/ui/api/videos/{id}/detail`` (steps, attempts,
events and signed media links of one video), ``/ui/api/videos/{id}/media`` (the links
alone) and ``/ui/api/keys`` (list, create, revoke
the tenant's keys; secrets are never listed, a new one is returned once).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from vidpipe.api.auth import Authenticator, Principal, principal
from vidpipe.api.schemas import VideoObject
from vidpipe.core.requests import CreateVideo
from vidpipe.core.runtime import Runtime
from vidpipe.errors import Forbidden, NotFound
from vidpipe.money.units import to_usd
from vidpipe.store import jobs as job_q
from vidpipe.store import steps as step_q
from vidpipe.store import tenants as tenant_q
from vidpipe.store.records import ApiKey, Attempt, Event, Job, Step
from vidpipe.web import media

router = APIRouter(prefix="/ui/api")
Caller = Annotated[Principal, Depends(principal)]

# The timeline shows the newest events of a job; progress ticks can be many.
MAX_EVENTS = 500
_NO_STORE = {"Cache-Control": "no-store"}


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.get("/session")
async def session(request: Request, caller: Caller) -> dict[str, Any]:
    """Who the caller is; a 401 here is how the login page tells a bad key."""
    runtime = _rt(request)
    auth: Authenticator = request.app.state.auth
    async with runtime.db.read() as conn:
        tenant = await tenant_q.get_tenant(conn, caller.tenant_id)
    return {
        "tenant_id": caller.tenant_id,
        "tenant_name": tenant.name if tenant else caller.tenant_id,
        "scope": caller.scope,
        "key_id": caller.key_id,
        "auth": "open" if auth.open_tenant_id is not None else "key",
        "default_model": runtime.settings.default_model,
    }


def _step(step: Step) -> dict[str, Any]:
    return {
        "id": step.id,
        "name": step.name,
        "kind": step.kind,
        "state": step.state,
        "model": f"{step.provider}/{step.model}",
        "fallbacks": step.fallbacks,
        "progress": step.progress,
        "attempt_count": step.attempt_count,
        "error_code": step.error_code,
        "error_message": step.error_message,
        "created_at": step.created_at,
        "updated_at": step.updated_at,
        "finished_at": step.finished_at,
    }


def _attempt(attempt: Attempt, step_names: dict[str, str]) -> dict[str, Any]:
    return {
        "id": attempt.id,
        "step": step_names.get(attempt.step_id, attempt.step_id),
        "number": attempt.number,
        "state": attempt.state,
        "model": f"{attempt.provider}/{attempt.model}",
        "provider_job_id": attempt.provider_job_id,
        "error_class": attempt.error_class,
        "error_code": attempt.error_code,
        "error_message": attempt.error_message,
        "money_state": attempt.money_state,
        "reserved_usd": to_usd(attempt.reserved_micros),
        "cost_usd": to_usd(attempt.cost_micros) if attempt.cost_micros is not None else None,
        "created_at": attempt.created_at,
        "submitted_at": attempt.submitted_at,
        "finished_at": attempt.finished_at,
    }


def _event(event: Event) -> dict[str, Any]:
    # The same shape as a frame of the SSE streams, so the page merges both.
    return {
        "id": event.id,
        "video_id": event.job_id,
        "type": event.type,
        "created_at": event.created_at,
        "data": event.data,
    }


def _rerun_endpoint(job: Job) -> str:
    """Where the request that made ``job`` goes to make it again."""
    return {"short": "/v1/shorts", "plan": "/v1/jobs"}.get(job.kind, "/v1/videos")


def _retry_request(job: Job) -> dict[str, Any]:
    """The create request that made ``job``, to make it again from scratch."""
    if job.kind in ("short", "plan"):
        body = dict(job.params)
        if job.kind == "short":
            body.pop("output", None)  # what the plan made of it, not part of the request
        return body
    params = dict(job.params)
    requested = params.pop("requested_model", None)
    # Only what a create request may carry (params may hold more than the request).
    body = {
        k: v
        for k, v in params.items()
        if k in CreateVideo.model_fields and v is not None and v != [] and v != {}
    }
    body["model"] = requested or job.model
    body.pop("aspect_ratio", None)  # the resolved size is in the body already
    body.setdefault("prompt", job.prompt or "")
    body.setdefault("seconds", job.seconds)
    body.setdefault("size", job.size)
    return body


@router.get("/videos/{video_id}/detail")
async def video_detail(video_id: str, request: Request, caller: Caller) -> JSONResponse:
    """The video with its steps, attempts, newest events and signed media links."""
    runtime = _rt(request)
    job = await runtime.videos.get(caller.tenant_id, video_id)  # 404 for others' videos
    async with runtime.db.read() as conn:
        steps = await step_q.steps_of_job(conn, job.id)
        attempts = await step_q.attempts_of_job(conn, job.id)
        events = await job_q.list_events(conn, job.id)
    money = await runtime.videos.costs([job.id])
    names = {s.id: s.name for s in steps}
    body = {
        "video": VideoObject.from_job(job, money.get(job.id, (0, 0))).model_dump(mode="json"),
        "steps": [_step(s) for s in steps],
        "attempts": [_attempt(a, names) for a in attempts],
        "events": [_event(e) for e in events[-MAX_EVENTS:]],
        "events_truncated": len(events) > MAX_EVENTS,
        "media": await media.links(request, job),
        "retry_request": _retry_request(job),
        "retry_endpoint": _rerun_endpoint(job),
    }
    return JSONResponse(body, headers=_NO_STORE)


@router.get("/videos/{video_id}/media")
async def video_media(video_id: str, request: Request, caller: Caller) -> JSONResponse:
    """Signed media links of one video (for the review queue, which needs no more)."""
    job = await _rt(request).videos.get(caller.tenant_id, video_id)  # 404 for others'
    return JSONResponse({"media": await media.links(request, job)}, headers=_NO_STORE)


def _key(key: ApiKey, caller: Principal) -> dict[str, Any]:
    return {
        "id": key.id,
        "prefix": key.prefix,
        "name": key.name,
        "scope": key.scope,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
        "current": key.id == caller.key_id,
    }


@router.get("/keys")
async def list_keys(request: Request, caller: Caller) -> JSONResponse:
    runtime = _rt(request)
    async with runtime.db.read() as conn:
        keys = await tenant_q.list_keys(conn, caller.tenant_id)
    return JSONResponse(
        {"object": "list", "data": [_key(k, caller) for k in reversed(keys)]}, headers=_NO_STORE
    )


class KeyCreate(BaseModel):
    model_config = {"extra": "forbid"}

    name: str | None = Field(default=None, max_length=100)
    scope: Literal["user", "admin"] = "user"


@router.post("/keys", status_code=201)
async def create_key(body: KeyCreate, request: Request, caller: Caller) -> JSONResponse:
    """A new key of the caller's tenant; the secret is in this response only."""
    if body.scope == "admin" and caller.scope != "admin":
        raise Forbidden("only an admin key can create admin keys", code="admin_required")
    runtime = _rt(request)
    async with runtime.db.write() as conn:
        record, secret = await tenant_q.create_api_key(
            conn,
            caller.tenant_id,
            scope=body.scope,
            name=(body.name or "").strip() or None,
            now=runtime.clock.now(),
        )
    return JSONResponse({**_key(record, caller), "key": secret}, status_code=201, headers=_NO_STORE)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request, caller: Caller) -> JSONResponse:
    runtime = _rt(request)
    async with runtime.db.write() as conn:
        found = [k for k in await tenant_q.list_keys(conn, caller.tenant_id) if k.id == key_id]
        if not found:
            raise NotFound(f"no key {key_id!r}", code="key_not_found")
        if found[0].scope == "admin" and caller.scope != "admin":
            raise Forbidden("only an admin key can revoke admin keys", code="admin_required")
        if found[0].revoked_at is None:
            await tenant_q.revoke_key(conn, key_id, runtime.clock.now())
        keys = await tenant_q.list_keys(conn, caller.tenant_id)
    record = next(k for k in keys if k.id == key_id)
    return JSONResponse(_key(record, caller), headers=_NO_STORE)
