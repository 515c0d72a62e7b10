"""The FastAPI application: routes, error envelope, auth. Built per runtime."""

from __future__ import annotations

from fastapi import FastAPI

from vidpipe import __version__, web
from vidpipe.api import (
    admin,
    batches,
    blobs,
    events,
    hooks,
    metrics,
    money,
    plans,
    system,
    videos,
    webhook_endpoints,
)
from vidpipe.api.auth import Authenticator
from vidpipe.api.errors import install_error_handlers
from vidpipe.api.openapi_errors import document_errors
from vidpipe.api.ratelimit import RateLimiter
from vidpipe.core.runtime import Runtime


def create_app(runtime: Runtime, *, open_tenant_id: str | None = None) -> FastAPI:
    """``open_tenant_id``: serve without keys, every request acting as that tenant."""
    app = FastAPI(
        title="vidpipe",
        version=__version__,
        description="Self-hosted backend for AI video generation.",
    )
    app.state.runtime = runtime
    app.state.auth = Authenticator(runtime.db, runtime.clock, open_tenant_id=open_tenant_id)
    app.state.rate_limiter = RateLimiter(
        runtime.settings.rate_limit_per_s, runtime.settings.rate_limit_burst
    )
    install_error_handlers(app)
    routers = [
        system.router,
        videos.router,
        plans.router,
        hooks.router,
        blobs.router,
        money.router,
        events.router,
        webhook_endpoints.router,
        metrics.router,
        web.router,
        batches.router,
        admin.router,
    ]
    for router in routers:
        app.include_router(router)
    document_errors(app, routers)
    return app
