"""Per-tenant request rate limits: a token bucket per tenant in each API process.

Each API process enforces the limit on the requests it serves; behind a load balancer
with N processes a tenant gets up to N times the rate, which the operator accounts for
when setting it. What costs money is limited exactly, in the database (budgets,
concurrent-job limits); this protects the API itself.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from vidpipe.errors import VidpipeError


class RateLimited(VidpipeError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, per_s: float, burst: int) -> None:
        self.per_s = per_s
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def check(self, tenant_id: str, now: float | None = None) -> None:
        """Take one token for ``tenant_id`` or raise RateLimited with the wait."""
        if self.per_s <= 0:
            return
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(tenant_id)
        if bucket is None:
            if len(self._buckets) > 100_000:
                self._buckets.clear()
            bucket = self._buckets[tenant_id] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.per_s)
        bucket.updated = now
        if bucket.tokens < 1:
            wait = (1 - bucket.tokens) / self.per_s
            raise RateLimited(
                f"too many requests: at most {self.per_s:g}/s (burst {self.burst})",
                retry_after_s=wait,
            )
        bucket.tokens -= 1


def retry_after_header(exc: Exception) -> dict[str, str]:
    wait = getattr(exc, "retry_after_s", None)
    return {"Retry-After": str(max(1, math.ceil(wait)))} if wait is not None else {}
