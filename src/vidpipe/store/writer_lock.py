"""The lock that SQLite writers of different processes queue on, with a kernel wake-up.

SQLite lets one connection write at a time. A writer that finds the database locked
by another process can only try again later: SQLite's busy handler sleeps 1, 2, 5 …
100 ms between tries, and vidpipe's inline writers retry on short asyncio sleeps. Either
way a waiting writer learns late that the lock is free, and in the meantime its
requests wait. Two ``vidpipe api`` processes on one SQLite file left a fifth of the
machine idle that way.

Here the writers of every vidpipe process on a database first take an exclusive
``flock`` on a file beside it. A free lock is taken with one non-blocking call; a held
one is waited for in a thread blocked in ``flock``, which the kernel wakes the moment
the holder releases it. ``BEGIN IMMEDIATE`` then normally finds SQLite's lock free
(a writer outside vidpipe still meets the retry loop of ``Database.write``).

A waiter cancelled while its thread still blocks leaves the thread's future behind:
the next writer of the process adopts it (the lock, once the thread has it, is the
process's, and flock has no owner thread), and if none comes, a callback releases it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

try:
    import fcntl
except ImportError:  # Windows: no flock; writers there meet only in SQLite's lock
    fcntl = None  # type: ignore[assignment]

AVAILABLE = fcntl is not None


class WriterLockTimeout(Exception):
    """The lock stayed held by another process for the whole timeout."""


class WriterLock:
    """An exclusive advisory lock on ``path``, held by at most one writer of a process
    at a time (the caller serializes its own writers, as ``Database.write`` does)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.waits = 0  # acquisitions that had to wait for another process (tests)
        self._fd: int | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: asyncio.Future[None] | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return self._fd

    async def acquire(self, timeout_s: float) -> None:
        fd = self._open()
        pending = self._pending
        if pending is not None and not pending.done():
            # A cancelled writer's thread is still waiting: this writer takes it over.
            self._pending = None
            await self._wait(pending, timeout_s)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        self.waits += 1
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidpipe-lock")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, fcntl.flock, fd, fcntl.LOCK_EX)
        await self._wait(future, timeout_s)

    async def _wait(self, future: asyncio.Future[None], timeout_s: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except BaseException as exc:
            # The thread keeps waiting: leave its lock to the next writer, or let go of
            # it when it arrives and nobody took it over.
            self._pending = future
            future.add_done_callback(self._release_unclaimed)
            if isinstance(exc, TimeoutError):
                raise WriterLockTimeout(self.path) from None
            raise

    def _release_unclaimed(self, future: asyncio.Future[None]) -> None:
        if self._pending is not future:
            return  # adopted by a later writer
        self._pending = None
        if not future.cancelled() and future.exception() is None:
            self.release()

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
