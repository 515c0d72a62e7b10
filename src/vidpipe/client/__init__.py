"""A Python client of the vidpipe HTTP API, blocking (:class:`Client`) or asyncio
(:class:`AsyncClient`)::

    from vidpipe.client import Client

    with Client("http://localhost:8000", api_key=KEY) as client:
        video = client.videos.create("a paper boat on a calm lake", seconds=4)
        client.videos.wait(video.id, on_progress=lambda v: print(v.progress))
        client.videos.download(video.id, "boat.mp4")

Every error is a :class:`VidpipeClientError`; answers of the server are :class:`APIError`
subclasses by status. ``vidpipe.client.webhooks.verify`` checks vidpipe's webhooks.
"""

from __future__ import annotations

from vidpipe.client import webhooks
from vidpipe.client._client import AsyncClient, AsyncVideos, Client, Videos
from vidpipe.client._errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BudgetExceeded,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    VideoFailed,
    VidpipeClientError,
    WaitTimeout,
    WebhookVerificationError,
)
from vidpipe.client._models import (
    Cost,
    Estimate,
    EstimateCost,
    PlanStep,
    Variant,
    Video,
    VideoDeleted,
    VideoError,
    VideoList,
    VideoStatus,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "AsyncClient",
    "AsyncVideos",
    "AuthenticationError",
    "BudgetExceeded",
    "Client",
    "Conflict",
    "Cost",
    "Estimate",
    "EstimateCost",
    "InvalidRequest",
    "NotFound",
    "PermissionDenied",
    "PlanStep",
    "RateLimited",
    "ServerError",
    "Variant",
    "Video",
    "VideoDeleted",
    "VideoError",
    "VideoFailed",
    "VideoList",
    "VideoStatus",
    "Videos",
    "VidpipeClientError",
    "WaitTimeout",
    "WebhookVerificationError",
    "webhooks",
]
