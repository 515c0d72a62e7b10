"""fetch_to_file and the guarded transport against a real HTTP server on loopback.

The server (Starlette under uvicorn, in a thread) listens on 127.0.0.1, which the
tests allow-list. Made-up names (``files.test``, ``cdn.test``) resolve to it through
a fake resolver. Redirects and rebinding towards 10.0.0.1 or 169.254.169.254 must be
refused before any connection: a recording network backend proves none was opened.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path

import httpcore
import httpx
import pytest
import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from vidpipe.errors import PermanentProviderError, TransientProviderError
from vidpipe.net import (
    AllowList,
    FetchResult,
    PermanentFetchError,
    TransientFetchError,
    UnsafeUrl,
    UrlGuard,
    fetch_retry_policy,
    fetch_to_file,
    guarded_client,
)
from vidpipe.net.url_guard import IPAddress

pytestmark = pytest.mark.timeout(30)

BODY = bytes(range(256)) * 400  # 100 KiB
HITS: Counter[str] = Counter()


# --- the server ------------------------------------------------------------------------


async def file(request: Request) -> Response:
    return Response(BODY, media_type="video/mp4")


async def huge(request: Request) -> Response:
    async def big() -> AsyncIterator[bytes]:
        chunk = b"\0" * 65536
        for _ in range(160):  # 10 MiB, with no Content-Length to warn the client
            if await request.is_disconnected():
                return
            yield chunk

    return StreamingResponse(big(), media_type="video/mp4")


async def declared_huge(request: Request) -> Response:
    async def little() -> AsyncIterator[bytes]:
        yield b"x" * 10

    return StreamingResponse(little(), headers={"content-length": str(10**12)})


async def redirect(request: Request) -> Response:
    n = int(request.path_params["n"])
    return RedirectResponse("/file" if n == 0 else f"/redirect/{n - 1}", status_code=302)


async def redirect_to(request: Request) -> Response:
    status = int(request.query_params.get("status", "302"))
    return Response(status_code=status, headers={"location": request.query_params["url"]})


async def no_location(request: Request) -> Response:
    return Response(status_code=302)


async def flaky(request: Request) -> Response:
    key = request.query_params["key"]
    HITS[key] += 1
    if HITS[key] <= int(request.query_params.get("fail", "0")):
        headers = {}
        if "retry_after" in request.query_params:
            headers["retry-after"] = request.query_params["retry_after"]
        return PlainTextResponse(
            "busy", status_code=int(request.query_params.get("status", "503")), headers=headers
        )
    return Response(BODY, media_type="video/mp4")


async def status(request: Request) -> Response:
    key = request.query_params.get("key", "")
    HITS[key] += 1
    return PlainTextResponse("no", status_code=int(request.path_params["code"]))


async def slow(request: Request) -> Response:
    async def stall() -> AsyncIterator[bytes]:
        yield b"x" * 100
        await asyncio.sleep(20)
        yield b"never"

    return StreamingResponse(stall(), media_type="video/mp4")


async def drip(request: Request) -> Response:
    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(300):
            yield b"x"
            await asyncio.sleep(0.01)

    return StreamingResponse(trickle(), media_type="video/mp4")


async def whoami(request: Request) -> Response:
    seen = "yes" if "authorization" in request.headers else "no"
    return PlainTextResponse(f"auth={seen} host={request.headers['host']}")


APP = Starlette(
    routes=[
        Route("/file", file),
        Route("/huge", huge),
        Route("/declared-huge", declared_huge),
        Route("/redirect/{n:int}", redirect),
        Route("/to", redirect_to),
        Route("/no-location", no_location),
        Route("/flaky", flaky),
        Route("/status/{code:int}", status),
        Route("/slow", slow),
        Route("/drip", drip),
        Route("/whoami", whoami),
    ]
)


def serve(**tls: str) -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        APP,
        loop="asyncio",
        http="h11",
        ws="none",
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=1,
        **tls,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    yield from serve()


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_port(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    cert = tls_ca.issue_cert("files.test")
    directory = tmp_path_factory.mktemp("tls")
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    yield from serve(
        ssl_certfile=str(directory / "cert.pem"), ssl_keyfile=str(directory / "key.pem")
    )


# --- the client side -------------------------------------------------------------------


class FakeDNS:
    """Names to addresses, with a log of lookups; a list of answers is served in turn."""

    def __init__(self, zone: dict[str, list[list[str]]]) -> None:
        self.zone = zone
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[IPAddress]:
        self.lookups.append(host)
        answers = self.zone.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return [ipaddress.ip_address(a) for a in answer]


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """The real backend, noting every address a connection was opened to."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.connected: list[str] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append(host)
        return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


LOCAL = [["127.0.0.1"]]


@pytest.fixture
def dns() -> FakeDNS:
    return FakeDNS({"files.test": LOCAL, "cdn.test": LOCAL})


@pytest.fixture
def guard(dns: FakeDNS) -> UrlGuard:
    return UrlGuard(allow=AllowList.parse("127.0.0.1/32"), resolver=dns)


@pytest.fixture
def backend() -> RecordingBackend:
    return RecordingBackend()


@pytest.fixture
async def client(guard: UrlGuard, backend: RecordingBackend) -> AsyncIterator[httpx.AsyncClient]:
    async with guarded_client(guard, network_backend=backend) as http:
        yield http


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "out" / "video.mp4"


FAST = fetch_retry_policy(3, base_delay_s=0.01, max_delay_s=1.0)


async def fetch(
    client: httpx.AsyncClient, guard: UrlGuard, url: str, dest: Path, **kwargs: object
) -> FetchResult:
    options: dict[str, object] = {"max_bytes": 1024 * 1024, "timeout_s": 10.0, "policy": FAST}
    options.update(kwargs)
    return await fetch_to_file(client, url, dest, guard=guard, **options)  # type: ignore[arg-type]


def read(path: Path) -> bytes:
    return path.read_bytes()


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir()) if dest.parent.exists() else []


# --- downloads -------------------------------------------------------------------------


async def test_normal_file(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path, port: int
) -> None:
    result = await fetch(client, guard, f"http://127.0.0.1:{port}/file", dest)
    assert read(dest) == BODY
    assert result.sha256 == hashlib.sha256(BODY).hexdigest()
    assert result.bytes == len(BODY)
    assert result.content_type == "video/mp4"
    assert result.final_url == f"http://127.0.0.1:{port}/file"
    assert leftovers(dest) == ["video.mp4"]


async def test_connects_to_the_address_it_checked(
    client: httpx.AsyncClient,
    guard: UrlGuard,
    dest: Path,
    port: int,
    dns: FakeDNS,
    backend: RecordingBackend,
) -> None:
    # files.test exists only in the fake resolver: the transport connected to the IP
    # the guard returned, while the request still names files.test.
    url = f"http://files.test:{port}/whoami"
    await fetch(client, guard, url, dest)
    assert read(dest).decode() == f"auth=no host=files.test:{port}"
    assert backend.connected == ["127.0.0.1"]
    assert dns.lookups == ["files.test", "files.test"]  # pre-flight, then at connect


async def test_https_through_a_pinned_address_verifies_the_host_name(
    guard: UrlGuard,
    dest: Path,
    tls_port: int,
    tls_ca: trustme.CA,
    backend: RecordingBackend,
) -> None:
    # The connection goes to 127.0.0.1, yet TLS (SNI, certificate check) is done for
    # files.test: the certificate, issued for files.test only, verifies.
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    async with guarded_client(guard, verify=context, network_backend=backend) as client:
        result = await fetch(client, guard, f"https://files.test:{tls_port}/file", dest)
        assert result.sha256 == hashlib.sha256(BODY).hexdigest()
        assert backend.connected == ["127.0.0.1"]
        # Asked for by address, the same server fails verification: the name counts.
        with pytest.raises(TransientFetchError) as caught:
            await fetch(
                client,
                guard,
                f"https://127.0.0.1:{tls_port}/file",
                dest,
                policy=fetch_retry_policy(0),
            )
        assert caught.value.code == "network"
        assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message


async def test_size_cap_on_a_streamed_body(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path, port: int
) -> None:
    with pytest.raises(PermanentFetchError) as caught:
        await fetch(client, guard, f"http://127.0.0.1:{port}/huge", dest, max_bytes=300_000)
    assert caught.value.code == "too_large"
    assert isinstance(caught.value, PermanentProviderError)
    assert leftovers(dest) == []


async def test_size_cap_on_declared_length(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path, port: int
) -> None:
    with pytest.raises(PermanentFetchError, match="declares") as caught:
        await fetch(client, guard, f"http://127.0.0.1:{port}/declared-huge", dest)
    assert caught.value.code == "too_large"


async def test_body_at_exactly_the_cap_is_accepted(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path, port: int
) -> None:
    result = await fetch(client, guard, f"http://127.0.0.1:{port}/file", dest, max_bytes=len(BODY))
    assert result.bytes == len(BODY)


# --- redirects -------------------------------------------------------------------------


async def test_redirect_chain(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path, port: int
) -> None:
    result = await fetch(client, guard, f"http://127.0.0.1:{port}/redirect/4", dest)
    assert result.final_url == f"http://127.0.0.1:{port}/file"
    assert read(dest) == BODY


async def test_redirect_to_another_allowed_host(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path, port: int
) -> None:
    target = f"http://cdn.test:{port}/redirect/1"
    result = await fetch(client, guard, f"http://127.0.0.1:{port}/to?status=307&url={target}", dest)
    assert result.final_url == f"http://cdn.test:{port}/file"


async def test_too_many_redirects(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path, port: int
) -> None:
    await fetch(client, guard, f"http://127.0.0.1:{port}/redirect/4", dest, max_redirects=5)
    with pytest.raises(PermanentFetchError) as caught:
        await fetch(client, guard, f"http://127.0.0.1:{port}/redirect/5", dest, max_redirects=5)
    assert caught.value.code == "too_many_redirects"


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://10.0.0.1/",
        "http://[::ffff:169.254.169.254]/",
        "http://user:pw@cdn.test/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:25/",
    ],
)
async def test_redirect_to_unsafe_target_is_refused_without_connecting(
    client: httpx.AsyncClient,
    guard: UrlGuard,
    dest: Path,
    port: int,
    backend: RecordingBackend,
    target: str,
) -> None:
    with pytest.raises(PermanentFetchError) as caught:
        await fetch(client, guard, f"http://127.0.0.1:{port}/to?url={target}", dest)
    assert caught.value.code == "unsafe_url"
    assert isinstance(caught.value.__cause__, UnsafeUrl)
    assert backend.connected == ["127.0.0.1"]  # only the first hop, on loopback
    assert leftovers(dest) == []


async def test_redirect_to_a_name_resolving_privately_is_refused(
    client: httpx.AsyncClient,
    guard: UrlGuard,
    dest: Path,
    port: int,
    dns: FakeDNS,
    backend: RecordingBackend,
) -> None:
    dns.zone["evil.test"] = [["93.184.216.34", "169.254.169.254"]]
    with pytest.raises(PermanentFetchError) as caught:
        await fetch(client, guard, f"http://127.0.0.1:{port}/to?url=http://evil.test/", dest)
    assert caught.value.code == "unsafe_url"
    assert backend.connected == ["127.0.0.1"]


async def test_redirect_without_location(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path, port: int
) -> None:
    with pytest.raises(PermanentFetchError) as caught:
        await fetch(client, guard, f"http://127.0.0.1:{port}/no-location", dest)
    assert caught.value.code == "bad_redirect"


async def test_credentials_stay_with_their_origin(
    client: httpx.AsyncClient, guard: UrlGuard, tmp_path: Path, port: int
) -> None:
    auth = {"Authorization": "Bearer provider-key"}
    direct = tmp_path / "direct.txt"
    await fetch(client, guard, f"http://127.0.0.1:{port}/whoami", direct, headers=auth)
    assert read(direct).decode().startswith("auth=yes")
    moved = tmp_path / "moved.txt"
    target = f"http://cdn.test:{port}/whoami"
    await fetch(client, guard, f"http://127.0.0.1:{port}/to?url={target}", moved, headers=auth)
    assert read(moved).decode().startswith("auth=no")


# --- DNS rebinding: the transport's own check ------------------------------------------


async def test_rebinding_between_check_and_connect_is_refused(
    client: httpx.AsyncClient,
    guard: UrlGuard,
    dest: Path,
    port: int,
    dns: FakeDNS,
    backend: RecordingBackend,
) -> None:
    # First answer (the pre-flight check) is allowed; the next one points inside.
    dns.zone["rebind.test"] = [["127.0.0.1"], ["10.0.0.1"]]
    with pytest.raises(PermanentFetchError) as caught:
        await fetch(client, guard, f"http://rebind.test:{port}/file", dest)
    assert caught.value.code == "unsafe_url"
    assert "10.0.0.1" in caught.value.message
    assert backend.connected == []


async def test_transport_guards_a_client_that_follows_redirects_itself(
    client: httpx.AsyncClient, port: int, backend: RecordingBackend
) -> None:
    with pytest.raises(UnsafeUrl, match="link-local"):
        await client.get(
            f"http://127.0.0.1:{port}/to?url=http://169.254.169.254/", follow_redirects=True
        )
    with pytest.raises(UnsafeUrl, match="private"):
        await client.get("http://10.0.0.1/")
    assert backend.connected == ["127.0.0.1"]


async def test_transport_turns_dns_failure_into_a_connect_error(
    client: httpx.AsyncClient, backend: RecordingBackend
) -> None:
    with pytest.raises(httpx.ConnectError, match="does not resolve"):
        await client.get("http://nowhere.test/")
    assert backend.connected == []


# --- retries and failures --------------------------------------------------------------


async def test_503_then_200_is_retried(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path, port: int
) -> None:
    url = f"http://127.0.0.1:{port}/flaky?key=s503&fail=2&retry_after=0"
    result = await fetch(client, guard, url, dest)
    assert result.sha256 == hashlib.sha256(BODY).hexdigest()
    assert HITS["s503"] == 3


async def test_429_with_retry_after_is_retried(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path, port: int
) -> None:
    url = f"http://127.0.0.1:{port}/flaky?key=s429&fail=1&status=429&retry_after=0"
    await fetch(client, guard, url, dest)
    assert HITS["s429"] == 2


async def test_long_retry_after_is_left_to_the_caller(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path, port: int
) -> None:
    url = f"http://127.0.0.1:{port}/flaky?key=long&fail=1&status=429&retry_after=3600"
    with pytest.raises(TransientFetchError) as caught:
        await fetch(client, guard, url, dest)
    assert (caught.value.code, caught.value.retry_after_s) == ("http_429", 3600.0)
    assert HITS["long"] == 1


async def test_persistent_5xx_gives_up_as_transient(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path, port: int
) -> None:
    with pytest.raises(TransientFetchError) as caught:
        await fetch(client, guard, f"http://127.0.0.1:{port}/status/502?key=s502", dest)
    assert caught.value.code == "http_502"
    assert isinstance(caught.value, TransientProviderError)
    assert HITS["s502"] == 4  # FAST allows three retries
    assert leftovers(dest) == []


@pytest.mark.parametrize("code", [404, 403, 410])
async def test_4xx_is_permanent_and_not_retried(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path, port: int, code: int
) -> None:
    key = f"s{code}"
    with pytest.raises(PermanentFetchError) as caught:
        await fetch(client, guard, f"http://127.0.0.1:{port}/status/{code}?key={key}", dest)
    assert (caught.value.code, caught.value.status_code) == (f"http_{code}", code)
    assert HITS[key] == 1


async def test_stalled_body_hits_the_read_timeout(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path, port: int
) -> None:
    started = time.monotonic()
    with pytest.raises(TransientFetchError) as caught:
        await fetch(
            client,
            guard,
            f"http://127.0.0.1:{port}/slow",
            dest,
            read_timeout_s=0.2,
            policy=fetch_retry_policy(1, base_delay_s=0.01),
        )
    assert caught.value.code == "timeout"
    assert time.monotonic() - started < 3
    assert leftovers(dest) == []


async def test_trickling_body_hits_the_total_timeout(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path, port: int
) -> None:
    started = time.monotonic()
    with pytest.raises(TransientFetchError, match=r"longer than 0\.5 s") as caught:
        await fetch(client, guard, f"http://127.0.0.1:{port}/drip", dest, timeout_s=0.5)
    assert caught.value.code == "timeout"
    assert time.monotonic() - started < 2
    assert leftovers(dest) == []


async def test_connection_refused_is_transient(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(TransientFetchError) as caught:
        await fetch(
            client, guard, f"http://127.0.0.1:{closed_port}/", dest, policy=fetch_retry_policy(0)
        )
    assert caught.value.code == "network"


@pytest.mark.parametrize(
    ("retries", "delays"),
    [(0, ()), (1, (0.5,)), (3, (0.5, 1.0, 2.0)), (6, (0.5, 1.0, 2.0, 4.0, 8.0, 8.0))],
)
def test_retry_schedule(retries: int, delays: tuple[float, ...]) -> None:
    assert fetch_retry_policy(retries).transient_delays_s == delays


@pytest.mark.parametrize("url", ["http://[::1", "file:///etc/passwd", "http://10.0.0.1/x"])
async def test_unsafe_or_malformed_first_url(
    client: httpx.AsyncClient, guard: UrlGuard, dest: Path, backend: RecordingBackend, url: str
) -> None:
    with pytest.raises(PermanentFetchError) as caught:
        await fetch(client, guard, url, dest)
    assert caught.value.code == "unsafe_url"
    assert backend.connected == []
