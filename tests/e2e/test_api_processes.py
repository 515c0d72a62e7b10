"""``vidpipe api --processes N``: N servers on one port under a supervisor."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import VIDPIPE, free_port, run_vidpipe, vidpipe_env, wait_http

pytestmark = pytest.mark.timeout(120)


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that never comes counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for(predicate: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


async def _post_many(base: str, key: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        return await asyncio.gather(
            *(
                client.post(
                    "/v1/videos",
                    json={"prompt": f"clip {i}", "model": "instant/test", "seconds": 1},
                    headers={"Authorization": f"Bearer {key}"},
                )
                for i in range(count)
            )
        )


def _start_two_servers(
    tmp_path: Path, *, output: int | None = subprocess.DEVNULL, **settings: str
) -> tuple[subprocess.Popen[str], str, str]:
    """A migrated home, a key, and ``vidpipe api --processes 2`` answering: (process, url, key)."""
    port = free_port()
    env = vidpipe_env(tmp_path, VIDPIPE_INSTANT_PROVIDER="true", VIDPIPE_PORT=str(port), **settings)
    run_vidpipe("migrate", env=env)
    key = run_vidpipe("keys", "create", "--tenant", "t", env=env).stdout.strip().splitlines()[-1]
    parent = subprocess.Popen(
        [*VIDPIPE, "api", "--processes", "2"],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return parent, f"http://127.0.0.1:{port}", key


def test_two_api_processes_share_the_port_and_survive_a_killed_server(tmp_path: Path) -> None:
    parent, base, key = _start_two_servers(
        tmp_path, output=subprocess.PIPE, VIDPIPE_RATE_LIMIT_PER_S="0"
    )
    try:
        wait_http(f"{base}/healthz")
        _wait_for(lambda: len(_children(parent.pid)) == 2)
        first = _children(parent.pid)

        answers = asyncio.run(_post_many(base, key, 60))
        assert [a.status_code for a in answers] == [202] * 60
        ids = {a.json()["id"] for a in answers}
        assert len(ids) == 60

        # One server dies: the other keeps answering, the supervisor starts a new one.
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        answers = asyncio.run(_post_many(base, key, 20))
        assert [a.status_code for a in answers] == [202] * 20
        _wait_for(lambda: len(_children(parent.pid)) == 2 and victim not in _children(parent.pid))
        answers = asyncio.run(_post_many(base, key, 20))
        assert [a.status_code for a in answers] == [202] * 20

        with sqlite3.connect(tmp_path / "vidpipe.db") as db:
            assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 100
        servers = _children(parent.pid)
    finally:
        parent.send_signal(signal.SIGTERM)
        out, _ = parent.communicate(timeout=30)
    assert parent.returncode == 0, out
    assert "2 processes" in out
    for pid in servers:  # every server stopped with its supervisor
        assert not _alive(pid)


def test_servers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    port = free_port()
    env = vidpipe_env(tmp_path, VIDPIPE_PORT=str(port))
    run_vidpipe("migrate", env=env)
    parent = subprocess.Popen(
        [*VIDPIPE, "api", "--processes", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        _wait_for(lambda: len(_children(parent.pid)) == 2)
        servers = _children(parent.pid)
    finally:
        parent.kill()
        parent.wait(timeout=10)
    _wait_for(lambda: not any(_alive(pid) for pid in servers))


def test_the_servers_share_one_rate_limit(tmp_path: Path) -> None:
    parent, base, key = _start_two_servers(
        tmp_path,
        VIDPIPE_RATE_LIMIT_PER_S="0.001",  # no refill during the test
        VIDPIPE_RATE_LIMIT_BURST="12",
    )
    try:
        wait_http(f"{base}/healthz")
        _wait_for(lambda: len(_children(parent.pid)) == 2)
        # 48 fresh connections: the kernel spreads them over both servers (all on one
        # has odds of 2^-47). Each server with its own buckets would admit 12.
        answers = asyncio.run(_post_many(base, key, 48))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [202] * 12 + [429] * 36
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        with sqlite3.connect(tmp_path / "vidpipe.db") as db:
            assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 12
    finally:
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=30)


def test_an_idle_connection_outlives_the_clients_keep_alive(tmp_path: Path) -> None:
    """httpx (and so vidpipe's client) keeps an idle connection for 5 s and then reuses
    it: the server must not close it first, or a request sent just then is lost (seen
    as a ReadError by the client). Two requests on one connection, 6 s apart."""
    port = free_port()
    env = vidpipe_env(tmp_path, VIDPIPE_PORT=str(port))
    run_vidpipe("migrate", env=env)
    server = subprocess.Popen(
        [*VIDPIPE, "api"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            sockets = []
            for pause in (0.0, 6.0):
                time.sleep(pause)
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                assert response.status == 200, (pause, response.status)
                response.read()
                sockets.append(conn.sock)
            assert sockets[0] is sockets[1]  # the same connection, not a new one
        finally:
            conn.close()
    finally:
        server.terminate()
        server.wait(timeout=15)
