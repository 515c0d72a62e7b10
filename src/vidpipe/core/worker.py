"""The worker loop: claim due steps, run each as a task, keep leases alive, drain.

A worker holds only the steps it is actively advancing; a step waiting for a
provider is a row with a ``run_at``. Wake-ups come from the same process (the API
created a job), from PostgreSQL ``LISTEN/NOTIFY`` (another process did), or from the
clock (the earliest ``run_at``), with ``idle_poll_s`` as the upper bound of a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
from collections.abc import Mapping

import httpx

from vidpipe.core import reconciler
from vidpipe.core.clock import Clock
from vidpipe.core.executor import StepExecutor
from vidpipe.ids import new_id
from vidpipe.notify import outbox
from vidpipe.obs import logging as obs_logging
from vidpipe.obs import watchdog
from vidpipe.plans.workdirs import sweep_stale_tmp, sweep_work_dirs
from vidpipe.store import steps as step_q
from vidpipe.store.db import NOTIFY_CHANNEL, Database
from vidpipe.store.records import Step

log = logging.getLogger("vidpipe.worker")

HOUSEKEEPING_INTERVAL_S = 60.0
OUTBOX_INTERVAL_S = 1.0


class Worker:
    def __init__(
        self,
        db: Database,
        executor: StepExecutor,
        clock: Clock,
        *,
        concurrency: int,
        lease_s: float,
        idle_poll_s: float,
        drain_timeout_s: float,
        max_in_flight: Mapping[str, int],
        rate_per_min: Mapping[str, int] | None = None,
        listen: bool = True,
        idempotency_ttl_s: float = 48 * 3600,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.db = db
        self.executor = executor
        self.clock = clock
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.idle_poll_s = idle_poll_s
        self.drain_timeout_s = drain_timeout_s
        self.max_in_flight = dict(max_in_flight)
        self.rate_per_min = dict(rate_per_min or {})
        self.listen = listen and db.is_postgres
        self.idempotency_ttl_s = idempotency_ttl_s
        self.http = http
        self.id = new_id("wrk")
        self.running: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self.steps_done = 0

    def wake(self) -> None:
        """Look for due steps now (safe to call from the worker's event loop only)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then drain and return."""
        obs_logging.bind(worker_id=self.id)
        now = self.clock.now()
        async with self.db.write() as conn:
            await step_q.register_worker(conn, self.id, socket.gethostname(), os.getpid(), now)
        log.info("worker %s started (concurrency %d)", self.id, self.concurrency)
        helpers = [asyncio.create_task(self._heartbeats(stop))]
        if self.http is not None:
            helpers.append(asyncio.create_task(self._outbox(stop, self.http)))
        if self.listen:
            helpers.append(asyncio.create_task(self._listen(stop)))
        stop_waiter = asyncio.create_task(stop.wait())
        stop_waiter.add_done_callback(lambda _t: self._wake.set())
        try:
            while not stop.is_set():
                claimed = await self._claim()
                if claimed:
                    continue  # more may be due: look again at once
                await self._sleep()
        finally:
            await self._drain()
            for task in (*helpers, stop_waiter):
                task.cancel()
            for task in (*helpers, stop_waiter):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(Exception):
                async with self.db.write() as conn:
                    await step_q.worker_heartbeat(conn, self.id, self.clock.now(), stopped=True)
            log.info("worker %s stopped after %d step actions", self.id, self.steps_done)

    async def _claim(self) -> int:
        free = self.concurrency - len(self.running)
        if free <= 0:
            return 0
        try:
            steps = await step_q.claim_steps(
                self.db,
                worker_id=self.id,
                limit=free,
                now=self.clock.now(),
                lease_s=self.lease_s,
                max_in_flight=self.max_in_flight,
                rate_per_min=self.rate_per_min,
            )
        except Exception:
            log.exception("claim failed; retrying after a pause")
            await asyncio.sleep(min(self.idle_poll_s, 1.0))
            return 0
        for step in steps:
            task = asyncio.create_task(self._run_step(step))
            self.running.add(task)
            task.add_done_callback(self._step_finished)
        return len(steps)

    def _step_finished(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        self.steps_done += 1
        self._wake.set()  # a slot is free

    async def _run_step(self, step: Step) -> None:
        try:
            await self.executor.run(step)
        except Exception:
            # The executor handles step errors itself; this is the database failing
            # under it. The lease expires and another worker picks the step up.
            log.exception("step %s: action aborted", step.id)

    async def _sleep(self) -> None:
        timeout = self.idle_poll_s
        if len(self.running) < self.concurrency:
            try:
                async with self.db.point_read() as conn:
                    due = await step_q.next_run_at(conn)
            except Exception:
                log.exception("could not read the next due time")
                due = None
            # A step already due that the claim did not take is held back (its
            # provider is at its limit): that must not turn into a busy loop, so only
            # future due times shorten the sleep; a finished step or NOTIFY wakes us.
            now = self.clock.now()
            if due is not None and due > now:
                timeout = min(timeout, due - now + 0.001)
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        interval = self.lease_s / 3
        next_housekeeping = 0.0
        while not stop.is_set():
            if self.clock.now() >= next_housekeeping:
                next_housekeeping = self.clock.now() + HOUSEKEEPING_INTERVAL_S
                await self._housekeeping()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            try:
                now = self.clock.now()
                async with self.db.write() as conn:
                    await step_q.extend_leases(conn, self.id, now + self.lease_s)
                    await step_q.worker_heartbeat(conn, self.id, now)
            except Exception:
                log.exception("heartbeat failed")

    async def _outbox(self, stop: asyncio.Event, http: httpx.AsyncClient) -> None:
        """Deliver alerts and other outbound messages written by transactions."""
        while not stop.is_set():
            try:
                sent = await outbox.dispatch_due(self.db, http, self.clock)
            except Exception:
                log.exception("outbox dispatch failed")
                sent = 0
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), OUTBOX_INTERVAL_S)

    async def _housekeeping(self) -> None:
        """The reconciler's sweep; any worker may run it, it is idempotent."""
        try:
            result = await reconciler.sweep(
                self.db,
                self.clock,
                idempotency_ttl_s=self.idempotency_ttl_s,
                blobs=self.executor.blobs,
                channels=self.executor.settings.alert_channels,
            )
            if any(dataclasses.astuple(result)):
                log.info("housekeeping: %s", result)
            removed = await sweep_work_dirs(self.db, self.executor.settings.home)
            if removed:
                log.info("housekeeping: removed %d work directories of finished jobs", removed)
            stale = await asyncio.to_thread(sweep_stale_tmp, self.executor.settings.home)
            if stale:
                log.info("housekeeping: removed %d files left in tmp by killed processes", stale)
        except Exception:
            log.exception("housekeeping failed")
        await watchdog.run_safely(self.db, self.clock, self.executor.settings)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Hold a LISTEN connection; reconnect with a pause if it drops."""
        import asyncpg

        while not stop.is_set():
            conn = None
            try:
                conn = await asyncpg.connect(self.db.raw_postgres_dsn())
                await conn.add_listener(NOTIFY_CHANNEL, lambda *_args: self._wake.set())
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _c, ev=closed: ev.set())
                self._wake.set()  # anything missed while not listening
                stop_task = asyncio.create_task(stop.wait())
                closed_task = asyncio.create_task(closed.wait())
                await asyncio.wait({stop_task, closed_task}, return_when=asyncio.FIRST_COMPLETED)
                stop_task.cancel()
                closed_task.cancel()
            except Exception:
                log.exception("LISTEN connection failed; polling until it is back")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    async def _drain(self) -> None:
        if not self.running:
            return
        log.info(
            "draining %d running steps (up to %.0f s)", len(self.running), self.drain_timeout_s
        )
        _done, pending = await asyncio.wait(set(self.running), timeout=self.drain_timeout_s)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if pending:
            # Their leases would expire anyway; giving them back saves the wait.
            with contextlib.suppress(Exception):
                async with self.db.write() as conn:
                    await step_q.extend_leases(conn, self.id, self.clock.now() - 1)
