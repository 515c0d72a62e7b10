"""``/v1/webhook-endpoints``: where a tenant's video events go, and what happened."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import insert, select

from vidpipe.api.auth import Principal, principal
from vidpipe.core.runtime import Runtime
from vidpipe.errors import NotFound
from vidpipe.ids import new_id
from vidpipe.notify import webhooks
from vidpipe.store.schema import outbox

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhooks"])
Caller = Annotated[Principal, Depends(principal)]


class EndpointCreate(BaseModel):
    model_config = {"extra": "forbid"}

    url: str = Field(min_length=1, max_length=2000)
    events: list[str] = Field(default_factory=list, description="Empty: every event.")
    description: str | None = Field(default=None, max_length=200)

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(webhooks.EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown events {unknown}; known: {', '.join(webhooks.EVENT_TYPES)}")
        return value


def _public(endpoint: dict[str, Any], *, with_secret: bool = False) -> dict[str, Any]:
    view = {
        "id": endpoint["id"],
        "object": "webhook_endpoint",
        "url": endpoint["url"],
        "events": endpoint["events"] or list(webhooks.EVENT_TYPES),
        "description": endpoint.get("description"),
        "enabled": endpoint.get("disabled_at") is None,
        "disabled_reason": endpoint.get("disabled_reason"),
        "created_at": int(endpoint["created_at"]),
        # Enough to tell secrets apart, never enough to use one.
        "secret_hint": endpoint["secret"][:10] + "…",
    }
    if with_secret:
        view["secret"] = endpoint["secret"]
    return view


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _endpoint(runtime: Runtime, tenant_id: str, endpoint_id: str) -> dict[str, Any]:
    async with runtime.db.read() as conn:
        endpoint = await webhooks.get_endpoint(conn, tenant_id, endpoint_id)
    if endpoint is None:
        raise NotFound(f"no webhook endpoint {endpoint_id!r}", code="webhook_endpoint_not_found")
    return endpoint


@router.post("", status_code=201)
async def create_endpoint(body: EndpointCreate, request: Request, caller: Caller) -> JSONResponse:
    """Register an endpoint; the response carries its signing secret, shown only here."""
    runtime = _rt(request)
    await runtime.guard.check(body.url)
    async with runtime.db.write() as conn:
        endpoint = await webhooks.create_endpoint(
            conn, caller.tenant_id, body.url, body.events, body.description, runtime.clock.now()
        )
    return JSONResponse(_public(endpoint, with_secret=True), status_code=201)


@router.get("")
async def list_endpoints(request: Request, caller: Caller) -> dict[str, Any]:
    runtime = _rt(request)
    async with runtime.db.read() as conn:
        endpoints = await webhooks.list_endpoints(conn, caller.tenant_id)
    return {"object": "list", "data": [_public(e) for e in endpoints]}


@router.get("/request-secret")
async def request_secret(request: Request, caller: Caller) -> dict[str, str]:
    """The secret that signs deliveries to a request's own ``webhook_url``."""
    runtime = _rt(request)
    async with runtime.db.write() as conn:
        secret = await webhooks.tenant_secret(conn, caller.tenant_id)
    return {"secret": secret}


@router.get("/{endpoint_id}")
async def get_endpoint(endpoint_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    return _public(await _endpoint(_rt(request), caller.tenant_id, endpoint_id))


@router.delete("/{endpoint_id}")
async def delete_endpoint(endpoint_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    runtime = _rt(request)
    async with runtime.db.write() as conn:
        if not await webhooks.delete_endpoint(conn, caller.tenant_id, endpoint_id):
            raise NotFound(
                f"no webhook endpoint {endpoint_id!r}", code="webhook_endpoint_not_found"
            )
    return {"id": endpoint_id, "object": "webhook_endpoint.deleted", "deleted": True}


@router.post("/{endpoint_id}/rotate-secret")
async def rotate_secret(endpoint_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    """A new secret; for a day both sign every delivery, so receivers can switch."""
    runtime = _rt(request)
    async with runtime.db.write() as conn:
        secret = await webhooks.rotate_secret(
            conn, caller.tenant_id, endpoint_id, runtime.clock.now()
        )
    if secret is None:
        raise NotFound(f"no webhook endpoint {endpoint_id!r}", code="webhook_endpoint_not_found")
    return {**_public(await _endpoint(runtime, caller.tenant_id, endpoint_id)), "secret": secret}


@router.post("/{endpoint_id}/enable")
async def enable(endpoint_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    runtime = _rt(request)
    await _endpoint(runtime, caller.tenant_id, endpoint_id)
    async with runtime.db.write() as conn:
        await webhooks.set_disabled(conn, endpoint_id, None, runtime.clock.now())
    return _public(await _endpoint(runtime, caller.tenant_id, endpoint_id))


def _delivery(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "webhook_delivery",
        "webhook_id": row.payload.get("webhook_id"),
        "event_type": row.event_type,
        "video_id": row.job_id,
        "attempts": row.attempts,
        "delivered_at": int(row.delivered_at) if row.delivered_at else None,
        "next_attempt_at": int(row.next_attempt_at) if not row.delivered_at else None,
        "last_status": row.last_status,
        "last_error": row.last_error,
        "created_at": int(row.created_at),
    }


@router.get("/{endpoint_id}/deliveries")
async def deliveries(
    endpoint_id: str, request: Request, caller: Caller, limit: int = 50
) -> dict[str, Any]:
    runtime = _rt(request)
    await _endpoint(runtime, caller.tenant_id, endpoint_id)
    async with runtime.db.read() as conn:
        rows = await conn.execute(
            select(outbox)
            .where(outbox.c.endpoint_id == endpoint_id)
            .order_by(outbox.c.created_at.desc())
            .limit(min(max(limit, 1), 200))
        )
        data = [_delivery(r) for r in rows]
    return {"object": "list", "data": data}


@router.post("/{endpoint_id}/deliveries/{delivery_id}/redeliver", status_code=202)
async def redeliver(
    endpoint_id: str, delivery_id: str, request: Request, caller: Caller
) -> dict[str, Any]:
    """Send a delivery again, with the same webhook-id (receivers deduplicate by it)."""
    runtime = _rt(request)
    endpoint = await _endpoint(runtime, caller.tenant_id, endpoint_id)
    now = runtime.clock.now()
    async with runtime.db.write() as conn:
        row = (
            await conn.execute(
                select(outbox).where(
                    outbox.c.id == delivery_id, outbox.c.endpoint_id == endpoint_id
                )
            )
        ).first()
        if row is None:
            raise NotFound(f"no delivery {delivery_id!r}", code="delivery_not_found")
        new = new_id("dlv")
        await conn.execute(
            insert(outbox).values(
                id=new,
                kind="webhook",
                target=endpoint["url"],
                payload=row.payload,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                tenant_id=caller.tenant_id,
                endpoint_id=endpoint_id,
                job_id=row.job_id,
                event_type=row.event_type,
            )
        )
    return {"id": new, "object": "webhook_delivery", "redelivery_of": delivery_id}
