"""Helpers shared by the benchmarks: scratch databases, child processes, percentiles,
CPU meters and the facts about the machine a result was measured on.

Everything here talks to 127.0.0.1 only and cleans up after itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
# The PostgreSQL server of the test suite; scratch databases are created beside `test`.
PG_ADMIN_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
RESULT_PREFIX = "BENCH_RESULT "
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- output --------------------------------------------------------------------


def emit(result: dict[str, Any]) -> None:
    """Print the result line (the last line of stdout) that run_all.py reads."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so cleanup (child processes, scratch databases,
    temporary directories) runs when run_all.py or a user stops a benchmark."""

    def _raise(_signum: int, _frame: object) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, _raise)


def note(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


# -- the machine -----------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def _host_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


class HostCpu:
    """Busy cores of the whole machine over a window: other load shows up here."""

    def __init__(self) -> None:
        self._busy, self._total = _host_jiffies()
        self._wall = time.monotonic()

    def busy_cores(self) -> float:
        busy, _total = _host_jiffies()
        elapsed = time.monotonic() - self._wall
        return round((busy - self._busy) / CLK_TCK / elapsed, 2) if elapsed > 0 else 0.0


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and of its live descendants (``vidpipe api
    --processes N`` forks its servers; a live child's CPU is not in its parent's)."""
    total = process_cpu_s(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                total += process_tree_cpu_s(int(child))
            except (OSError, ValueError, IndexError):
                continue  # it exited meanwhile
    return total


def wait_for_quiet(max_wait_s: float = 60.0, threshold_cores: float = 0.3) -> float:
    """Wait (bounded) until the machine is nearly idle; returns the busy cores last seen.

    Other processes on a 2-core machine change every figure, so each benchmark starts
    on a quiet machine when it can and reports how busy it was otherwise.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        meter = HostCpu()
        time.sleep(1.0)
        busy = meter.busy_cores()
        if busy <= threshold_cores or time.monotonic() >= deadline:
            if busy > threshold_cores:
                note(f"machine still busy ({busy} cores in use by others); measuring anyway")
            return busy
        note(f"machine busy ({busy} cores in use); waiting for it to settle")
        time.sleep(2.0)


# -- child processes ---------------------------------------------------------------


def vidpipe_cmd(*args: str) -> list[str]:
    """The vidpipe command line of this interpreter (the venv's editable install)."""
    return [sys.executable, "-m", "vidpipe", *args]


def bench_env(home: Path, database_url: str | None, **settings: str) -> dict[str, str]:
    """The environment of a vidpipe child: no VIDPIPE_* leaks in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDPIPE_")}
    env["VIDPIPE_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    if database_url is not None:
        env["VIDPIPE_DATABASE_URL"] = database_url
    for key, value in settings.items():
        env[f"VIDPIPE_{key.upper()}"] = value
    return env


def clear_vidpipe_env() -> None:
    """For benchmarks that build Settings in-process: explicit values only."""
    for key in [k for k in os.environ if k.startswith("VIDPIPE_")]:
        del os.environ[key]


def run_checked(cmd: list[str], env: dict[str, str], timeout: float = 120.0) -> str:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """A process this benchmark started, with its output in a log file."""

    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, cmd: list[str], env: dict[str, str], log: Path) -> Child:
        handle = log.open("wb")
        try:
            proc = subprocess.Popen(
                cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            handle.close()
        return cls(proc, log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (the process drains and exits), then SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                note(f"pid {self.proc.pid} did not stop in {timeout:.0f} s; killing it")
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def wait_http_ok(url: str, child: Child, timeout: float = 60.0) -> None:
    """Wait until GET ``url`` (on 127.0.0.1) answers 200, or the child dies."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"the server exited early:\n{child.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s:\n{child.tail()}")


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"vidpipe-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- scratch databases -------------------------------------------------------------


def _pg_url(name: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base}/{name}"


@contextlib.asynccontextmanager
async def scratch_database(kind: str) -> AsyncIterator[str | None]:
    """A database URL for one run: None means SQLite under $VIDPIPE_HOME (the default);
    for PostgreSQL a new database is created and dropped afterwards."""
    if kind == "sqlite":
        yield None
        return
    if kind != "postgres":
        raise ValueError(f"unknown database kind {kind!r}")
    name = f"vidpipe_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _pg_url(name)
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def raw_pg_dsn(url: str) -> str:
    """asyncpg's form of a postgresql:// URL (no SQLAlchemy driver suffix)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)
