"""The shape of a video request, shared by the HTTP API and the CLI.

Only the shape is checked here; what a model can do (sizes, durations) is checked by
the video service against the provider registry.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vidpipe.errors import InvalidRequest
from vidpipe.media.policy import ValidationPolicy

SIZE_PATTERN = re.compile(r"^(\d{2,5})x(\d{2,5})$")
ASPECT_SIZES = {"16:9": "1280x720", "9:16": "720x1280", "1:1": "720x720"}
MAX_METADATA_KEYS = 16


class CreateVideo(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    prompt: str = Field(min_length=1, max_length=2000, description="What the video shows.")
    seconds: int = Field(default=4, ge=1, le=600, description="Duration; strings accepted.")
    size: str | None = Field(default=None, description="WIDTHxHEIGHT, e.g. 720x1280.")
    aspect_ratio: Literal["16:9", "9:16", "1:1"] | None = Field(
        default=None, description="Instead of size: the model's size of that shape."
    )
    model: str | None = Field(
        default=None, max_length=120, description="provider/model, or a configured alias."
    )
    fallback_models: list[str] = Field(
        default_factory=list,
        max_length=5,
        description="Models to move on to, in order, if the first fails for good.",
    )
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    max_cost_usd: float | None = Field(
        default=None,
        ge=0,
        le=100_000,
        description="The most this video may cost, retries included.",
    )
    review: bool | None = Field(
        default=None,
        description="Hold the finished video for a human's approval (default: the tenant's).",
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=2000,
        description="Where to POST this video's events (signed, Standard Webhooks).",
    )
    validation: dict[str, Any] | None = Field(
        default=None,
        description="Validation thresholds for this video (names in media/policy.py).",
    )
    derivatives: list[Literal["spritesheet", "hls"]] = Field(
        default_factory=list, description="Extra renditions to make: spritesheet, hls."
    )
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Up to 16 string pairs, kept on the job."
    )

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        # The OpenAI SDK sends seconds as a string ("4"); accept whole numbers only.
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("seconds must be a whole number")
        return value

    @field_validator("size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None and not SIZE_PATTERN.match(value):
            raise ValueError("size must look like 1280x720")
        return value

    @field_validator("validation")
    @classmethod
    def _validation(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            ValidationPolicy.from_overrides(value)  # names the bad key in its ValueError
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_METADATA_KEYS:
            raise ValueError(f"at most {MAX_METADATA_KEYS} metadata keys")
        for key, item in value.items():
            if not key or len(key) > 64 or len(item) > 512:
                raise ValueError("metadata keys are 1-64 characters, values at most 512")
        return value


def parse_create_video(data: Any) -> CreateVideo:
    """Validate a request body, turning the first problem into a specific error code."""
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_body")
    try:
        return CreateVideo.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else None
        if first["type"] == "extra_forbidden":
            raise InvalidRequest(
                f"unknown parameter {field!r}", code="unknown_parameter", param=field
            ) from None
        if first["type"] == "missing":
            raise InvalidRequest(
                f"{field} is required", code="missing_parameter", param=field
            ) from None
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidRequest(
            f"{field}: {message}", code=f"invalid_{field}" if field else "invalid_body", param=field
        ) from None
