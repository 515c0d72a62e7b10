"""``vidpipe serve``, ``vidpipe api`` and ``vidpipe worker``: the long-running processes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import uvicorn
from rich.console import Console

from vidpipe.api.app import create_app
from vidpipe.config import Settings
from vidpipe.core.runtime import Runtime
from vidpipe.store import tenants as tenant_q

console = Console(stderr=True)

OPEN_TENANT = "default"
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


async def serve(settings: Settings, *, host: str, port: int, workers: int, migrate: bool) -> None:
    """The API on host:port, plus ``workers`` embedded worker loops in the same process."""
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
    console.print(
        f"vidpipe {'serving' if workers else 'API'} on http://{host}:{port} "
        f"(database {runtime.db.engine.url.render_as_string(hide_password=True)}, "
        f"storage {runtime.blobs.describe()}, {workers} embedded worker(s))"
    )
    if workers:
        console.print(_how_to(host, port, settings.auth_disabled))
    freeze_startup_heap()
    try:
        await server.serve()
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
