"""Webhook endpoints of tenants, and the fan-out of job events to them.

A delivery is an outbox row written in the transaction of the state change it
announces; it is signed when it is sent (a fresh timestamp), with the endpoint's
secret, or the tenant's secret for a request's own ``webhook_url``.

The fan-out reads a tenant's endpoints through a short cache (store/cache.py): an
endpoint added, deleted or disabled through this module in this process counts at
once; one changed by another process counts within a few seconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.ids import new_id
from vidpipe.notify import outbox
from vidpipe.notify.signing import new_secret
from vidpipe.store import cache
from vidpipe.store.schema import tenants, webhook_endpoints

EVENT_TYPES = (
    "video.queued",
    "video.in_progress",
    "video.completed",
    "video.failed",
    "video.canceled",
    "video.expired",
)
ROTATION_OVERLAP_S = 24 * 3600.0
_ENDPOINTS = "webhook_endpoints"
_TENANT_SECRET = "tenant_webhook_secret"
_ACTIVE_ENDPOINTS = select(
    webhook_endpoints.c.id, webhook_endpoints.c.url, webhook_endpoints.c.events
).where(
    webhook_endpoints.c.tenant_id == bindparam("tenant_id"),
    webhook_endpoints.c.disabled_at.is_(None),
)
_SECRET = select(tenants.c.webhook_secret).where(tenants.c.id == bindparam("tenant_id"))


async def create_endpoint(
    conn: AsyncConnection,
    tenant_id: str,
    url: str,
    events: Sequence[str],
    description: str | None,
    now: float,
) -> dict[str, Any]:
    endpoint = {
        "id": new_id("whep"),
        "tenant_id": tenant_id,
        "url": url,
        "events": list(events),
        "secret": new_secret(),
        "description": description,
        "created_at": now,
    }
    await conn.execute(insert(webhook_endpoints).values(**endpoint))
    cache.invalidate(conn, _ENDPOINTS)
    return endpoint


async def get_endpoint(
    conn: AsyncConnection, tenant_id: str, endpoint_id: str
) -> dict[str, Any] | None:
    row = (
        (
            await conn.execute(
                select(webhook_endpoints).where(
                    webhook_endpoints.c.id == endpoint_id,
                    webhook_endpoints.c.tenant_id == tenant_id,
                )
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def list_endpoints(conn: AsyncConnection, tenant_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(webhook_endpoints)
        .where(webhook_endpoints.c.tenant_id == tenant_id)
        .order_by(webhook_endpoints.c.created_at)
    )
    return [dict(r) for r in rows.mappings()]


async def delete_endpoint(conn: AsyncConnection, tenant_id: str, endpoint_id: str) -> bool:
    result = await conn.execute(
        webhook_endpoints.delete().where(
            webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.tenant_id == tenant_id
        )
    )
    cache.invalidate(conn, _ENDPOINTS)
    return result.rowcount == 1


async def rotate_secret(
    conn: AsyncConnection, tenant_id: str, endpoint_id: str, now: float
) -> str | None:
    """A new secret; the old one keeps signing for a day, so receivers can switch."""
    current = await get_endpoint(conn, tenant_id, endpoint_id)
    if current is None:
        return None
    secret = new_secret()
    await conn.execute(
        update(webhook_endpoints)
        .where(webhook_endpoints.c.id == endpoint_id)
        .values(
            secret=secret,
            previous_secret=current["secret"],
            previous_expires_at=now + ROTATION_OVERLAP_S,
        )
    )
    return secret


async def set_disabled(
    conn: AsyncConnection, endpoint_id: str, reason: str | None, now: float
) -> None:
    await conn.execute(
        update(webhook_endpoints)
        .where(webhook_endpoints.c.id == endpoint_id)
        .values(disabled_at=now if reason else None, disabled_reason=reason)
    )
    cache.invalidate(conn, _ENDPOINTS)


async def tenant_secret(conn: AsyncConnection, tenant_id: str) -> str:
    """The secret that signs deliveries to requests' own webhook URLs (made on first use).

    Once made it never changes, so it is cached."""

    async def load() -> str | None:
        value = await conn.scalar(_SECRET, {"tenant_id": tenant_id})
        return str(value) if value else None

    secret = await cache.cached(conn, _TENANT_SECRET, tenant_id, load)
    if secret:
        return secret
    await conn.execute(
        update(tenants)
        .where(tenants.c.id == tenant_id, tenants.c.webhook_secret.is_(None))
        .values(webhook_secret=new_secret())
    )
    cache.invalidate(conn, _TENANT_SECRET)
    again = await conn.scalar(_SECRET, {"tenant_id": tenant_id})
    return str(again)


async def signing_secrets(
    conn: AsyncConnection, tenant_id: str | None, endpoint_id: str | None, now: float
) -> list[str]:
    if endpoint_id is None:
        return [await tenant_secret(conn, tenant_id)] if tenant_id else []
    row = (
        await conn.execute(
            select(
                webhook_endpoints.c.secret,
                webhook_endpoints.c.previous_secret,
                webhook_endpoints.c.previous_expires_at,
            ).where(webhook_endpoints.c.id == endpoint_id)
        )
    ).first()
    if row is None:
        return []
    found = [str(row[0])]
    if row[1] and row[2] and row[2] > now:
        found.append(str(row[1]))
    return found


async def _active_endpoints(
    conn: AsyncConnection, tenant_id: str
) -> list[tuple[str, str, list[str] | None]]:
    """(id, url, events) of the tenant's enabled endpoints, cached for a few seconds."""

    async def load() -> list[tuple[str, str, list[str] | None]]:
        rows = await conn.execute(_ACTIVE_ENDPOINTS, {"tenant_id": tenant_id})
        return [(str(r[0]), str(r[1]), r[2]) for r in rows]

    return await cache.cached(conn, _ENDPOINTS, tenant_id, load)


async def fan_out(
    conn: AsyncConnection,
    *,
    tenant_id: str,
    job_id: str,
    event_type: str,
    video: dict[str, Any],
    request_url: str | None,
    now: float,
) -> int:
    """Queue one delivery per interested endpoint (and the request's own URL)."""
    body = {
        "type": event_type,
        "timestamp": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(),
        "data": video,
    }
    targets: list[tuple[str, str | None]] = []
    if request_url:
        # The secret exists before the delivery does (made here, in the write
        # transaction, not later by the sender inside a read).
        await tenant_secret(conn, tenant_id)
        targets.append((request_url, None))
    for endpoint, url, events in await _active_endpoints(conn, tenant_id):
        if not events or event_type in events:
            targets.append((url, endpoint))
    for url, endpoint_id in targets:
        await outbox.enqueue(
            conn,
            kind="webhook",
            target=url,
            payload={"webhook_id": new_id("msg"), "body": body},
            now=now,
            tenant_id=tenant_id,
            endpoint_id=endpoint_id,
            job_id=job_id,
            event_type=event_type,
        )
    return len(targets)
