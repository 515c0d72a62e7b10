"""Outbound HTTP on a user's behalf: the URL guard, its transport, safe downloads."""

from vidpipe.net.fetch import (
    FetchError,
    FetchResult,
    PermanentFetchError,
    TransientFetchError,
    fetch_retry_policy,
    fetch_to_file,
)
from vidpipe.net.transport import GuardedNetworkBackend, GuardedTransport, guarded_client
from vidpipe.net.url_guard import (
    AllowList,
    UnresolvableHost,
    UnsafeUrl,
    UrlGuard,
    blocked_reason,
    check_url,
    system_resolver,
)

__all__ = [
    "AllowList",
    "FetchError",
    "FetchResult",
    "GuardedNetworkBackend",
    "GuardedTransport",
    "PermanentFetchError",
    "TransientFetchError",
    "UnresolvableHost",
    "UnsafeUrl",
    "UrlGuard",
    "blocked_reason",
    "check_url",
    "fetch_retry_policy",
    "fetch_to_file",
    "guarded_client",
    "system_resolver",
]
