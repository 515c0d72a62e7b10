"""When to retry a request and how long to wait first: a pure policy.

Retried: connection failures and timeouts, 429 and 5xx (``x-should-retry`` overrides
either way). A server's ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date) is
honoured; one longer than ``max_retry_after_s`` is not waited out. Otherwise the wait
doubles from ``backoff_s`` up to ``max_backoff_s``, with jitter.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

POLL_AFTER_HEADER = "openai-poll-after-ms"


def retry_after_s(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the server asks to wait (``retry-after-ms``, then ``Retry-After``), or None."""
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(value, 0.0)
    raw = lower.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(when.timestamp() - now, 0.0)
    return max(value, 0.0) if math.isfinite(value) else None


def poll_after_s(headers: Mapping[str, str], default_s: float = 1.0) -> float:
    """The server's polling hint (``openai-poll-after-ms``) in seconds, else ``default_s``."""
    raw = headers.get(POLL_AFTER_HEADER)
    try:
        value = float(raw) / 1000 if raw is not None else default_s
    except ValueError:
        value = default_s
    return value if math.isfinite(value) and value >= 0 else default_s


def is_retryable_error(exc: Exception) -> bool:
    """Transport failures worth another try (not misconfigurations like a bad URL)."""
    return isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 60.0

    def backoff(self, retries_done: int, jitter: float) -> float:
        """Exponential wait before retry number ``retries_done + 1``; ``jitter`` in [0, 1)."""
        base = min(self.max_backoff_s, self.backoff_s * 2.0**retries_done)
        return base * (0.5 + 0.5 * jitter)

    def after_error(self, retries_done: int, exc: Exception, jitter: float) -> float | None:
        """Seconds to wait before retrying after a transport error, or None to give up."""
        if retries_done >= self.max_retries or not is_retryable_error(exc):
            return None
        return self.backoff(retries_done, jitter)

    def after_status(
        self,
        retries_done: int,
        status: int,
        headers: Mapping[str, str],
        now: float,
        jitter: float,
    ) -> float | None:
        """Seconds to wait before retrying after an error status, or None to give up."""
        if retries_done >= self.max_retries:
            return None
        should = {k.lower(): v for k, v in headers.items()}.get("x-should-retry")
        if should == "false":
            return None
        if should != "true" and status != 429 and status < 500:
            return None
        hinted = retry_after_s(headers, now)
        if hinted is None:
            return self.backoff(retries_done, jitter)
        return hinted if hinted <= self.max_retry_after_s else None
