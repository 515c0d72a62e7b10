"""A faceless short as a plan: script -> per-scene visual and speech -> captions, music
-> compose.

The number of scenes is fixed when the job is made, so every per-scene step is visible
from the start: offline (and for a user's own script) the script is written right here,
deterministically, and the script step carries it; with an LLM the template's scene
count for the target length is asked for and the script is fitted to it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vidpipe.config import Settings
from vidpipe.errors import InvalidRequest
from vidpipe.plans.kinds import SpeechEngine
from vidpipe.plans.service import PlanRequest
from vidpipe.plans.spec import PlanStep
from vidpipe.providers.registry import ProviderRegistry
from vidpipe.shorts import script as scripting
from vidpipe.shorts import templates as tpl

PROCEDURAL = "procedural"


class SceneMedia(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=4096)
    kind: Literal["image", "video"] = "image"


class CreateShort(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    topic: str | None = Field(default=None, min_length=1, max_length=300)
    script: str | None = Field(
        default=None, min_length=1, max_length=20_000, description="Your own narration text."
    )
    scenes: list[str] | None = Field(
        default=None, min_length=1, max_length=30, description="Your own scenes' narration."
    )
    template: str = Field(default="fun_facts", max_length=64)
    voice: str | None = Field(default=None, max_length=120)
    speech_engine: SpeechEngine = "auto"
    aspect_ratio: Literal["9:16", "16:9", "1:1"] | None = None
    target_seconds: float | None = Field(default=None, ge=5, le=300)
    visual_model: str = Field(
        default=PROCEDURAL,
        max_length=120,
        description='"procedural" (offline stills with motion) or a video model, e.g. '
        '"runway/gen4_turbo", for a generated clip per scene.',
    )
    scene_media: list[SceneMedia | None] | None = Field(
        default=None,
        max_length=30,
        description="Your own image or clip per scene, by URL (null: the default visual).",
    )
    llm: bool | None = Field(
        default=None, description="Write the script with the configured LLM (default: if set)."
    )
    llm_model: str | None = Field(default=None, max_length=120)
    captions: bool | None = None
    music: bool | None = None
    music_mood: Literal["calm", "upbeat", "dramatic"] = "calm"
    music_name: str | None = Field(default=None, max_length=200)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    metadata: dict[str, str] = Field(default_factory=dict)
    max_cost_usd: float | None = Field(default=None, ge=0)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in value.items()):
            raise ValueError("at most 16 metadata keys of 1-64 characters, values ≤ 512")
        return value


def scene_count_for(template: tpl.Template, target_seconds: float) -> int:
    pacing = template.pacing
    wanted = round(target_seconds / pacing.scene_s)
    return max(template.min_scenes, min(template.max_scenes, wanted))


def build_short(body: CreateShort, settings: Settings, registry: ProviderRegistry) -> PlanRequest:
    sources = [x for x in (body.topic, body.script, body.scenes) if x]
    if not sources:
        raise InvalidRequest(
            "give a topic, a script or scenes", code="missing_parameter", param="topic"
        )
    if body.script is not None and body.scenes is not None:
        raise InvalidRequest("give script or scenes, not both", param="scenes")
    template = tpl.get_template(body.template)
    target = scripting.check_target_seconds(
        template,
        body.target_seconds
        if body.target_seconds is not None
        else template.pacing.default_target_s,
    )
    size = tpl.frame_size(body.aspect_ratio or template.defaults.aspect)
    size_text = f"{size[0]}x{size[1]}"
    use_llm = body.llm if body.llm is not None else bool(settings.llm_base_url)
    if body.llm and not settings.llm_base_url:
        raise InvalidRequest(
            "llm=true needs VIDPIPE_LLM_BASE_URL on the server", code="llm_not_configured"
        )
    script_params: dict[str, Any] = {"template": template.name, "target_seconds": target}
    script: scripting.Script | None = None
    if body.scenes:
        script = scripting.user_script(template, body.scenes, title=body.topic)
    elif body.script:
        script = scripting.offline_script(template, text=body.script, topic=body.topic)
    elif not use_llm:
        script = scripting.offline_script(
            template, topic=body.topic, target_seconds=target, seed=body.seed
        )
    if script is not None:
        count = len(script.scenes)
        script_params["script"] = script.model_dump(mode="json")
    else:
        count = scene_count_for(template, target)
        script_params.update(topic=body.topic, llm=True, scene_count=count, seed=body.seed)
        if body.llm_model:
            script_params["llm_model"] = body.llm_model
    steps = [PlanStep("script", "script", script_params)]
    clip_model = None if body.visual_model == PROCEDURAL else body.visual_model
    if clip_model is not None:
        _, model = registry.resolve(clip_model, param="visual_model")
        clip_size = _closest_size(model.sizes, size)
        clip_seconds = max(
            model.min_seconds, min(model.max_seconds, round(template.pacing.scene_s))
        )
    media = list(body.scene_media or [])
    if len(media) > count:
        raise InvalidRequest(
            f"scene_media has {len(media)} entries for {count} scenes",
            code="invalid_request",
            param="scene_media",
        )
    for index in range(count):
        ref = f"script.scenes.{index}"
        own = media[index] if index < len(media) else None
        if own is not None:
            visual = PlanStep(f"visual_{index}", "media", {"url": own.url, "kind": own.kind})
        elif clip_model is not None:
            visual = PlanStep(
                f"visual_{index}",
                "clip",
                {
                    "prompt": {"$ref": f"{ref}.visual_prompt"},
                    "model": clip_model,
                    "seconds": clip_seconds,
                    "size": clip_size,
                    "seed": body.seed + index,
                },
            )
        elif template.visual.renderer == "chat":
            visual = PlanStep(
                f"visual_{index}",
                "chat_image",
                {
                    "messages": _chat_messages(script, index),
                    "size": size_text,
                    "palette": list(template.visual.palette),
                },
            )
        else:
            visual = PlanStep(
                f"visual_{index}",
                "image",
                {
                    "prompt": {"$ref": f"{ref}.visual_prompt"},
                    "size": size_text,
                    "palette": list(template.visual.palette),
                    "seed": body.seed * 1000 + index,
                },
            )
        speech_params: dict[str, Any] = {
            "text": {"$ref": f"{ref}.text"},
            "engine": body.speech_engine,
        }
        voice = body.voice or template.defaults.voice
        if voice:
            speech_params["voice"] = voice
        steps += [visual, PlanStep(f"speech_{index}", "speech", speech_params)]
    speeches = [{"$ref": f"speech_{i}"} for i in range(count)]
    captions_on = body.captions if body.captions is not None else template.captions.enabled
    compose: dict[str, Any] = {
        "scenes": [
            {
                "visual": {"$ref": f"visual_{i}"},
                "narration": {"$ref": f"speech_{i}"},
                "motion": "auto" if _is_clip(i, clip_model, media) else template.motion_for(i),
            }
            for i in range(count)
        ],
        "size": size_text,
        "transition": template.visual.transition,
        "transition_s": template.visual.transition_s,
        "music_gain_db": template.defaults.music_gain_db,
    }
    if captions_on:
        steps.append(
            PlanStep(
                "captions",
                "captions",
                {
                    "speech": speeches,
                    "template": template.name,
                    "size": size_text,
                    "transition_s": template.visual.transition_s,
                    "words_per_line": template.captions.words_per_line,
                },
            )
        )
        compose["captions"] = {"$ref": "captions"}
    music_on = body.music if body.music is not None else template.defaults.music
    if music_on:
        music: dict[str, Any] = {"seconds": min(900.0, target * 1.5 + 10), "mood": body.music_mood}
        if body.music_name:
            music.update(source="library", name=body.music_name)
        else:
            music.update(source="generated", seed=body.seed)
        steps.append(PlanStep("music", "music", music))
        compose["music"] = {"$ref": "music"}
    steps.append(PlanStep("compose", "compose", compose))
    title = body.topic or (script.title if script is not None else None)
    return PlanRequest(
        steps=tuple(steps),
        output="compose",
        kind="short",
        title=title,
        metadata=body.metadata,
        max_cost_usd=body.max_cost_usd,
        original={**body.model_dump(mode="json"), "target_seconds": target},
    )


def _is_clip(index: int, clip_model: str | None, media: list[SceneMedia | None]) -> bool:
    """Whether scene ``index`` shows a clip (which plays as is) rather than a still
    (which gets the template's motion)."""
    own = media[index] if index < len(media) else None
    if own is not None:
        return own.kind == "video"
    return clip_model is not None


def _chat_messages(script: scripting.Script | None, index: int) -> list[Any]:
    """What the chat screenshot of scene ``index`` shows: every message so far."""
    if script is not None:
        return [list(pair) for pair in scripting.chat_messages(script, index)]
    return [
        [{"$ref": f"script.scenes.{i}.speaker"}, {"$ref": f"script.scenes.{i}.text"}]
        for i in range(index + 1)
    ]


def _closest_size(sizes: tuple[str, ...] | list[str], frame: tuple[int, int]) -> str:
    """The model's size whose shape is nearest the frame's."""
    want = frame[0] / frame[1]

    def distance(size: str) -> float:
        width, height = (int(v) for v in size.split("x"))
        return abs(width / height - want)

    return min(sizes, key=distance)
