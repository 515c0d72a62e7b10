"""Assembling vidpipe from its settings: database, providers, storage, services, workers.

The entry points (serve, api, worker, generate) build one Runtime each; nothing is
created at import time.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field

import httpx

from vidpipe.blobs.base import BlobStore
from vidpipe.blobs.factory import build_blob_store
from vidpipe.config import Settings
from vidpipe.core.clock import Clock, SystemClock
from vidpipe.core.executor import StepExecutor
from vidpipe.core.moderation import Blocklist, Moderator
from vidpipe.core.retry import RetryPolicy
from vidpipe.core.videos import VideoService
from vidpipe.core.worker import Worker
from vidpipe.net import AllowList, UrlGuard, guarded_client
from vidpipe.plans.service import PlanService
from vidpipe.providers.catalog import build_registry
from vidpipe.providers.registry import ProviderRegistry
from vidpipe.store import migrate
from vidpipe.store.db import Database


@dataclass
class Runtime:
    settings: Settings
    db: Database
    registry: ProviderRegistry
    blobs: BlobStore
    clock: Clock
    http: httpx.AsyncClient
    guard: UrlGuard
    videos: VideoService = field(init=False)
    plans: PlanService = field(init=False)
    workers: list[Worker] = field(default_factory=list)
    # For endpoints the operator configured (an LLM on localhost, speech APIs): not
    # the user-URL guard, which would refuse a loopback Ollama.
    operator_http: httpx.AsyncClient = field(
        default_factory=lambda: httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0))
    )

    def __post_init__(self) -> None:
        self.videos = VideoService(
            self.db,
            self.registry,
            self.blobs,
            self.settings,
            self.clock,
            wake=self.wake,
            guard=self.guard,
            moderator=Moderator(
                Blocklist.from_settings(self.settings.moderation_blocklist),
                http=self.http,
                api_url=self.settings.moderation_url,
                api_key=(
                    self.settings.moderation_api_key.get_secret_value()
                    if self.settings.moderation_api_key
                    else None
                ),
                fail_closed=not self.settings.moderation_fail_open,
            ),
        )
        self.plans = PlanService(self.videos)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        run_migrations: bool = True,
        registry: ProviderRegistry | None = None,
        clock: Clock | None = None,
    ) -> Runtime:
        settings.home.mkdir(parents=True, exist_ok=True)
        if run_migrations:
            await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
        # Every concurrent step action may hold a connection, plus heartbeats, claims
        # and the API: a pool smaller than that churns connections under load.
        db = Database(
            settings.resolved_database_url, pool_size=max(10, settings.worker_concurrency + 4)
        )
        if not run_migrations:
            try:
                await migrate.check_schema(db)
            except BaseException:
                await db.dispose()
                raise
        guard = UrlGuard(AllowList.parse(settings.url_allowlist))
        # One client for everything vidpipe fetches: provider APIs and their outputs.
        # It checks every address it connects to against the guard.
        http = guarded_client(guard)
        return cls(
            settings=settings,
            db=db,
            registry=registry or build_registry(settings, http),
            blobs=build_blob_store(settings),
            clock=clock or SystemClock(),
            http=http,
            guard=guard,
        )

    def wake(self) -> None:
        """Tell this process's workers that new work is due."""
        for worker in self.workers:
            worker.wake()

    def new_worker(
        self,
        *,
        concurrency: int | None = None,
        validate: bool = True,
        policy: RetryPolicy | None = None,
    ) -> Worker:
        executor = StepExecutor(
            self.db,
            self.registry,
            self.blobs,
            self.settings,
            self.clock,
            policy=policy,
            validate=validate,
            wake=self.wake,
            guard=self.guard,
            prices=self.videos.prices,
            http=self.http,
            operator_http=self.operator_http,
        )
        worker = Worker(
            self.db,
            executor,
            self.clock,
            concurrency=concurrency or self.settings.worker_concurrency,
            lease_s=self.settings.lease_s,
            idle_poll_s=self.settings.idle_poll_s,
            drain_timeout_s=self.settings.drain_timeout_s,
            max_in_flight={
                "vidpipe": self.settings.local_steps_max_parallel,
                **self.settings.provider_max_in_flight,
            },
            rate_per_min=self.settings.provider_rate_per_min,
            idempotency_ttl_s=self.settings.idempotency_ttl_s,
            http=self.http,
        )
        self.workers.append(worker)
        return worker

    async def close(self) -> None:
        await self.http.aclose()
        await self.operator_http.aclose()
        close = getattr(self.blobs, "close", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result
        await self.db.dispose()
