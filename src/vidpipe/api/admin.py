"""Tenants and API keys. Operators (admin keys) manage every tenant; any caller sees
and revokes its own tenant's keys."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from vidpipe.api.auth import Principal, principal, require_admin
from vidpipe.core.runtime import Runtime
from vidpipe.errors import NotFound
from vidpipe.store import tenants as tenant_q
from vidpipe.store.records import ApiKey, Tenant

router = APIRouter(tags=["admin"])
Caller = Annotated[Principal, Depends(principal)]
Admin = Annotated[Principal, Depends(require_admin)]


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _tenant(t: Tenant) -> dict[str, Any]:
    return {
        "id": t.id,
        "object": "tenant",
        "name": t.name,
        "billing_mode": t.billing_mode,
        "retention_days": t.retention_days,
        "limits": t.limits or {},
        "require_review": bool(t.require_review),
        "created_at": int(t.created_at),
    }


def _key(k: ApiKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "object": "api_key",
        "prefix": k.prefix,
        "scope": k.scope,
        "name": k.name,
        "created_at": int(k.created_at),
        "last_used_at": int(k.last_used_at) if k.last_used_at else None,
        "revoked_at": int(k.revoked_at) if k.revoked_at else None,
    }


class TenantCreate(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class KeyCreate(BaseModel):
    model_config = {"extra": "forbid"}

    scope: Literal["user", "admin"] = "user"
    name: str | None = Field(default=None, max_length=100)


async def _find(runtime: Runtime, name_or_id: str) -> Tenant:
    async with runtime.db.read() as conn:
        tenant = await tenant_q.get_tenant_by_name(conn, name_or_id) or await tenant_q.get_tenant(
            conn, name_or_id
        )
    if tenant is None:
        raise NotFound(f"no tenant {name_or_id!r}", code="tenant_not_found")
    return tenant


@router.post("/v1/tenants", status_code=201)
async def create_tenant(body: TenantCreate, request: Request, _admin: Admin) -> JSONResponse:
    runtime = _rt(request)
    async with runtime.db.write() as conn:
        tenant = await tenant_q.create_tenant(conn, body.name, runtime.clock.now())
    return JSONResponse(_tenant(tenant), status_code=201)


@router.get("/v1/tenants")
async def list_tenants(request: Request, _admin: Admin) -> dict[str, Any]:
    runtime = _rt(request)
    async with runtime.db.read() as conn:
        tenants = await tenant_q.list_tenants(conn)
    return {"object": "list", "data": [_tenant(t) for t in tenants]}


@router.get("/v1/tenants/{tenant}")
async def get_tenant(tenant: str, request: Request, _admin: Admin) -> dict[str, Any]:
    return _tenant(await _find(_rt(request), tenant))


@router.post("/v1/tenants/{tenant}/keys", status_code=201)
async def create_key(tenant: str, body: KeyCreate, request: Request, _admin: Admin) -> JSONResponse:
    """A new key; the key itself is in this response only (it is stored hashed)."""
    runtime = _rt(request)
    record = await _find(runtime, tenant)
    async with runtime.db.write() as conn:
        key, secret = await tenant_q.create_api_key(
            conn, record.id, scope=body.scope, name=body.name, now=runtime.clock.now()
        )
    return JSONResponse({**_key(key), "key": secret}, status_code=201)


@router.get("/v1/tenants/{tenant}/keys")
async def list_tenant_keys(tenant: str, request: Request, _admin: Admin) -> dict[str, Any]:
    runtime = _rt(request)
    record = await _find(runtime, tenant)
    async with runtime.db.read() as conn:
        keys = await tenant_q.list_keys(conn, record.id)
    return {"object": "list", "data": [_key(k) for k in keys]}


@router.get("/v1/keys")
async def list_own_keys(request: Request, caller: Caller) -> dict[str, Any]:
    runtime = _rt(request)
    async with runtime.db.read() as conn:
        keys = await tenant_q.list_keys(conn, caller.tenant_id)
    return {"object": "list", "data": [_key(k) for k in keys]}


@router.delete("/v1/keys/{key_id}")
async def revoke_key(key_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    """Revoke a key of the caller's tenant (admins: of any tenant). Effective within
    seconds on every API process (keys are cached briefly)."""
    runtime = _rt(request)
    async with runtime.db.write() as conn:
        owner = await tenant_q.key_tenant(conn, key_id)
        if owner is None or (owner != caller.tenant_id and caller.scope != "admin"):
            raise NotFound(f"no key {key_id!r}", code="key_not_found")
        await tenant_q.revoke_key(conn, key_id, runtime.clock.now())
    request.app.state.auth.forget(key_id)
    return {"id": key_id, "object": "api_key.revoked", "revoked": True}
