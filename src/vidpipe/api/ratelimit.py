"""Per-tenant request rate limits: a token bucket per tenant.

The servers of one ``vidpipe api --processes N`` share their buckets (a shared memory
table, see ``SharedBuckets``), so a tenant gets the configured rate whichever server
the kernel hands its connections to. Separate API instances (other machines, or
replicas behind a load balancer) each enforce the limit on the requests they serve:
with M of them a tenant gets up to M times the rate, which the operator accounts for
when setting it. What costs money is limited exactly, in the database (budgets,
concurrent-job limits); this protects the API itself.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
import tempfile
import time
from dataclasses import dataclass
from typing import Protocol

from vidpipe.errors import VidpipeError


class RateLimited(VidpipeError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _Buckets(Protocol):
    def take(self, tenant_id: str, now: float, per_s: float, burst: int) -> float:
        """Take one token; 0.0 when taken, else the seconds until one is there."""
        ...


@dataclass
class _Bucket:
    tokens: float
    updated: float


class LocalBuckets:
    """This process's buckets, in a dict."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}

    def take(self, tenant_id: str, now: float, per_s: float, burst: int) -> float:
        bucket = self._buckets.get(tenant_id)
        if bucket is None:
            if len(self._buckets) > 100_000:
                self._buckets.clear()
            bucket = self._buckets[tenant_id] = _Bucket(float(burst), now)
        return _take(bucket, now, per_s, burst)


def _take(bucket: _Bucket, now: float, per_s: float, burst: int) -> float:
    # max(): another process's clock read may be a hair later than ours.
    bucket.tokens = min(burst, bucket.tokens + max(0.0, now - bucket.updated) * per_s)
    bucket.updated = max(bucket.updated, now)
    if bucket.tokens < 1:
        return (1 - bucket.tokens) / per_s
    bucket.tokens -= 1
    return 0.0


class SharedBuckets:
    """Buckets in an anonymous shared mapping, for the processes forked after it is made.

    A fixed open-addressing table of (tenant key, tokens, updated) slots; the key is a
    16-byte hash of the tenant id (all zeros marks a free slot). Every read-modify-write
    holds a POSIX record lock on a scratch file: such locks belong to the process, so
    the descriptor all servers inherit still excludes one from another, and the kernel
    drops the lock of a server that dies holding it (a semaphore would stay taken). The
    section holding it is a few microseconds of struct packing. ``time.monotonic`` is
    the system's CLOCK_MONOTONIC, the same clock in every process.
    """

    _SLOT = struct.Struct("<16sdd")
    _PROBES = 32

    def __init__(self, slots: int = 16_384) -> None:
        self._slots = slots
        self._map = mmap.mmap(-1, slots * self._SLOT.size)
        fd, path = tempfile.mkstemp(prefix="vidpipe-ratelimit-", suffix=".lock")
        os.unlink(path)  # only the open descriptor is needed, and it is inherited
        self._lock_fd = fd

    def take(self, tenant_id: str, now: float, per_s: float, burst: int) -> float:
        key = hashlib.blake2b(tenant_id.encode(), digest_size=16).digest()
        first = int.from_bytes(key[:8], "little") % self._slots
        fcntl.lockf(self._lock_fd, fcntl.LOCK_EX)
        try:
            offset = self._find(key, first)
            if offset is None:
                # Table full around this key (more tenants than slots were seen):
                # forget every bucket, as a full LocalBuckets does.
                self._map[:] = bytes(len(self._map))
                offset = first * self._SLOT.size
                bucket = _Bucket(float(burst), now)
            else:
                found, tokens, updated = self._SLOT.unpack_from(self._map, offset)
                fresh = found != key
                bucket = _Bucket(float(burst), now) if fresh else _Bucket(tokens, updated)
            wait = _take(bucket, now, per_s, burst)
            self._SLOT.pack_into(self._map, offset, key, bucket.tokens, bucket.updated)
            return wait
        finally:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_UN)

    def _find(self, key: bytes, first: int) -> int | None:
        """The offset of ``key``'s slot, or of the free slot it may take; None if full."""
        for probe in range(self._PROBES):
            offset = ((first + probe) % self._slots) * self._SLOT.size
            found = self._map[offset : offset + 16]
            if found == key or found == bytes(16):
                return offset
        return None


_shared: SharedBuckets | None = None


def share_between_forked_processes() -> None:
    """Make every RateLimiter created from now on, here and in children forked after
    this call, use one table of buckets (``vidpipe api --processes N`` calls it before
    forking its servers)."""
    global _shared
    if _shared is None:
        _shared = SharedBuckets()


class RateLimiter:
    def __init__(self, per_s: float, burst: int, buckets: _Buckets | None = None) -> None:
        self.per_s = per_s
        self.burst = burst
        self._buckets: _Buckets = buckets or _shared or LocalBuckets()

    def check(self, tenant_id: str, now: float | None = None) -> None:
        """Take one token for ``tenant_id`` or raise RateLimited with the wait."""
        if self.per_s <= 0:
            return
        now = time.monotonic() if now is None else now
        wait = self._buckets.take(tenant_id, now, self.per_s, self.burst)
        if wait > 0:
            raise RateLimited(
                f"too many requests: at most {self.per_s:g}/s (burst {self.burst})",
                retry_after_s=wait,
            )


def retry_after_header(exc: Exception) -> dict[str, str]:
    wait = getattr(exc, "retry_after_s", None)
    return {"Retry-After": str(max(1, math.ceil(wait)))} if wait is not None else {}
