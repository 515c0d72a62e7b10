"""The step kinds a plan may use, and the params each accepts.

``clip`` runs at a video provider through the same machinery as a single video
(attempts, money, retries, validation). Every other kind runs inside vidpipe on a
worker (``LOCAL_PROVIDER``): free, offline by default, and its output files are
stored under the job like any other asset.

Params are checked twice: when the plan is submitted (every literal value against its
type, required fields present, file inputs only as references), and again once the
references are resolved, just before the step runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from vidpipe.plans.spec import PlanError, contains_ref, is_ref

# The provider column of steps that vidpipe runs itself.
LOCAL_PROVIDER = "vidpipe"

Size = str  # "WIDTHxHEIGHT", checked by parse_size
Motion = Literal["zoom_in", "zoom_out", "pan_left", "pan_right", "none", "auto"]
Transition = Literal["fade", "slide", "none"]
SpeechEngine = Literal["auto", "piper", "espeak-ng", "openai", "elevenlabs"]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# An output of another step (always given as a reference): its stored file and facts.
FileOutput = dict[str, Any]


class ClipParams(_Params):
    prompt: str = Field(min_length=1, max_length=2000)
    model: str = Field(min_length=3, max_length=120, pattern=r"^[a-z0-9_-]+/[A-Za-z0-9._:-]+$")
    seconds: int = Field(default=4, ge=1, le=60)
    size: Size = "720x1280"
    seed: int | None = None
    validation: Literal["basic", "full"] | None = None


class ImageParams(_Params):
    prompt: str = Field(min_length=1, max_length=2000)
    size: Size = "1080x1920"
    palette: list[str] | None = Field(default=None, max_length=8)
    seed: int = 0


class ChatImageParams(_Params):
    # (speaker, text); a missing speaker (None) is shown as the other side.
    messages: list[tuple[str | None, str]] = Field(min_length=1, max_length=30)
    size: Size = "1080x1920"
    palette: list[str] | None = Field(default=None, max_length=8)


class MediaParams(_Params):
    url: str = Field(min_length=8, max_length=4096)
    kind: Literal["image", "video", "audio"]


class ScriptParams(_Params):
    template: str = "fun_facts"
    topic: str | None = Field(default=None, min_length=1, max_length=300)
    text: str | None = Field(default=None, min_length=1, max_length=20_000)
    scenes: list[str] | None = Field(default=None, min_length=1, max_length=30)
    # A whole script (title, scenes with roles and visual prompts), used as given.
    script: dict[str, Any] | None = None
    # How many scenes the rest of the plan expects (the script is fitted to it).
    scene_count: int | None = Field(default=None, ge=1, le=30)
    target_seconds: float = Field(default=45.0, ge=5.0, le=300.0)
    # None: the configured LLM when there is one, else the offline scripter.
    llm: bool | None = None
    llm_model: str | None = Field(default=None, max_length=120)
    seed: int = 0


class SpeechParams(_Params):
    text: str = Field(min_length=1, max_length=2000)
    engine: SpeechEngine = "auto"
    voice: str | None = Field(default=None, max_length=120)


class CaptionsParams(_Params):
    # The narrations of the scenes, in order (references to speech steps).
    speech: list[FileOutput] = Field(min_length=1, max_length=60)
    template: str | None = None
    style: dict[str, Any] | None = None
    size: Size = "1080x1920"
    fps: int = Field(default=30, ge=1, le=120)
    transition_s: float = Field(default=0.4, ge=0.0, le=3.0)
    pad_s: float = Field(default=0.35, ge=0.0, le=5.0)
    min_scene_s: float = Field(default=1.5, ge=0.2, le=60.0)
    words_per_line: int = Field(default=4, ge=1, le=12)


class MusicParams(_Params):
    source: Literal["generated", "library", "url"] = "generated"
    name: str | None = Field(default=None, max_length=200)
    url: str | None = Field(default=None, max_length=4096)
    seconds: float = Field(default=60.0, gt=0.0, le=900.0)
    mood: Literal["calm", "upbeat", "dramatic"] = "calm"
    seed: int = 0


class ComposeScene(_Params):
    visual: FileOutput
    narration: FileOutput | None = None
    motion: Motion = "auto"
    duration_s: float | None = Field(default=None, gt=0.0, le=300.0)


class ComposeParams(_Params):
    scenes: list[ComposeScene] = Field(min_length=1, max_length=60)
    captions: FileOutput | None = None
    music: FileOutput | None = None
    size: Size = "1080x1920"
    fps: int = Field(default=30, ge=1, le=60)
    transition: Transition = "fade"
    transition_s: float = Field(default=0.4, ge=0.0, le=3.0)
    pad_s: float = Field(default=0.35, ge=0.0, le=5.0)
    min_scene_s: float = Field(default=1.5, ge=0.2, le=60.0)
    music_gain_db: float = Field(default=-18.0, ge=-60.0, le=0.0)
    target_lufs: float = Field(default=-14.0, ge=-40.0, le=-5.0)


class MergeParams(_Params):
    clips: list[FileOutput] = Field(min_length=1, max_length=60)
    audio: FileOutput | None = None
    size: Size | None = None
    fps: int = Field(default=30, ge=1, le=60)
    transition: Transition = "none"
    transition_s: float = Field(default=0.4, ge=0.0, le=3.0)


@dataclass(frozen=True)
class KindSpec:
    params: type[_Params]
    # Whether vidpipe runs it (else a video provider does).
    local: bool
    # Share of the job's work, for progress.
    weight: float
    # What the output is: "video" outputs may end a plan.
    output: Literal["video", "image", "audio", "script", "captions", "media"]
    # Fields whose values must be references (files produced by other steps).
    file_fields: tuple[str, ...] = ()


KINDS: dict[str, KindSpec] = {
    "clip": KindSpec(ClipParams, local=False, weight=10.0, output="video"),
    "image": KindSpec(ImageParams, local=True, weight=0.5, output="image"),
    "chat_image": KindSpec(ChatImageParams, local=True, weight=0.5, output="image"),
    "media": KindSpec(MediaParams, local=True, weight=1.0, output="media"),
    "script": KindSpec(ScriptParams, local=True, weight=1.0, output="script"),
    "speech": KindSpec(SpeechParams, local=True, weight=2.0, output="audio"),
    "captions": KindSpec(
        CaptionsParams, local=True, weight=0.5, output="captions", file_fields=("speech",)
    ),
    "music": KindSpec(MusicParams, local=True, weight=1.0, output="audio"),
    "compose": KindSpec(
        ComposeParams,
        local=True,
        weight=20.0,
        output="video",
        file_fields=("scenes", "captions", "music"),
    ),
    "merge": KindSpec(
        MergeParams, local=True, weight=10.0, output="video", file_fields=("clips", "audio")
    ),
}


def parse_size(size: str, *, param: str = "size") -> tuple[int, int]:
    try:
        width_s, height_s = size.lower().split("x")
        width, height = int(width_s), int(height_s)
    except ValueError:
        raise PlanError(f"size must be WIDTHxHEIGHT, not {size!r}", param=param) from None
    if not (16 <= width <= 3840 and 16 <= height <= 3840) or width % 2 or height % 2:
        raise PlanError(
            f"size {size!r}: both sides must be even and within 16-3840",
            code="invalid_size",
            param=param,
        )
    return width, height


def check_params(kind: str, params: dict[str, Any], where: str) -> None:
    """Plan-time check: each literal field against its type; references allowed where
    a value comes from another step, required where a file does."""
    spec = KINDS[kind]
    model = spec.params
    if not isinstance(params, dict):
        raise PlanError("params must be an object", code="invalid_step_params", param=where)
    for name in params:
        if name not in model.model_fields:
            raise PlanError(
                f"{kind} has no param {name!r}; it takes: {', '.join(model.model_fields)}",
                code="invalid_step_params",
                param=f"{where}.{name}",
            )
    for name, field in model.model_fields.items():
        if name not in params:
            if field.is_required():
                raise PlanError(
                    f"{kind} needs the param {name!r}",
                    code="invalid_step_params",
                    param=f"{where}.{name}",
                )
            continue
        value = params[name]
        if name in spec.file_fields and value is not None and not _file_refs_only(value, name):
            raise PlanError(
                f'{kind}.{name} takes files made by other steps: give them as {{"$ref": "<step>"}}',
                code="invalid_step_params",
                param=f"{where}.{name}",
            )
        if contains_ref(value):
            continue  # checked once resolved
        try:
            _field_adapter(field).validate_python(value)
        except ValidationError as exc:
            raise PlanError(
                f"{kind}.{name}: {exc.errors()[0]['msg']}",
                code="invalid_step_params",
                param=f"{where}.{name}",
            ) from None
    if "size" in params and isinstance(params["size"], str):
        parse_size(params["size"], param=f"{where}.size")


def _field_adapter(field: Any) -> TypeAdapter[Any]:
    """A validator of one field with its constraints (min_length, ge, pattern...)."""
    annotation = field.annotation
    if field.metadata:
        annotation = Annotated[(annotation, *field.metadata)]
    return TypeAdapter(cast(Any, annotation))


def _file_refs_only(value: Any, field: str) -> bool:
    """Every file in ``value`` is a reference (a stored key cannot be named directly:
    that would read another job's files)."""
    if field == "scenes" and isinstance(value, list):
        return all(
            isinstance(scene, dict)
            and is_ref(scene.get("visual"))
            and (scene.get("narration") is None or is_ref(scene.get("narration")))
            for scene in value
        )
    if isinstance(value, list):
        return all(is_ref(item) for item in value)
    return is_ref(value)


def validate_resolved(kind: str, params: dict[str, Any]) -> _Params:
    """Run-time check, once references are replaced by values."""
    try:
        return KINDS[kind].params.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(p) for p in first["loc"])
        raise PlanError(
            f"{kind}.{place}: {first['msg']}", code="invalid_step_params", param=place
        ) from None
