"""Bearer API keys → the tenant a request acts for."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi import Request

from vidpipe.core.clock import Clock
from vidpipe.errors import Forbidden, Unauthorized
from vidpipe.store import tenants as tenant_q
from vidpipe.store.db import Database


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    key_id: str | None
    scope: str


class Authenticator:
    """Checks keys against their hashes, with a short cache.

    A revoked key stops working within ``cache_ttl_s``. ``last_used_at`` is written
    at most once a minute per key, to keep a write off every request.
    """

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        open_tenant_id: str | None = None,
        cache_ttl_s: float = 10.0,
    ) -> None:
        self.db = db
        self.clock = clock
        self.open_tenant_id = open_tenant_id
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._touched: dict[str, float] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        if self.open_tenant_id is not None:
            return Principal(self.open_tenant_id, None, "admin")
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized(
                "missing API key: send Authorization: Bearer <key>", code="missing_api_key"
            )
        key = key.strip()
        cached = self._cache.get(key)
        monotonic = time.monotonic()
        if cached is not None and cached[0] > monotonic:
            principal = cached[1]
        else:
            async with self.db.read() as conn:
                record = await tenant_q.find_active_key(conn, key)
            if record is None:
                self._cache.pop(key, None)
                raise Unauthorized("invalid or revoked API key", code="invalid_api_key")
            principal = Principal(record.tenant_id, record.id, record.scope)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (monotonic + self.cache_ttl_s, principal)
        await self._touch(principal, monotonic)
        return principal

    def forget(self, key_id: str) -> None:
        """Drop a revoked key from this process's cache at once."""
        for secret, (_until, cached) in list(self._cache.items()):
            if cached.key_id == key_id:
                self._cache.pop(secret, None)

    async def _touch(self, principal: Principal, monotonic: float) -> None:
        if principal.key_id is None or self._touched.get(principal.key_id, 0) > monotonic:
            return
        self._touched[principal.key_id] = monotonic + 60
        async with self.db.write() as conn:
            await tenant_q.touch_key(conn, principal.key_id, self.clock.now())


async def principal(request: Request) -> Principal:
    """FastAPI dependency: the caller, or 401; and the caller's rate limit, or 429."""
    auth: Authenticator = request.app.state.auth
    caller = await auth.authenticate(request.headers.get("authorization"))
    request.app.state.rate_limiter.check(caller.tenant_id)
    return caller


async def require_admin(request: Request) -> Principal:
    """FastAPI dependency: an admin key, or 403."""
    caller = await principal(request)
    if caller.scope != "admin":
        raise Forbidden("this needs an admin key", code="admin_required")
    return caller
