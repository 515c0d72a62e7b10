"""Helpers of the browser tests: a real ``vidpipe serve`` and Debian's Chromium.

Chromium is the system one (``apt-get install chromium``), driven by Playwright's Python
package; ``playwright install`` (which downloads a browser) is never needed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import VIDPIPE, free_port, vidpipe_env, wait_http
from vidpipe.cli.costs import set_budget
from vidpipe.cli.keys import create_key
from vidpipe.config import Settings

CHROMIUM = Path(os.environ.get("VIDPIPE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PRICE_PER_SECOND_USD = 0.05


def require_chromium() -> None:
    """Skip without Chromium on a developer's machine; fail in CI, which must have it."""
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing: apt-get install chromium"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Server:
    url: str
    home: Path
    key: str | None
    other_key: str | None  # of another tenant, "globex"
    process: subprocess.Popen[bytes]

    def wait_ready(self) -> Server:
        wait_http(self.url + "/healthz", timeout_s=45)
        return self

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def api(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        return httpx.request(
            method, self.url + path, headers=headers or self.headers(), timeout=10, **kwargs
        )

    def create_video(self, **body: Any) -> dict[str, Any]:
        body.setdefault("seconds", 1)
        body.setdefault("size", "640x360")
        response = self.api("POST", "/v1/videos", json=body)
        assert response.status_code == 202, response.text
        video: dict[str, Any] = response.json()
        return video


def _prepare(home: Path) -> tuple[str, str]:
    """Tenants ``acme`` (a user key, budgets) and ``globex`` (a user key), made before
    the server starts."""

    async def run() -> tuple[str, str]:
        settings = Settings(home=home)
        _, key = await create_key(settings, "acme", "user", "browser tests")
        _, other_key = await create_key(settings, "globex", "user", None)
        await set_budget(settings, "acme", "month", 20.0)
        await set_budget(settings, "global", "day", 50.0)
        return key, other_key

    # In its own thread: Playwright's sync API keeps an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(run())).result()


def _start(tmp: Path, *, auth: bool) -> Server:
    home = tmp / "home"
    key, other_key = _prepare(home) if auth else (None, None)
    port = free_port()
    env = vidpipe_env(
        home,
        VIDPIPE_LOCAL_MIN_LATENCY_S="2",
        VIDPIPE_IDLE_POLL_S="0.2",
        # A music library that starts empty: a plan naming a bed fails until it appears.
        VIDPIPE_MUSIC_DIR=str(home / "music"),
        VIDPIPE_VALIDATION_MODE="basic",
        VIDPIPE_PRICES=json.dumps(
            {"local/procedural": {"unit": "second", "usd": PRICE_PER_SECOND_USD}}
        ),
        VIDPIPE_SIMULATED_CONFIG=json.dumps({"content_policy_rate": 1.0, "latency_median_s": 0.3}),
        VIDPIPE_AUTH_DISABLED="false" if auth else "true",
    )
    tmp.mkdir(parents=True, exist_ok=True)
    with (tmp / "serve.log").open("ab") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            # The server with auth off only shows pages: no worker needed.
            [*VIDPIPE, "serve", "--host", "127.0.0.1", "--port", str(port)]
            + ([] if auth else ["--workers", "0"]),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Server(f"http://127.0.0.1:{port}", home, key, other_key, process)


@contextmanager
def serving(tmp: Path) -> Iterator[tuple[Server, Server]]:
    """Two ``vidpipe serve`` processes on free loopback ports, starting together: one
    with API keys (tenant ``acme``, a user key, budgets) and one with auth off.

    Local clips take at least 2 s (so a page sees them queued, then running) and are
    priced so costs show; the simulated model fails every job with a content-policy
    reason.
    """
    servers: list[Server] = []
    try:
        servers.append(_start(tmp / "open", auth=False))
        servers.append(_start(tmp / "keyed", auth=True))
        # Not waited for here: the caller waits (Server.wait_ready) after starting
        # the browser, so both start-ups overlap.
        yield servers[1], servers[0]
    finally:
        for server in servers:
            server.process.terminate()
        for server in servers:
            try:
                server.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(timeout=10)
