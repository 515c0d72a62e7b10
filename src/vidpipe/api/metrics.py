"""GET /metrics: Prometheus exposition of the cluster (read from SQL now) and this process.

Cluster series are identical from every API replica (aggregate them with ``max``);
this process's histograms are its own (aggregate them with ``sum``).
"""

from __future__ import annotations

import hmac
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from vidpipe.core.runtime import Runtime
from vidpipe.errors import Unauthorized
from vidpipe.obs.cluster import read_cluster
from vidpipe.obs.exposition import cluster_families, render
from vidpipe.obs.settings import obs_settings

router = APIRouter(tags=["system"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    settings = obs_settings()
    if settings.metrics_token is not None:
        _scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
        wanted = settings.metrics_token.get_secret_value()
        if not hmac.compare_digest(given.strip().encode(), wanted.encode()):
            raise Unauthorized("GET /metrics needs its bearer token", code="invalid_metrics_token")
    runtime: Runtime = request.app.state.runtime
    started = time.perf_counter()
    state = await read_cluster(
        runtime.db,
        runtime.clock.now(),
        lease_s=runtime.settings.lease_s,
        window_s=settings.watchdog_window_s,
        totals=True,
    )
    families = cluster_families(
        state,
        in_flight_limits=runtime.settings.provider_max_in_flight,
        scrape_s=time.perf_counter() - started,
    )
    return Response(render(families), media_type=CONTENT_TYPE_PLAIN_0_0_4)
