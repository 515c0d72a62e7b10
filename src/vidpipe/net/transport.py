"""An httpx transport that enforces the URL guard at connect time (no DNS rebinding).

How: httpcore opens every TCP connection through a *network backend*
(``connect_tcp(host, port, …)``). ``GuardedNetworkBackend`` wraps the default one: it
resolves the host itself with the guard's resolver, refuses the connection unless
EVERY address passes the guard, then connects to one of those addresses as an IP
literal, so no second lookup can swap in another address between the check and the
connect. It finally compares the socket's peer address with the address it chose.

Why a network backend rather than rewriting the URL to the IP: httpcore keeps using
the original host name for TLS (SNI and certificate verification) and the Host header
and for pooling connections, so HTTPS, virtual hosts and keep-alive all behave as
usual. Every connection the client makes goes through it, including those of
redirects a caller follows itself and any the client follows.

httpx (0.28) takes no network backend as an argument (encode/httpx#3749 proposes one),
so ``GuardedTransport`` builds its connection pool itself; it refuses proxies, since
through a proxy the address connected to is the proxy's, not the target's.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable

import httpcore
import httpx

from vidpipe.net.url_guard import UnresolvableHost, UrlGuard

__all__ = ["GuardedNetworkBackend", "GuardedTransport", "guarded_client"]


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the guard has just vetted; see the module doc."""

    def __init__(self, guard: UrlGuard, inner: httpcore.AsyncNetworkBackend | None = None):
        self.guard = guard
        self.inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self.guard.resolve(host, port)
        except UnresolvableHost as exc:
            # A failed lookup is a connect failure like any other (often transient).
            raise httpcore.ConnectError(str(exc)) from exc
        options = list(socket_options) if socket_options is not None else None
        last_error: Exception | None = None
        for address in addresses:
            try:
                stream = await self.inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
                continue
            await self._check_peer(host, stream)
            return stream
        assert last_error is not None  # resolve() never returns an empty list
        raise last_error

    async def _check_peer(self, host: str, stream: httpcore.AsyncNetworkStream) -> None:
        peer = stream.get_extra_info("server_addr")
        if not isinstance(peer, tuple) or not peer:
            return
        try:
            address = ipaddress.ip_address(peer[0])
        except ValueError:
            return
        # Defence in depth: the address is an IP literal we vetted, but verify what the
        # socket is actually connected to before a byte of the request is sent.
        try:
            self.guard.check_address(host, address)
        except BaseException:
            await stream.aclose()
            raise

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not reachable through the URL guard")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose connections pass ``UrlGuard`` when opened."""

    def __init__(
        self,
        guard: UrlGuard,
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits | None = None,
        retries: int = 0,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(verify=verify, trust_env=False, limits=limits, retries=retries)
        # The one private detail relied on: httpx's transport sends every request
        # through ``self._pool``. Replace that pool with one built on the guarded
        # backend, and fail at construction (not silently) if httpx ever changes it.
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("httpx.AsyncHTTPTransport layout changed; cannot install guard")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            retries=retries,
            network_backend=GuardedNetworkBackend(guard, network_backend),
        )


def guarded_client(
    guard: UrlGuard,
    *,
    timeout: httpx.Timeout | float = httpx.Timeout(30.0, connect=10.0),
    headers: dict[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
    network_backend: httpcore.AsyncNetworkBackend | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for requests made on a user's behalf.

    It never follows redirects itself (``fetch_to_file`` follows them, re-checking
    each hop) and ignores proxy settings from the environment.
    """
    return httpx.AsyncClient(
        transport=GuardedTransport(guard, verify=verify, network_backend=network_backend),
        timeout=timeout,
        headers=headers,
        follow_redirects=False,
        trust_env=False,
    )
