"""A Python client of the vidpipe HTTP API, blocking (:class:`Client`) or asyncio
(:class:`AsyncClient`)::

    from vidpipe.client import Client

    with Client("http://localhost:8000", api_key=KEY) as client:
        video = client.videos.create("a paper boat on a calm lake", seconds=4)
        client.videos.wait(video.id, on_progress=lambda v: print(v.progress))
        client.videos.download(video.id, "boat.mp4")

Plans from Python: a :class:`Plan` is a DAG of named steps (kinds: ``GET /v1/step-kinds``);
each :meth:`Plan.step` returns a :class:`Ref` to that step's output, for later steps'
params (``ref["scenes"][0]`` points inside it)::

    from vidpipe.client import Client, Plan

    plan = Plan(title="two boats")
    one = plan.step("one", "clip", prompt="a paper boat", model="runway/gen4_turbo")
    two = plan.step("two", "clip", prompt="a red kite", model="runway/gen4_turbo")
    plan.output = plan.step("joined", "merge", clips=[one, two], transition="fade")

    with Client("http://localhost:8000", api_key=KEY) as client:
        video = client.create_job(plan)        # InvalidRequest (code plan_cycle, ...) if bad
        client.videos.wait(video.id)
        for step in client.steps(video.id):
            print(step.name, step.state, step.attempts)
        # A short from a topic, on one of client.templates():
        short = client.create_short(topic="octopuses", template="fun_facts")

A failed video runs again from its failed steps with ``client.retry(video.id)``.

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
    PlanError,
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
    Step,
    StepError,
    Template,
    Variant,
    Video,
    VideoDeleted,
    VideoError,
    VideoList,
    VideoStatus,
    VideoWithSteps,
)
from vidpipe.client._plan import Plan, Ref
from vidpipe.client._wire import ShortFields

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
    "Plan",
    "PlanError",
    "PlanStep",
    "RateLimited",
    "Ref",
    "ServerError",
    "ShortFields",
    "Step",
    "StepError",
    "Template",
    "Variant",
    "Video",
    "VideoDeleted",
    "VideoError",
    "VideoFailed",
    "VideoList",
    "VideoStatus",
    "VideoWithSteps",
    "Videos",
    "VidpipeClientError",
    "WaitTimeout",
    "WebhookVerificationError",
    "webhooks",
]
