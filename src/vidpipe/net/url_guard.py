"""The URL-safety guard: which URLs vidpipe may fetch or call on a user's behalf.

Webhook targets, input images and provider outputs are URLs a user (or a provider)
chose; fetching them from inside our network must not reach our own services or the
cloud's metadata endpoint (SSRF). A URL passes when its scheme is http(s), it names a
host, it carries no credentials (unless allowed), and EVERY address its host resolves
to is globally routable, or the host or address is on the operator's allow-list.

Checking a URL before a request is not enough by itself: the name may resolve
differently a moment later (DNS rebinding). ``vidpipe.net.transport`` therefore runs
the same address check when it connects and connects to the checked address only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import httpx

from vidpipe.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> every address the host resolves to (raises OSError when it does not).
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]

ALLOWED_SCHEMES = ("http", "https")

# Named explicitly, rather than left to ``is_global`` alone, so the verdict (and its
# reason) does not shift between Python patch releases; ``is_global`` still catches
# whatever else IANA marks as not globally reachable.
_BLOCKED: tuple[tuple[str, IPNetwork], ...] = tuple(
    (reason, ipaddress.ip_network(cidr))
    for reason, cidr in (
        ("this-network", "0.0.0.0/8"),
        ("private", "10.0.0.0/8"),
        ("carrier-grade NAT", "100.64.0.0/10"),
        ("loopback", "127.0.0.0/8"),
        ("link-local", "169.254.0.0/16"),
        ("private", "172.16.0.0/12"),
        ("private", "192.168.0.0/16"),
        ("multicast", "224.0.0.0/4"),
        ("reserved", "240.0.0.0/4"),
        ("unspecified", "::/128"),
        ("loopback", "::1/128"),
        # RFC 8215 local-use NAT64: translated to addresses we cannot see from here.
        ("NAT64 local-use", "64:ff9b:1::/48"),
        ("private", "fc00::/7"),
        ("link-local", "fe80::/10"),
        ("site-local", "fec0::/10"),
        ("multicast", "ff00::/8"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UnsafeUrl(InvalidRequest):
    """A URL vidpipe refuses to fetch or call: bad scheme, credentials, or an address
    inside a private, loopback, link-local or otherwise non-public network."""

    code = "unsafe_url"
    http_status = 422


class UnresolvableHost(InvalidRequest):
    """The URL's host name does not resolve (now): nothing could be checked."""

    code = "unresolvable_host"
    http_status = 422


def _is_hostname(entry: str) -> bool:
    labels = entry.split(".")
    return all(
        0 < len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
        for label in labels
    )


@dataclass(frozen=True)
class AllowList:
    """Exceptions to the guard, from the operator (``VIDPIPE_URL_ALLOWLIST``).

    ``hosts`` are exact host names (case-insensitive): a listed name is trusted
    whatever it resolves to, e.g. an internal S3 endpoint. ``networks`` are CIDRs
    whose addresses are allowed whatever name led to them, e.g. ``127.0.0.1/32`` for
    tests on loopback.
    """

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, spec: str | Iterable[str] | None) -> AllowList:
        """Read comma- or whitespace-separated entries: CIDRs, addresses, host names."""
        if spec is None:
            return cls()
        entries = spec.replace(",", " ").split() if isinstance(spec, str) else list(spec)
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if not _is_hostname(entry):
                raise ValueError(f"allow-list entry {raw!r} is neither a CIDR nor a host name")
            hosts.add(entry)
        return cls(hosts=frozenset(hosts), networks=tuple(networks))

    def permits_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def permits_address(self, address: IPAddress) -> bool:
        candidates = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(ip in net for ip in candidates for net in self.networks)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for, where the network will translate it."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` must not be connected to on a user's behalf, or None if public."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = blocked_reason(embedded)
            if reason is not None:
                return f"{reason} (IPv4 {embedded} inside IPv6)"
            if address.ipv4_mapped is not None:
                # The mapped form of a public IPv4 address is that address.
                return None
        # An address with a zone (fe80::1%eth0) is link-scoped by definition.
        if address.scope_id:
            return "link-local"
    for reason, network in _BLOCKED:
        if address in network:
            return reason
    if not address.is_global:
        return "not globally routable"
    return None


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address of ``host`` from the system resolver (``loop.getaddrinfo``)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


@dataclass(frozen=True)
class UrlGuard:
    """The one guard for outbound requests made on a user's behalf.

    ``check`` vets a URL before a request; ``resolve`` is what the guarded transport
    calls when it opens a connection, so the address connected to is one it checked.
    """

    allow: AllowList = field(default_factory=AllowList)
    resolver: Resolver = system_resolver
    allow_credentials: bool = False
    resolve_timeout_s: float = 10.0

    async def check(self, url: str | httpx.URL) -> httpx.URL:
        """Vet ``url`` (scheme, host, credentials, every resolved address).

        Returns it parsed; raises UnsafeUrl, or UnresolvableHost when the name does
        not resolve. httpx's own parser is used so the URL checked is the URL fetched.
        """
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise UnsafeUrl(f"malformed URL: {exc}") from exc
        if parsed.scheme not in ALLOWED_SCHEMES:
            raise UnsafeUrl(f"URL scheme {parsed.scheme or '(none)'!r} is not http or https")
        if not parsed.host:
            raise UnsafeUrl("URL has no host")
        if parsed.userinfo and not self.allow_credentials:
            raise UnsafeUrl("URL carries credentials (user:password@host)")
        port = parsed.port or default_port(parsed.scheme)
        if not 0 < port < 65536:
            raise UnsafeUrl(f"URL port {port} is out of range")
        if parsed.host.lower() in self.allow.hosts:
            # Trusted by name whatever it resolves to: nothing to learn from resolving
            # (and a name served in-process, as in tests, may not resolve at all).
            return parsed
        await self.resolve(parsed.host, port)
        return parsed

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Resolve ``host`` and vet EVERY address; return them, in the resolver's order.

        A single bad address refuses the host: a name that answers with one public and
        one private address would otherwise reach the private one on a later attempt.
        """
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses: Sequence[IPAddress] = [literal]
        else:
            try:
                async with asyncio.timeout(self.resolve_timeout_s):
                    addresses = await self.resolver(host, port)
            except (OSError, TimeoutError) as exc:
                raise UnresolvableHost(f"host {host!r} does not resolve: {exc}") from exc
            if not addresses:
                raise UnresolvableHost(f"host {host!r} resolved to no address")
        if self.allow.permits_host(host):
            return list(addresses)
        for address in addresses:
            self.check_address(host, address)
        return list(addresses)

    def check_address(self, host: str, address: IPAddress) -> None:
        """Raise UnsafeUrl unless ``address`` (reached through ``host``) is allowed."""
        if self.allow.permits_host(host) or self.allow.permits_address(address):
            return
        reason = blocked_reason(address)
        if reason is not None:
            shown = host if host == str(address) else f"{host} ({address})"
            raise UnsafeUrl(f"refusing to connect to {shown}: {reason} address")


async def check_url(
    url: str | httpx.URL,
    *,
    allow: AllowList,
    resolver: Resolver = system_resolver,
    allow_credentials: bool = False,
) -> None:
    """Raise UnsafeUrl (or UnresolvableHost) unless ``url`` is safe to fetch.

    For validating a URL when it is submitted (a webhook target, an input image);
    fetch it later through ``guarded_client`` so the check holds at connect time too.
    """
    guard = UrlGuard(allow=allow, resolver=resolver, allow_credentials=allow_credentials)
    await guard.check(url)
