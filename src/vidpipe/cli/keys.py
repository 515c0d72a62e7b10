"""API key commands."""

from __future__ import annotations

import asyncio
import time

from vidpipe.config import Settings
from vidpipe.errors import NotFound
from vidpipe.store import migrate
from vidpipe.store import tenants as tenant_q
from vidpipe.store.db import Database
from vidpipe.store.records import ApiKey


async def create_key(
    settings: Settings, tenant: str, scope: str, name: str | None
) -> tuple[ApiKey, str]:
    settings.home.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
    db = Database(settings.resolved_database_url)
    try:
        async with db.write() as conn:
            record = await tenant_q.ensure_tenant(conn, tenant, time.time())
            return await tenant_q.create_api_key(
                conn, record.id, scope=scope, name=name, now=time.time()
            )
    finally:
        await db.dispose()


async def list_keys(settings: Settings, tenant: str) -> list[ApiKey]:
    db = Database(settings.resolved_database_url)
    try:
        async with db.read() as conn:
            record = await tenant_q.get_tenant_by_name(conn, tenant)
            if record is None:
                raise NotFound(f"no tenant {tenant!r}", code="tenant_not_found")
            return await tenant_q.list_keys(conn, record.id)
    finally:
        await db.dispose()


async def revoke_key(settings: Settings, key: str) -> None:
    db = Database(settings.resolved_database_url)
    try:
        async with db.write() as conn:
            await tenant_q.revoke_key(conn, key, time.time())
    finally:
        await db.dispose()
