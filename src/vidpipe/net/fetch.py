"""Download a URL to a file on a user's behalf: guarded, capped, hashed and retried.

Redirects are followed here, not by httpx, so that every hop passes the URL guard
before any connection is made to it; the guarded transport checks the address again
when it connects. Bytes go to a temporary file next to ``dest`` and are hashed on the
way; ``dest`` appears only once the whole body has arrived within the size cap.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from vidpipe.core.retry import ErrorClass, RetryPolicy, decide
from vidpipe.errors import PermanentProviderError, ProviderError, TransientProviderError
from vidpipe.net.url_guard import UnresolvableHost, UnsafeUrl, UrlGuard
from vidpipe.providers.http import retry_after_s

__all__ = [
    "FetchError",
    "FetchResult",
    "PermanentFetchError",
    "TransientFetchError",
    "fetch_retry_policy",
    "fetch_to_file",
]

log = logging.getLogger("vidpipe.net")

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK_BYTES = 64 * 1024
# Headers that must not follow a redirect to another origin.
_ORIGIN_BOUND_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


@dataclass(frozen=True)
class FetchResult:
    sha256: str
    bytes: int
    content_type: str | None
    # The URL the body came from, after redirects.
    final_url: str


class FetchError(ProviderError):
    """A download failed; ``code`` says how (too_large, unsafe_url, http_404, timeout…).

    Subclasses are also TransientProviderError or PermanentProviderError, so the step
    executor's retry policy classifies them like any provider error.
    """

    code = "fetch_failed"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after_s: float | None = None,
        status_code: int | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, code=code, retry_after_s=retry_after_s)
        self.status_code = status_code
        self.url = url


class TransientFetchError(FetchError, TransientProviderError):
    """Network trouble, a timeout, 408/425/429/5xx: trying again later may succeed."""

    code = "fetch_transient"


class PermanentFetchError(FetchError, PermanentProviderError):
    """Refused URL, too large, 4xx, too many redirects: trying again will not help."""

    code = "fetch_permanent"


def fetch_retry_policy(
    retries: int, *, base_delay_s: float = 0.5, max_delay_s: float = 8.0
) -> RetryPolicy:
    """The in-process retry schedule of one download: ``retries`` doubling delays.

    A Retry-After longer than ``max_delay_s`` is not waited out here: the error is
    raised with its ``retry_after_s`` so the step is rescheduled instead.
    """
    if retries < 0:
        raise ValueError("retries must be >= 0")
    return RetryPolicy(
        transient_delays_s=tuple(min(base_delay_s * 2**n, max_delay_s) for n in range(retries)),
        max_retry_after_s=max_delay_s,
    )


async def fetch_to_file(
    client: httpx.AsyncClient,
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    timeout_s: float,
    guard: UrlGuard,
    retries: int = 3,
    read_timeout_s: float = 30.0,
    connect_timeout_s: float = 10.0,
    max_redirects: int = 5,
    headers: Mapping[str, str] | None = None,
    policy: RetryPolicy | None = None,
    rand: Callable[[], float] = random.random,
) -> FetchResult:
    """GET ``url`` into ``dest`` and return its sha256, size, type and final URL.

    ``client`` should come from ``guarded_client(guard)``: this function checks each
    hop's URL before requesting it, the guarded transport checks each address as it
    connects. ``timeout_s`` bounds the whole download including retries;
    ``read_timeout_s`` bounds each wait for the next bytes. ``headers`` (e.g. an API
    key) are sent to the original URL's origin only, never to a redirect target
    elsewhere. Transient failures are retried ``retries`` times with doubling delays
    (or as ``policy`` says, when given). Raises TransientFetchError or
    PermanentFetchError; ``dest`` is only ever a complete body.
    """
    policy = policy if policy is not None else fetch_retry_policy(retries)
    timeout = httpx.Timeout(
        connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s, pool=connect_timeout_s
    )
    try:
        async with asyncio.timeout(timeout_s) as budget:
            return await _fetch(
                client,
                httpx.URL(url),
                dest,
                max_bytes=max_bytes,
                request_timeout=timeout,
                guard=guard,
                max_redirects=max_redirects,
                headers=headers or {},
                policy=policy,
                rand=rand,
                deadline=budget.when(),
            )
    except TimeoutError as exc:
        raise TransientFetchError(
            f"download took longer than {timeout_s:g} s", code="timeout", url=_shown(url)
        ) from exc
    except httpx.InvalidURL as exc:
        raise PermanentFetchError(f"malformed URL: {exc}", code="unsafe_url") from exc


async def _fetch(
    client: httpx.AsyncClient,
    url: httpx.URL,
    dest: Path,
    *,
    max_bytes: int,
    request_timeout: httpx.Timeout,
    guard: UrlGuard,
    max_redirects: int,
    headers: Mapping[str, str],
    policy: RetryPolicy,
    rand: Callable[[], float],
    deadline: float | None,
) -> FetchResult:
    current, hops, failures = url, 0, 0
    loop = asyncio.get_running_loop()
    while True:
        hop_headers = _headers_for(current, origin=url, headers=headers)
        try:
            outcome = await _attempt(
                client, current, dest, guard, max_bytes, request_timeout, hop_headers
            )
        except TransientFetchError as exc:
            failures += 1
            decision = decide(
                policy, ErrorClass.TRANSIENT, failures, retry_after_s=exc.retry_after_s, rand=rand()
            )
            wait_too_long = (
                exc.retry_after_s is not None and exc.retry_after_s > policy.max_retry_after_s
            )
            past_deadline = deadline is not None and loop.time() + decision.delay_s >= deadline
            if not decision.retry or wait_too_long or past_deadline:
                raise
            log.info(
                "download of %s failed (%s); retry %d in %.2f s",
                _shown(current),
                exc.code,
                failures,
                decision.delay_s,
            )
            await asyncio.sleep(decision.delay_s)
            continue
        if isinstance(outcome, FetchResult):
            return outcome
        hops += 1
        if hops > max_redirects:
            raise PermanentFetchError(
                f"more than {max_redirects} redirects", code="too_many_redirects", url=_shown(url)
            )
        current = outcome


def _shown(url: str | httpx.URL) -> str:
    """``url`` for messages and logs: without its query, which may hold a signature."""
    try:
        return str(httpx.URL(url).copy_with(query=None, fragment=None))
    except httpx.InvalidURL:
        return "(malformed URL)"


def _headers_for(
    target: httpx.URL, *, origin: httpx.URL, headers: Mapping[str, str]
) -> dict[str, str]:
    # Media is stored as sent: no transfer compression to undo (or to be bombed by).
    out = {"Accept-Encoding": "identity"}
    same_origin = (target.scheme, target.host, target.port) == (
        origin.scheme,
        origin.host,
        origin.port,
    )
    for name, value in headers.items():
        if same_origin or name.lower() not in _ORIGIN_BOUND_HEADERS:
            out[name] = value
    return out


async def _attempt(
    client: httpx.AsyncClient,
    url: httpx.URL,
    dest: Path,
    guard: UrlGuard,
    max_bytes: int,
    request_timeout: httpx.Timeout,
    headers: dict[str, str],
) -> FetchResult | httpx.URL:
    """One request: the body as a FetchResult, or the next URL when redirected."""
    shown = _shown(url)
    try:
        await guard.check(url)
        async with client.stream(
            "GET", url, headers=headers, timeout=request_timeout, follow_redirects=False
        ) as response:
            status = response.status_code
            if status in REDIRECT_STATUSES:
                location = response.headers.get("location")
                if not location:
                    raise PermanentFetchError(
                        f"HTTP {status} redirect without a Location", code="bad_redirect", url=shown
                    )
                return response.url.join(location)
            if status in (408, 425, 429) or status >= 500:
                raise TransientFetchError(
                    f"download answered HTTP {status}",
                    code=f"http_{status}",
                    retry_after_s=retry_after_s(response.headers),
                    status_code=status,
                    url=shown,
                )
            if not 200 <= status < 300:
                # 403/404/410 from a storage URL: expired or never there.
                raise PermanentFetchError(
                    f"download answered HTTP {status}",
                    code=f"http_{status}",
                    status_code=status,
                    url=shown,
                )
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise PermanentFetchError(
                    f"body declares {declared} bytes, more than the {max_bytes} allowed",
                    code="too_large",
                    url=shown,
                )
            return await _save_body(response, dest, max_bytes, shown)
    except UnresolvableHost as exc:
        raise TransientFetchError(exc.message, code="dns_failed", url=shown) from exc
    except UnsafeUrl as exc:
        raise PermanentFetchError(exc.message, code="unsafe_url", url=shown) from exc
    except httpx.TimeoutException as exc:
        raise TransientFetchError(
            f"download timed out: {type(exc).__name__}", code="timeout", url=shown
        ) from exc
    except httpx.TransportError as exc:
        raise TransientFetchError(
            f"download failed: {type(exc).__name__}: {exc}", code="network", url=shown
        ) from exc
    except httpx.DecodingError as exc:
        raise PermanentFetchError(
            f"download body is malformed: {exc}", code="bad_body", url=shown
        ) from exc


async def _save_body(
    response: httpx.Response, dest: Path, max_bytes: int, shown: str
) -> FetchResult:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")
    digest = hashlib.sha256()
    size = 0
    try:
        # Writes of one chunk land in the page cache: shorter than a thread hop each.
        with open(tmp, "wb") as handle:  # noqa: ASYNC230
            async for chunk in response.aiter_bytes(CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise PermanentFetchError(
                        f"body is larger than the {max_bytes} bytes allowed",
                        code="too_large",
                        url=shown,
                    )
                digest.update(chunk)
                handle.write(chunk)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return FetchResult(
        sha256=digest.hexdigest(),
        bytes=size,
        content_type=response.headers.get("content-type"),
        final_url=str(response.url),
    )
