"""Shared HTTP plumbing for adapters: one place that turns responses into our errors."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

import httpx

from vidpipe.errors import PermanentProviderError, ProviderError, TransientProviderError


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header: delta seconds or HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (now if now is not None else time.time()), 0.0)


def error_for(
    provider: str,
    response: httpx.Response,
    *,
    code: str | None = None,
    message: str | None = None,
) -> ProviderError:
    """The error a non-2xx response stands for: 408/409/425/429/5xx are transient
    (with Retry-After), 401/403 auth, other 4xx permanent with the provider's reason."""
    status = response.status_code
    reason = message or _reason(response)
    text = f"{provider}: HTTP {status}: {reason}"
    if status in (408, 409, 425, 429) or status >= 500:
        return TransientProviderError(
            text,
            code=code or ("rate_limited" if status == 429 else f"http_{status}"),
            retry_after_s=retry_after_s(response.headers),
        )
    if status in (401, 403):
        return PermanentProviderError(text, code=code or "provider_auth")
    return PermanentProviderError(text, code=code or "provider_rejected")


def _reason(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("error", "message", "detail", "title"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("detail") or value
            if value:
                return str(value)[:300]
    return str(body)[:300]


async def request(
    http: httpx.AsyncClient, provider: str, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """Send a request; network failures and timeouts become TransientProviderError."""
    try:
        return await http.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise TransientProviderError(f"{provider}: timeout: {exc}", code="timeout") from exc
    except httpx.TransportError as exc:
        raise TransientProviderError(f"{provider}: network: {exc}", code="network") from exc
