"""The URL guard's verdicts, as tables: addresses, URLs, allow-lists, resolution.

Host names resolve through a fake resolver (no DNS traffic); only numeric forms and
``localhost`` go to the system resolver, which answers them without the network.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import pytest

import vidpipe.net
from vidpipe.errors import InvalidRequest, VidpipeError
from vidpipe.net import (
    AllowList,
    UnresolvableHost,
    UnsafeUrl,
    UrlGuard,
    blocked_reason,
    check_url,
    system_resolver,
)
from vidpipe.net.url_guard import IPAddress

pytestmark = pytest.mark.timeout(10)

ZONE = {
    "public.test": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "internal.test": ["10.1.2.3"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": ["93.184.216.34", "192.168.0.10"],
    "mapped.test": ["::ffff:127.0.0.1"],
    "minio.internal": ["10.9.9.9"],
}


async def fake_resolver(host: str, port: int) -> Sequence[IPAddress]:
    try:
        return [ipaddress.ip_address(a) for a in ZONE[host.rstrip(".").lower()]]
    except KeyError:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None


def guard(allow: str = "", **kwargs: object) -> UrlGuard:
    return UrlGuard(allow=AllowList.parse(allow), resolver=fake_resolver, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("169.254.0.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("0.0.0.0", "this-network"),
        ("0.1.2.3", "this-network"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("fec0::1", "site-local"),
        ("64:ff9b:1::1", "NAT64 local-use"),
        ("198.18.0.1", "not globally routable"),  # benchmarking
        ("192.0.2.1", "not globally routable"),  # documentation
        ("2001:db8::1", "not globally routable"),  # documentation
    ],
)
def test_blocked_addresses(address: str, reason: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    ("address", "embedded_reason"),
    [
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
    ],
)
def test_ipv4_inside_ipv6_is_judged_as_ipv4(address: str, embedded_reason: str) -> None:
    reason = blocked_reason(ipaddress.ip_address(address))
    assert reason is not None
    assert reason.startswith(embedded_reason)


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"],
)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("file:///etc/passwd", "scheme"),
        ("ftp://public.test/x", "scheme"),
        ("gopher://public.test/", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("data:text/plain,hi", "scheme"),
        ("//public.test/x", "scheme"),
        ("http:///path", "no host"),
        ("http://", "no host"),
        ("http://user:pw@public.test/", "credentials"),
        ("http://public.test@10.0.0.1/", "credentials"),
        ("http://127.0.0.1/", "loopback"),
        ("http://127.0.0.1:8080/admin", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://10.0.0.1/", "private"),
        ("https://192.168.0.1/", "private"),
        ("http://100.64.1.1/", "carrier-grade NAT"),
        ("http://0.0.0.0:8000/", "this-network"),
        ("http://internal.test/", "private"),
        ("http://metadata.test/", "link-local"),
        ("http://mixed.test/", "private"),  # one bad address refuses the host
        ("http://mapped.test/", "loopback"),
        ("http://public.test:99999/", "port"),
    ],
)
async def test_unsafe_urls_are_refused(url: str, fragment: str) -> None:
    with pytest.raises(UnsafeUrl, match=fragment):
        await guard().check(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",  # decimal 127.0.0.1
        "http://0x7f.1/",  # hex
        "http://127.1/",  # short form
        "http://localhost:8000/",
    ],
)
async def test_odd_spellings_of_loopback_are_caught_by_resolution(url: str) -> None:
    with pytest.raises(UnsafeUrl, match="loopback"):
        await check_url(url, allow=AllowList(), resolver=system_resolver)


@pytest.mark.parametrize(
    "url",
    [
        "https://public.test/video.mp4",
        "http://public.test:8080/a?b=c",
        "HTTPS://PUBLIC.TEST/x",
        "http://93.184.216.34/",
        "http://[2606:4700:4700::1111]/",
    ],
)
async def test_public_urls_pass(url: str) -> None:
    parsed = await guard().check(url)
    assert parsed.scheme in ("http", "https")


async def test_credentials_can_be_allowed_by_policy() -> None:
    await guard(allow_credentials=True).check("https://user:pw@public.test/")
    with pytest.raises(UnsafeUrl, match="private"):
        await guard(allow_credentials=True).check("http://public.test@10.0.0.1/")


async def test_unresolvable_host_is_its_own_error() -> None:
    with pytest.raises(UnresolvableHost) as caught:
        await guard().check("https://nowhere.test/")
    assert caught.value.code == "unresolvable_host"
    assert not isinstance(caught.value, UnsafeUrl)


async def test_resolver_answering_nothing_is_unresolvable() -> None:
    async def empty(host: str, port: int) -> Sequence[IPAddress]:
        return []

    with pytest.raises(UnresolvableHost):
        await UrlGuard(resolver=empty).check("https://public.test/")


async def test_slow_resolver_times_out() -> None:
    async def hangs(host: str, port: int) -> Sequence[IPAddress]:
        import asyncio

        await asyncio.sleep(10)
        return []

    with pytest.raises(UnresolvableHost):
        await UrlGuard(resolver=hangs, resolve_timeout_s=0.05).check("https://public.test/")


async def test_resolution_returns_every_vetted_address() -> None:
    addresses = await guard().resolve("public.test", 443)
    assert [str(a) for a in addresses] == ZONE["public.test"]


async def test_error_is_a_422_vidpipe_error_with_stable_code() -> None:
    with pytest.raises(UnsafeUrl) as caught:
        await check_url("http://169.254.169.254/", allow=AllowList())
    error = caught.value
    assert isinstance(error, VidpipeError)
    assert isinstance(error, InvalidRequest)
    assert (error.code, error.http_status) == ("unsafe_url", 422)


# --- the allow-list ------------------------------------------------------------------


async def test_allowed_cidr_admits_its_addresses_only() -> None:
    g = guard("127.0.0.1/32")
    await g.check("http://127.0.0.1:9000/")
    await g.check("http://[::ffff:127.0.0.1]/")  # the same address, mapped
    with pytest.raises(UnsafeUrl):
        await g.check("http://127.0.0.2/")
    with pytest.raises(UnsafeUrl):
        await g.check("http://[::1]/")


async def test_allowed_host_is_trusted_whatever_it_resolves_to() -> None:
    g = guard("minio.internal")
    await g.check("http://minio.internal:9000/bucket")
    await g.check("http://MINIO.INTERNAL./bucket")
    with pytest.raises(UnsafeUrl):
        await g.check("http://10.9.9.9:9000/")  # the address itself is not allowed


async def test_allow_list_does_not_relax_scheme_or_credentials() -> None:
    g = guard("127.0.0.0/8, minio.internal")
    with pytest.raises(UnsafeUrl, match="scheme"):
        await g.check("file://minio.internal/etc/passwd")
    with pytest.raises(UnsafeUrl, match="credentials"):
        await g.check("http://a:b@127.0.0.1/")


@pytest.mark.parametrize(
    ("spec", "hosts", "networks"),
    [
        ("", set(), []),
        (None, set(), []),
        ("127.0.0.1", set(), ["127.0.0.1/32"]),
        ("127.0.0.1/8", set(), ["127.0.0.0/8"]),
        ("::1, [::1]", set(), ["::1/128", "::1/128"]),
        ("10.0.0.0/8 minio.internal,Files.Example.COM.", {"minio.internal", "files.example.com"},
         ["10.0.0.0/8"]),
        (["localhost", "fd00::/8"], {"localhost"}, ["fd00::/8"]),
    ],
)  # fmt: skip
def test_allow_list_parsing(
    spec: str | list[str] | None, hosts: set[str], networks: list[str]
) -> None:
    allow = AllowList.parse(spec)
    assert allow.hosts == hosts
    assert [str(n) for n in allow.networks] == networks


@pytest.mark.parametrize("spec", ["http://x", "a..b", "bad host!", "-" * 64])
def test_allow_list_refuses_garbage(spec: str) -> None:
    with pytest.raises(ValueError, match="neither a CIDR nor a host name"):
        AllowList.parse(spec)


def test_public_api_is_explicit() -> None:
    assert sorted(vidpipe.net.__all__) == [
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
    for name in vidpipe.net.__all__:
        assert hasattr(vidpipe.net, name)
