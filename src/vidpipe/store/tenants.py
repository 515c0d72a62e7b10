"""Tenants and their API keys (stored as SHA-256 hashes, never in clear)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.errors import Conflict, NotFound
from vidpipe.ids import new_id, new_secret
from vidpipe.store import cache
from vidpipe.store.records import ApiKey, Tenant
from vidpipe.store.schema import api_keys, tenants

KEY_SCOPES = ("admin", "user")


def hash_key(key: str) -> str:
    # Keys carry 192 random bits, so a fast hash is enough: no dictionary to attack.
    return hashlib.sha256(key.encode()).hexdigest()


async def create_tenant(conn: AsyncConnection, name: str, now: float) -> Tenant:
    tenant = Tenant(id=new_id("ten"), name=name, created_at=now)
    try:
        await conn.execute(tenants.insert().values(id=tenant.id, name=name, created_at=now))
    except IntegrityError as exc:
        raise Conflict(f"tenant {name!r} exists", code="tenant_exists") from exc
    return tenant


async def get_tenant_by_name(conn: AsyncConnection, name: str) -> Tenant | None:
    row = (await conn.execute(select(tenants).where(tenants.c.name == name))).mappings().first()
    return Tenant.from_row(row) if row else None


async def get_tenant(conn: AsyncConnection, tenant_id: str) -> Tenant | None:
    row = (await conn.execute(select(tenants).where(tenants.c.id == tenant_id))).mappings().first()
    return Tenant.from_row(row) if row else None


@dataclass(frozen=True)
class TenantSettings:
    """What creating and completing a video need to know about its tenant."""

    limits: dict[str, Any] | None = None
    require_review: bool = False
    retention_days: int | None = None


_SETTINGS = select(tenants.c.limits, tenants.c.require_review, tenants.c.retention_days).where(
    tenants.c.id == bindparam("tenant_id")
)


async def tenant_settings(conn: AsyncConnection, tenant_id: str) -> TenantSettings:
    """Usage limits, review and retention settings of a tenant (defaults if there is no
    such tenant).

    Cached: a change made by another process applies within a few seconds
    (store/cache.py); ``update_tenant`` in this process applies at once.
    """

    async def load() -> TenantSettings:
        row = (await conn.execute(_SETTINGS, {"tenant_id": tenant_id})).first()
        if row is None:
            return TenantSettings()
        return TenantSettings(row[0], bool(row[1]), int(row[2]) if row[2] is not None else None)

    return await cache.cached(conn, "tenant_settings", tenant_id, load)


async def update_tenant(conn: AsyncConnection, tenant_id: str, values: dict[str, Any]) -> None:
    """Set columns of a tenant (billing mode, retention, limits, review)."""
    await conn.execute(update(tenants).where(tenants.c.id == tenant_id).values(**values))
    cache.invalidate(conn, "tenant_settings")


async def ensure_tenant(conn: AsyncConnection, name: str, now: float) -> Tenant:
    return await get_tenant_by_name(conn, name) or await create_tenant(conn, name, now)


async def create_api_key(
    conn: AsyncConnection, tenant_id: str, *, scope: str, name: str | None, now: float
) -> tuple[ApiKey, str]:
    """Returns the key record and the key itself, which is shown once and not stored."""
    if scope not in KEY_SCOPES:
        raise ValueError(f"scope must be one of {KEY_SCOPES}")
    prefix = "vp_" + new_secret(6)[:8].replace("-", "x").replace("_", "x")
    secret = f"{prefix}_{new_secret(24)}"
    record = ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        prefix=prefix,
        scope=scope,
        name=name,
        created_at=now,
        last_used_at=None,
        revoked_at=None,
    )
    await conn.execute(
        api_keys.insert().values(
            id=record.id,
            tenant_id=tenant_id,
            prefix=prefix,
            key_hash=hash_key(secret),
            scope=scope,
            name=name,
            created_at=now,
        )
    )
    return record, secret


async def find_active_key(conn: AsyncConnection, key: str) -> ApiKey | None:
    row = (
        (
            await conn.execute(
                select(api_keys).where(
                    api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at.is_(None)
                )
            )
        )
        .mappings()
        .first()
    )
    return ApiKey.from_row(row) if row else None


async def touch_key(conn: AsyncConnection, key_id: str, now: float) -> None:
    await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now))


async def list_keys(conn: AsyncConnection, tenant_id: str) -> list[ApiKey]:
    rows = await conn.execute(
        select(api_keys).where(api_keys.c.tenant_id == tenant_id).order_by(api_keys.c.id)
    )
    return [ApiKey.from_row(r) for r in rows.mappings()]


async def revoke_key(conn: AsyncConnection, key_id_or_prefix: str, now: float) -> None:
    result = await conn.execute(
        update(api_keys)
        .where(
            (api_keys.c.id == key_id_or_prefix) | (api_keys.c.prefix == key_id_or_prefix),
            api_keys.c.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    if result.rowcount == 0:
        raise NotFound(f"no active key {key_id_or_prefix!r}", code="key_not_found")


async def retention_days(conn: AsyncConnection, tenant_id: str) -> int | None:
    """Read as each job completes: from the cached settings (``tenant_settings``)."""
    return (await tenant_settings(conn, tenant_id)).retention_days


async def set_retention_days(conn: AsyncConnection, tenant_id: str, days: int | None) -> None:
    await update_tenant(conn, tenant_id, {"retention_days": days})


async def list_tenants(conn: AsyncConnection) -> list[Tenant]:
    rows = await conn.execute(select(tenants).order_by(tenants.c.name))
    return [Tenant.from_row(r) for r in rows.mappings()]


async def key_tenant(conn: AsyncConnection, key_id: str) -> str | None:
    value = await conn.scalar(select(api_keys.c.tenant_id).where(api_keys.c.id == key_id))
    return str(value) if value is not None else None
