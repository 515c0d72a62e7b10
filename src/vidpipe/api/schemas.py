"""Response shapes of the HTTP API (the OpenAI Videos object, plus vidpipe's fields)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from vidpipe.core.states import JobStatus
from vidpipe.core.views import video_object
from vidpipe.store.records import Job


class VideoError(BaseModel):
    code: str
    message: str


class Cost(BaseModel):
    estimated: float
    reserved: float
    actual: float
    currency: Literal["USD"] = "USD"


class Review(BaseModel):
    state: str
    reason: str | None


class VideoObject(BaseModel):
    id: str
    object: Literal["video"] = "video"
    status: JobStatus
    progress: int
    created_at: int
    completed_at: int | None
    expires_at: int | None
    model: str
    prompt: str | None
    seconds: str
    size: str
    seed: int | None
    metadata: dict[str, str]
    remixed_from_video_id: str | None = None
    error: VideoError | None
    review: Review | None = None
    cost: Cost

    @classmethod
    def from_job(cls, job: Job, money: tuple[int, int] = (0, 0)) -> VideoObject:
        return cls.model_validate(video_object(job, money))


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    provider: str
    sizes: list[str]
    min_seconds: int
    max_seconds: int
    kinds: list[str]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class ContentUrl(BaseModel):
    url: str
    expires_at: int
