"""Typed views of what the server answers: videos, pages, costs, estimates, plan steps
and short templates.

Unknown fields a newer server adds are ignored, so an older client keeps working.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

VideoStatus = Literal["queued", "in_progress", "completed", "failed", "canceled", "expired"]
Variant = Literal[
    "video", "thumbnail", "poster", "preview", "spritesheet", "spritesheet_vtt", "manifest"
]

TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "canceled", "expired"})


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class VideoError(_Model):
    """Why a video did not complete."""

    code: str
    message: str


class Cost(_Model):
    """A video's money in USD: the estimate, what is held now, and what was spent."""

    estimated: float
    reserved: float
    actual: float
    currency: str = "USD"


class Video(_Model):
    """A video job (the OpenAI Videos object plus vidpipe's ``seed``, ``metadata``, ``cost``)."""

    id: str
    object: Literal["video"] = "video"
    status: VideoStatus
    progress: int
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    model: str
    prompt: str | None = None
    seconds: str
    size: str
    seed: int | None = None
    metadata: dict[str, str] = {}
    remixed_from_video_id: str | None = None
    error: VideoError | None = None
    cost: Cost | None = None

    @property
    def terminal(self) -> bool:
        """True once the status can no longer change (other than to ``expired``)."""
        return self.status in TERMINAL_STATUSES


class VideoList(_Model):
    """One page of videos; ask for the next with ``after=last_id`` while ``has_more``."""

    object: Literal["list"] = "list"
    data: list[Video]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class VideoDeleted(_Model):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool


class EstimateCost(_Model):
    """USD: the expected cost, one attempt's cost, the most retries could cost, the cap."""

    estimated: float
    per_attempt: float
    ceiling: float
    max: float | None = None
    currency: str = "USD"


class PlanStep(_Model):
    step: str
    kind: str
    model: str


class Estimate(_Model):
    """What creating a video would do and cost (``POST /v1/videos?dry_run=true``)."""

    object: Literal["video.estimate"] = "video.estimate"
    model: str
    fallback_models: list[str] = []
    seconds: str
    size: str
    plan: list[PlanStep]
    cost: EstimateCost
    admissible: bool
    reason: str | None = None


# Step states are kept as plain strings: a newer server may add one, and an older client
# should still read the plan. Those that no longer change:
TERMINAL_STEP_STATES: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "expired"})


class StepError(_Model):
    """Why a step failed."""

    code: str
    message: str


class Step(_Model):
    """One step of a video's plan, as it runs.

    ``state`` is one of ``pending``, ``ready``, ``active``, ``canceling``,
    ``blocked_budget``, ``succeeded``, ``failed``, ``canceled``, ``expired``. ``output`` is
    what the step made (files are served through the video's content, not named here).
    """

    name: str
    kind: str
    state: str
    progress: int
    model: str
    depends_on: list[str] = []
    attempts: int = 0
    output: dict[str, Any] | None = None
    error: StepError | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STEP_STATES


class VideoWithSteps(Video):
    """What creating a plan or a short, or retrying a video, answers: the video and its
    plan's steps."""

    steps: list[Step]


class StepList(_Model):
    object: Literal["list"] = "list"
    video_id: str
    data: list[Step]


class Template(_Model):
    """A short template (``GET /v1/templates``): what a caller chooses with.

    ``structure`` lists the scene roles (``role``, ``min_count``, ``max_count``);
    ``scenes`` is ``{"min", "max"}``; ``pacing``, ``captions``, ``visual`` and
    ``defaults`` are as the server describes them.
    """

    name: str
    title: str
    description: str
    structure: list[dict[str, Any]] = []
    scenes: dict[str, int] = {}
    pacing: dict[str, Any] = {}
    captions: dict[str, Any] = {}
    visual: dict[str, Any] = {}
    defaults: dict[str, Any] = {}


class TemplateList(_Model):
    object: Literal["list"] = "list"
    data: list[Template]
