"""``vidpipe serve``, ``vidpipe api`` and ``vidpipe worker``: the long-running processes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
import time
from collections.abc import Coroutine, Iterator
from types import FrameType
from typing import Any, TypeVar

import uvicorn
from rich.console import Console

from vidpipe.api.app import create_app
from vidpipe.api.ratelimit import share_between_forked_processes
from vidpipe.config import Settings
from vidpipe.core.runtime import Runtime
from vidpipe.store import tenants as tenant_q

console = Console(stderr=True)

OPEN_TENANT = "default"
# Seconds an idle client connection stays open (see uvicorn.Config below).
SERVER_KEEP_ALIVE_S = 30
T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a long-running process's coroutine on uvloop (installed with
    ``uvicorn[standard]`` where it builds), else on asyncio's own loop.

    uvicorn only picks uvloop when it creates the loop (``uvicorn.run``); vidpipe starts
    the loop itself, to run workers beside the API, so it picks it here. The request
    path spends about a fifth of its CPU in the loop and its sockets (bench/README.md).
    """
    try:
        import uvloop
    except ImportError:  # Windows, PyPy: no uvloop
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    migrate: bool,
    sockets: list[socket.socket] | None = None,
    announce: bool = True,
) -> None:
    """The API on host:port (or on ``sockets`` already listening), plus ``workers``
    embedded worker loops in the same process."""
    settings.check_serving(host)
    runtime = await Runtime.open(settings, run_migrations=migrate)
    open_tenant_id = None
    if settings.auth_disabled:
        async with runtime.db.write() as conn:
            tenant = await tenant_q.ensure_tenant(conn, OPEN_TENANT, runtime.clock.now())
        open_tenant_id = tenant.id
        console.print(
            f"[yellow]auth is OFF (VIDPIPE_AUTH_DISABLED): every request on {host} acts as "
            f"tenant '{OPEN_TENANT}'. Never expose this port.[/yellow]"
        )
    app = create_app(runtime, open_tenant_id=open_tenant_id)
    server = _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=10,
            # An idle connection is closed by the server only well after clients let
            # go of it: httpx keeps one for 5 s, as long as uvicorn's default, and a
            # request sent on a connection the server is closing at that moment fails
            # (the client reads nothing, the server sees a disconnect mid-body).
            timeout_keep_alive=SERVER_KEEP_ALIVE_S,
        )
    )
    stop = asyncio.Event()

    def _shutdown() -> None:
        server.should_exit = True
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _shutdown)
    tasks = [asyncio.create_task(runtime.new_worker().run(stop)) for _ in range(workers)]
    if announce:
        console.print(
            f"vidpipe {'serving' if workers else 'API'} on http://{host}:{port} "
            f"(database {runtime.db.engine.url.render_as_string(hide_password=True)}, "
            f"storage {runtime.blobs.describe()}, {workers} embedded worker(s))"
        )
    if workers:
        console.print(_how_to(host, port, settings.auth_disabled))
    freeze_startup_heap()
    try:
        await server.serve(sockets=sockets)
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await task
        await runtime.close()


def freeze_startup_heap() -> None:
    """Hide what start-up made (modules, the app, SQLAlchemy's and pydantic's schemas:
    it lives as long as the process) from the garbage collector.

    Python's full collections scan every tracked object. Under load they came every
    couple of seconds and stopped the process for 125-165 ms each, which set the p99
    of ``POST /v1/videos``; with start-up frozen they take ~4 ms (bench/README.md).
    """
    gc.collect()
    gc.freeze()


class _Server(uvicorn.Server):
    """uvicorn's server, with signals left to us: on SIGTERM the API stops accepting,
    the embedded workers drain, and the process exits 0 (uvicorn would re-raise the
    signal after its own shutdown and kill the draining workers)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# A child that dies sooner than this after its start is restarted only after a pause,
# so a process that cannot start does not fork in a tight loop.
_QUICK_DEATH_S = 2.0


def run_api_processes(settings: Settings, *, host: str, port: int, processes: int) -> int:
    """``processes`` API processes answering on one listening socket; returns the exit code.

    One Python process serves one core. Here the parent checks that host:port is free
    and forks the servers, each listening on it with SO_REUSEPORT (the kernel hands
    each new connection to one of them). The parent only supervises: SIGTERM or SIGINT
    is passed on to every server, which stops accepting and finishes its requests; a
    server that dies on its own is replaced. The servers share the per-tenant rate
    limit buckets (made here, before the forks); each keeps its own read caches, and
    its own process figures (CPU, memory) on ``/metrics``.
    """
    settings.check_serving(host)
    # Each server listens on its own SO_REUSEPORT socket, among which the kernel spreads
    # the connections evenly. Servers accepting from one shared socket do not share the
    # work: whichever is idle first takes the new connections, and in a measurement 31
    # of 32 keep-alive connections went to one server while the other idled.
    # Without SO_REUSEPORT (not Linux/BSD) they share one socket made here.
    shared = None if hasattr(socket, "SO_REUSEPORT") else _listening_socket(host, port)
    if shared is None:
        _listening_socket(host, port, reuse_port=True).close()  # the port is ours to use
    share_between_forked_processes()
    children: dict[int, float] = {}
    stopping = False

    def start_one() -> None:
        pid = os.fork()
        if pid == 0:  # the child: one API server
            code = 1
            try:
                # Until the server installs its own handlers, a stop request ends the
                # start-up cleanly (the supervisor may stop a server it just started).
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, _exit_now)
                _stop_with_parent()
                listener = shared or _listening_socket(host, port, reuse_port=True)
                run(
                    serve(
                        settings,
                        host=host,
                        port=port,
                        workers=0,
                        migrate=False,
                        sockets=[listener],
                        announce=False,
                    )
                )
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0
            except BaseException as exc:  # a forked child must never return to the CLI
                console.print(f"[red]API process {os.getpid()} failed: {exc!r}[/red]")
            finally:
                os._exit(code)
        children[pid] = time.monotonic()

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(processes):
        start_one()
    console.print(
        f"vidpipe API on http://{host}:{port}: {processes} processes "
        f"({', '.join(str(pid) for pid in children)})"
    )
    worst = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        started = children.pop(pid, None)
        if started is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if stopping:  # the exit code is how the servers stopped when asked to
            worst = max(worst, code if code >= 0 else 128 - code)
            continue
        console.print(f"[yellow]API process {pid} exited ({code}); starting another[/yellow]")
        if time.monotonic() - started < _QUICK_DEATH_S:
            time.sleep(1.0)
        if not stopping:
            start_one()
    if shared is not None:
        shared.close()
    return worst


def _exit_now(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def _stop_with_parent() -> None:
    """Linux: have the kernel send this process SIGTERM when its parent dies, so a
    supervisor killed with SIGKILL leaves no server behind on the port."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def _listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def run_worker(settings: Settings, *, concurrency: int | None) -> None:
    """One worker process: claims steps until SIGTERM/SIGINT, then drains."""
    runtime = await Runtime.open(settings, run_migrations=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = runtime.new_worker(concurrency=concurrency)
    console.print(
        f"worker {worker.id} on {runtime.db.engine.url.render_as_string(hide_password=True)}"
    )
    freeze_startup_heap()
    try:
        await worker.run(stop)
    finally:
        await runtime.close()


def _how_to(host: str, port: int, open_access: bool) -> str:
    auth = "" if open_access else ' -H "Authorization: Bearer $VIDPIPE_API_KEY"'
    base = f"http://{host}:{port}"
    return (
        "\nMake a video:\n"
        f"  curl -s {base}/v1/videos{auth} -H 'Content-Type: application/json' \\\n"
        '       -d \'{"prompt": "a paper boat on a calm lake", "seconds": 4, '
        '"size": "720x1280"}\'\n'
        f"  curl -s {base}/v1/videos/<id>{auth}            # status and progress\n"
        f"  curl -s -o video.mp4 {base}/v1/videos/<id>/content{auth}\n"
        f"API docs: {base}/docs    Stop: Ctrl-C\n"
    )
