"""Short-lived, per-process caches of rows that every request reads and few write.

Tenant settings (usage limits, review, retention), price overrides and webhook
endpoints are read on every ``POST /v1/videos`` (price overrides on every attempt, the
retention as every job completes), but change only by an admin's or a tenant's explicit
call. Each is kept here for ``ttl_s`` (5 s).

Staleness, by design:
- a write made through vidpipe's functions in **this** process is seen at once: the
  writer invalidates the cache when it writes and again when its transaction commits
  (so a read that raced the commit is not kept either);
- a write made by **another** process (a second API process, a worker, the CLI) is seen
  within ``ttl_s``: for up to 5 s a new usage limit is not applied yet, a changed price
  override is not used by new estimates yet, a new or disabled webhook endpoint is
  not in the fan-out yet, and a changed retention does not set the expiry of the jobs
  completing meanwhile.

What guards money is never cached: budgets, reservations, the prepaid balance and the
billing mode are read in the transaction that uses them.

Each :class:`~vidpipe.store.db.Database` owns one cache; the query functions, which
only see a connection, find it with :func:`cache_of`.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")

CACHE_TTL_S = 5.0
_MAX_KEYS = 10_000  # per name; past it the name starts again empty
_PENDING = "vidpipe_cache_invalidate_on_commit"
_CACHES: weakref.WeakKeyDictionary[Engine, ReadCache] = weakref.WeakKeyDictionary()


class ReadCache:
    """Values by (name, key), each kept for ``ttl_s`` after it was loaded."""

    def __init__(
        self, ttl_s: float = CACHE_TTL_S, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self._monotonic = monotonic
        self._values: dict[str, dict[Hashable, tuple[float, Any]]] = {}
        self._generations: dict[str, int] = {}

    async def get(self, name: str, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        """The cached value, or ``await load()`` (kept unless invalidated meanwhile)."""
        values = self._values.get(name)
        if values is None:
            values = self._values[name] = {}
        found = values.get(key)
        now = self._monotonic()
        if found is not None and found[0] > now:
            value: T = found[1]
            return value
        generation = self._generations.get(name, 0)
        value = await load()
        if self._generations.get(name, 0) == generation:
            if len(values) >= _MAX_KEYS:
                values.clear()
            values[key] = (now + self.ttl_s, value)
        return value

    def invalidate(self, name: str) -> None:
        """Forget every value of ``name``, and any load of it still under way."""
        self._generations[name] = self._generations.get(name, 0) + 1
        self._values.pop(name, None)

    def attach(self, engine: Engine) -> None:
        """Serve the connections of ``engine`` (see :func:`cache_of`)."""
        _CACHES[engine] = self

    def settle(self, conn: AsyncConnection) -> None:
        """After a transaction on ``conn`` ended: repeat its writers' invalidations."""
        for name in conn.info.pop(_PENDING, ()):
            self.invalidate(name)


def cache_of(conn: AsyncConnection) -> ReadCache | None:
    """The cache of the Database ``conn`` belongs to (None for a bare engine's)."""
    return _CACHES.get(conn.sync_engine)


async def cached(
    conn: AsyncConnection, name: str, key: Hashable, load: Callable[[], Awaitable[T]]
) -> T:
    """``load()`` through the cache of ``conn``'s Database, if it has one."""
    cache = _CACHES.get(conn.sync_engine)
    if cache is None:
        return await load()
    return await cache.get(name, key, load)


def invalidate(conn: AsyncConnection, name: str) -> None:
    """Called by a function that writes rows cached as ``name``: forget them now, and
    again when the transaction of ``conn`` ends (``Database.write`` calls settle)."""
    cache = _CACHES.get(conn.sync_engine)
    if cache is None:
        return
    cache.invalidate(name)
    conn.info.setdefault(_PENDING, set()).add(name)
