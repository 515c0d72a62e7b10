"""What each local step kind does: params in, an output document and files out.

Handlers run on a worker with their inputs already fetched to local files (every file
input carries a ``path``) and write into their own work directory. Each checks what it
made before returning it, so a broken asset fails its own step, never the compose step
downstream. The runner (``vidpipe.plans.runner``) stores the files, records the output
and handles failures and retries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
from PIL import Image, UnidentifiedImageError

from vidpipe.config import Settings
from vidpipe.errors import InvalidRequest, MediaError
from vidpipe.media import compose as composer
from vidpipe.media import speech as tts
from vidpipe.media.alignment import WordTiming, split_words, timings_from_audio
from vidpipe.media.captions_timed import CaptionStyle, group_words, to_ass, to_srt, to_vtt
from vidpipe.media.compose_plan import ComposeSpec, Motion, Scene, plan_timeline
from vidpipe.media.probe import probe
from vidpipe.net import UrlGuard, fetch_to_file
from vidpipe.plans import kinds as k
from vidpipe.plans.music import generate_music
from vidpipe.shorts import script as scripting
from vidpipe.shorts import templates as tpl

# Motions given to still images in turn when a scene asks for "auto".
AUTO_MOTIONS: tuple[Motion, ...] = ("zoom_in", "pan_right", "zoom_out", "pan_left")
# A scene without narration or a stated length lasts this long.
DEFAULT_SCENE_S = 4.0
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,199}$")


class StepFailed(Exception):
    """The step did not make its output. ``transient``: trying again may work."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        transient: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.transient = transient
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class OutFile:
    path: Path
    content_type: str


@dataclass
class StepResult:
    # JSON-ready facts other steps may reference.
    output: dict[str, Any]
    # Files to store, by role; "main" is the step's file (its key goes to output["key"]).
    files: dict[str, OutFile] = field(default_factory=dict)


@dataclass
class StepContext:
    job_id: str
    step_name: str
    work_dir: Path
    # Survives the worker: checkpoints that a replacement worker may reuse.
    checkpoint_dir: Path
    settings: Settings
    http: httpx.AsyncClient
    operator_http: httpx.AsyncClient
    guard: UrlGuard
    ffmpeg: Path
    progress: Callable[[float], None] = lambda share: None


Handler = Callable[[StepContext, Any], Awaitable[StepResult]]


# --- script -------------------------------------------------------------------------


async def run_script(ctx: StepContext, p: k.ScriptParams) -> StepResult:
    template = tpl.get_template(p.template)
    given = [x for x in (p.topic, p.text, p.scenes, p.script) if x]
    if not given or (len(given) > 1 and not (p.topic and p.text)):
        raise InvalidRequest(
            "a script takes a topic, a text, scenes or a whole script",
            code="invalid_step_params",
        )
    use_llm = p.llm if p.llm is not None else bool(ctx.settings.llm_base_url)
    if p.script is not None:
        script = scripting.Script.model_validate(p.script)
    elif p.scenes:
        script = scripting.user_script(template, p.scenes)
    elif use_llm and p.topic:
        if not ctx.settings.llm_base_url:
            raise StepFailed(
                "llm_not_configured", "llm was asked for but VIDPIPE_LLM_BASE_URL is unset"
            )
        key = ctx.settings.llm_api_key
        from vidpipe.shorts.llm import llm_script

        script = await llm_script(
            ctx.operator_http,
            base_url=ctx.settings.llm_base_url,
            api_key=key.get_secret_value() if key else None,
            model=p.llm_model or ctx.settings.llm_model,
            template=template,
            topic=p.topic,
            target_seconds=p.target_seconds,
            timeout_s=ctx.settings.llm_timeout_s,
        )
    else:
        script = scripting.offline_script(
            template, topic=p.topic, text=p.text, target_seconds=p.target_seconds, seed=p.seed
        )
    if p.scene_count is not None and len(script.scenes) != p.scene_count:
        # The plan was made for this many scenes (one visual and one narration each).
        script = fit_scene_count(script, p.scene_count)
    return StepResult(script.model_dump(mode="json"))


def fit_scene_count(script: scripting.Script, count: int) -> scripting.Script:
    """``script`` with exactly ``count`` scenes: extra middle scenes dropped (the last,
    the outro, kept), or the longest scenes split in two at a sentence (else a word)
    boundary until there are enough."""
    scenes = list(script.scenes)
    if len(scenes) > count:
        scenes = [*scenes[: count - 1], scenes[-1]] if count > 1 else scenes[:1]
    while len(scenes) < count:
        index = max(range(len(scenes)), key=lambda i: len(scenes[i].text.split()))
        scene = scenes[index]
        words = scene.text.split()
        if len(words) < 2:
            raise StepFailed(
                "script_too_short",
                f"the script has too little text for {count} scenes",
                transient=True,
            )
        cut = _split_point(scene.text)
        first = scene.model_copy(update={"text": scene.text[:cut].strip()})
        second = scene.model_copy(update={"text": scene.text[cut:].strip()})
        scenes[index : index + 1] = [first, second]
    return script.model_copy(update={"scenes": scenes})


def _split_point(text: str) -> int:
    """Where to cut ``text`` in two: the sentence end nearest the middle, else the
    space nearest it."""
    middle = len(text) / 2
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s)", text)]
    if ends:
        return min(ends, key=lambda e: abs(e - middle))
    spaces = [m.start() for m in re.finditer(r"\s", text)]
    return min(spaces, key=lambda e: abs(e - middle))


# --- visuals ------------------------------------------------------------------------


# Colours of stills when a plan gives none (a deep blue to warm orange range).
DEFAULT_PALETTE = ("#14213D", "#3D5A80", "#98C1D9", "#EE6C4D", "#FCA311")


def _palette(given: list[str] | None) -> list[str]:
    return list(given) if given else list(DEFAULT_PALETTE)


async def run_image(ctx: StepContext, p: k.ImageParams) -> StepResult:
    width, height = k.parse_size(p.size)
    out = ctx.work_dir / "image.png"
    from vidpipe.shorts import visuals

    await asyncio.to_thread(
        visuals.render_scene_image,
        p.prompt,
        size=(width, height),
        palette=_palette(p.palette),
        seed=p.seed,
        out=out,
    )
    return StepResult(_image_facts(out, width, height), {"main": OutFile(out, "image/png")})


async def run_chat_image(ctx: StepContext, p: k.ChatImageParams) -> StepResult:
    width, height = k.parse_size(p.size)
    out = ctx.work_dir / "chat.png"
    from vidpipe.shorts import visuals

    await asyncio.to_thread(
        visuals.render_chat_image,
        [(speaker or "", text) for speaker, text in p.messages],
        size=(width, height),
        palette=_palette(p.palette),
        out=out,
    )
    return StepResult(_image_facts(out, width, height), {"main": OutFile(out, "image/png")})


def _image_facts(path: Path, width: int | None = None, height: int | None = None) -> dict[str, Any]:
    """The image opens, decodes and (if asked) has the size asked for."""
    try:
        with Image.open(path) as image:
            image.load()
            size = image.size
    except (OSError, UnidentifiedImageError) as exc:
        raise StepFailed("broken_image", f"the image does not decode: {exc}") from exc
    if width is not None and size != (width, height):
        raise StepFailed("wrong_resolution", f"image is {size[0]}x{size[1]}, not {width}x{height}")
    return {"kind": "image", "width": size[0], "height": size[1]}


async def run_media(ctx: StepContext, p: k.MediaParams) -> StepResult:
    """The user's own file, fetched through the URL guard and checked for what it claims."""
    dest = ctx.work_dir / "media.bin"
    fetched = await fetch_to_file(
        ctx.http,
        p.url,
        dest,
        max_bytes=ctx.settings.max_output_bytes,
        timeout_s=ctx.settings.fetch_timeout_s,
        guard=ctx.guard,
    )
    if p.kind == "image":
        facts = _image_facts(dest)
        return StepResult(facts, {"main": OutFile(dest, fetched.content_type or "image/png")})
    facts = _av_facts(dest, want_video=p.kind == "video")
    content_type = "video/mp4" if p.kind == "video" else "audio/mpeg"
    return StepResult(facts, {"main": OutFile(dest, fetched.content_type or content_type)})


def _av_facts(path: Path, *, want_video: bool) -> dict[str, Any]:
    try:
        info = probe(path)
    except MediaError as exc:
        raise StepFailed("unplayable", exc.message) from exc
    if want_video and info.video is None:
        raise StepFailed("no_video_stream", "the file has no video stream")
    if not want_video and info.audio is None:
        raise StepFailed("no_audio_stream", "the file has no audio stream")
    if not info.duration_s > 0:
        raise StepFailed("empty_media", "the file has no duration")
    facts: dict[str, Any] = {
        "kind": "video" if want_video else "audio",
        "duration_s": info.duration_s,
    }
    if info.video is not None and want_video:
        facts.update(width=info.video.width, height=info.video.height)
    return facts


# --- speech and captions ------------------------------------------------------------


async def run_speech(ctx: StepContext, p: k.SpeechParams) -> StepResult:
    out = ctx.work_dir / "speech.wav"
    if p.engine in ("openai", "elevenlabs"):
        secret = (
            ctx.settings.openai_api_key if p.engine == "openai" else ctx.settings.elevenlabs_api_key
        )
        if secret is None:
            raise StepFailed(
                "speech_not_configured",
                f"{p.engine} speech needs VIDPIPE_{p.engine.upper()}_API_KEY",
            )
        default_voice = "alloy" if p.engine == "openai" else ""
        spoken = await tts.synthesize_remote(
            p.text,
            engine=p.engine,
            voice=p.voice or default_voice,
            out_path=out,
            http=ctx.operator_http,
            api_key=secret.get_secret_value(),
        )
    else:
        spoken = await asyncio.to_thread(
            tts.synthesize,
            p.text,
            voice=p.voice,
            out_path=out,
            engine=cast(tts.Engine, p.engine),
        )
    words = spoken.words
    if words is None:
        samples, rate = await asyncio.to_thread(tts.read_wav, spoken.path)
        words = timings_from_audio(split_words(p.text), samples, rate)
    facts = _av_facts(spoken.path, want_video=False)
    return StepResult(
        {
            **facts,
            "engine": spoken.engine,
            "text": p.text,
            "words": [[w.word, round(w.start_s, 3), round(w.end_s, 3)] for w in words],
        },
        {"main": OutFile(spoken.path, "audio/wav")},
    )


def scene_durations(
    narrations: Sequence[float | None], *, pad_s: float, min_s: float, transition_s: float
) -> list[float]:
    """How long each scene lasts: its narration plus a pause (at least the transition,
    so one narration never runs under the next), never shorter than ``min_s``."""
    pad = max(pad_s, transition_s + 0.1)
    return [
        round(max(min_s, (n + pad) if n is not None else DEFAULT_SCENE_S), 3) for n in narrations
    ]


def _dummy_timeline_spec(
    durations: Sequence[float], fps: int, transition_s: float, transition: str = "fade"
) -> ComposeSpec:
    return ComposeSpec(
        scenes=tuple(Scene(Path("-"), "image", d) for d in durations),
        fps=fps,
        transition=cast(Any, transition),
        transition_s=transition_s,
    )


def caption_style(
    template: str | None, overrides: dict[str, Any] | None, size: tuple[int, int]
) -> CaptionStyle:
    """The template's caption look for this frame size, with the plan's overrides."""
    if template:
        style = tpl.get_template(template).caption_style(size)
    else:
        style = CaptionStyle(width_px=size[0], height_px=size[1])
    try:
        return dataclasses.replace(style, **(overrides or {}))
    except TypeError as exc:
        raise InvalidRequest(f"caption style: {exc}", code="invalid_step_params") from None


async def run_captions(ctx: StepContext, p: k.CaptionsParams) -> StepResult:
    size = k.parse_size(p.size)
    narrations = [float(s["duration_s"]) for s in p.speech]
    durations = scene_durations(
        narrations, pad_s=p.pad_s, min_s=p.min_scene_s, transition_s=p.transition_s
    )
    timeline = plan_timeline(_dummy_timeline_spec(durations, p.fps, p.transition_s))
    words: list[WordTiming] = []
    for index, speech in enumerate(p.speech):
        offset = timeline.start_s(index)
        for word, start, end in speech.get("words") or []:
            words.append(WordTiming(str(word), offset + float(start), offset + float(end)))
    lines = group_words(words, max_words=p.words_per_line)
    style = caption_style(p.template, p.style, size)
    files = {}
    for role, text, content_type in (
        ("ass", to_ass(lines, style), "text/x-ssa"),
        ("srt", to_srt(lines), "application/x-subrip"),
        ("vtt", to_vtt(lines), "text/vtt"),
    ):
        path = ctx.work_dir / f"captions.{role}"
        path.write_text(text, encoding="utf-8")
        files[role] = OutFile(path, content_type)
    return StepResult(
        {
            "kind": "captions",
            "scene_durations_s": durations,
            "duration_s": timeline.duration_s,
            "lines": len(lines),
            "words": len(words),
        },
        files,
    )


# --- music --------------------------------------------------------------------------


async def run_music(ctx: StepContext, p: k.MusicParams) -> StepResult:
    if p.source == "generated":
        out = ctx.work_dir / "music.wav"
        await asyncio.to_thread(
            generate_music, out, seconds=p.seconds, mood=p.mood, seed=p.seed, ffmpeg=ctx.ffmpeg
        )
        return StepResult(_av_facts(out, want_video=False), {"main": OutFile(out, "audio/wav")})
    if p.source == "library":
        library = ctx.settings.music_dir
        if library is None:
            raise StepFailed("music_library_unset", "VIDPIPE_MUSIC_DIR is not set")
        if not p.name or not _SAFE_NAME.match(p.name) or ".." in p.name:
            raise InvalidRequest("music name must be a plain file name", code="invalid_step_params")
        path = library / p.name
        if not path.is_file():
            raise StepFailed("music_not_found", f"no {p.name!r} in the music library")
        return StepResult(_av_facts(path, want_video=False), {"main": OutFile(path, "audio/mpeg")})
    if not p.url:
        raise InvalidRequest("music from a url needs url", code="invalid_step_params")
    dest = ctx.work_dir / "music.bin"
    await fetch_to_file(
        ctx.http,
        p.url,
        dest,
        max_bytes=ctx.settings.max_output_bytes,
        timeout_s=ctx.settings.fetch_timeout_s,
        guard=ctx.guard,
    )
    return StepResult(_av_facts(dest, want_video=False), {"main": OutFile(dest, "audio/mpeg")})


# --- compose and merge --------------------------------------------------------------


def _path(file: dict[str, Any] | None, what: str) -> Path:
    if not file or "path" not in file:
        raise StepFailed("missing_input", f"{what}: the input file is missing")
    return Path(file["path"])


def _visual_kind(file: dict[str, Any]) -> str:
    return "image" if file.get("kind") == "image" else "video"


async def run_compose(ctx: StepContext, p: k.ComposeParams) -> StepResult:
    size = k.parse_size(p.size)
    narrations = [float(s.narration["duration_s"]) if s.narration else None for s in p.scenes]
    durations = scene_durations(
        narrations, pad_s=p.pad_s, min_s=p.min_scene_s, transition_s=p.transition_s
    )
    captions = p.captions
    if captions is not None:
        planned = captions.get("scene_durations_s")
        if isinstance(planned, list) and len(planned) == len(p.scenes):
            # The captions were timed against these durations: keep them in step.
            durations = [float(d) for d in planned]
    auto = itertools.cycle(AUTO_MOTIONS)
    scenes = []
    for index, scene in enumerate(p.scenes):
        kind = _visual_kind(scene.visual)
        if scene.motion == "auto":
            motion: Motion = next(auto) if kind == "image" else "none"
        else:
            motion = scene.motion
        duration = scene.duration_s or (
            durations[index]
            if scene.narration or captions is not None
            else float(scene.visual.get("duration_s") or DEFAULT_SCENE_S)
        )
        scenes.append(
            Scene(
                visual=_path(scene.visual, f"scenes[{index}].visual"),
                kind=cast(Any, kind),
                duration_s=duration,
                motion=motion,
                narration=_path(scene.narration, f"scenes[{index}].narration")
                if scene.narration
                else None,
            )
        )
    spec = ComposeSpec(
        scenes=tuple(scenes),
        size=size,
        fps=p.fps,
        transition=p.transition,
        transition_s=p.transition_s,
        captions_ass=_path(captions.get("ass"), "captions") if captions else None,
        music=_path(p.music, "music") if p.music else None,
        music_gain_db=p.music_gain_db,
        target_lufs=p.target_lufs,
        preset=ctx.settings.compose_preset,
    )
    out = ctx.work_dir / "video.mp4"
    result = await _compose(ctx, spec, out)
    files = {"main": OutFile(out, "video/mp4")}
    if captions is not None:
        for role in ("srt", "vtt"):
            if captions.get(role):
                files[role] = OutFile(_path(captions[role], role), f"text/{role}")
    return StepResult(
        {
            "kind": "video",
            "duration_s": result.duration_s,
            "width": size[0],
            "height": size[1],
            "segments_reused": result.segments_reused,
            "segments_rendered": result.segments_rendered,
        },
        files,
    )


async def run_merge(ctx: StepContext, p: k.MergeParams) -> StepResult:
    """Clips end to end (optionally with an audio track under them)."""
    first = p.clips[0]
    if p.size:
        size = k.parse_size(p.size)
    elif first.get("width") and first.get("height"):
        size = (int(first["width"]), int(first["height"]))
    else:
        info = await asyncio.to_thread(probe, _path(first, "clips[0]"))
        if info.video is None:
            raise StepFailed("no_video_stream", "clips[0] has no video")
        size = (info.video.width, info.video.height)
    scenes = []
    for index, clip in enumerate(p.clips):
        path = _path(clip, f"clips[{index}]")
        duration = clip.get("duration_s")
        if not duration:
            duration = (await asyncio.to_thread(probe, path)).duration_s
        scenes.append(
            Scene(path, cast(Any, _visual_kind(clip)), float(duration or DEFAULT_SCENE_S))
        )
    spec = ComposeSpec(
        scenes=tuple(scenes),
        size=size,
        fps=p.fps,
        transition=p.transition,
        transition_s=p.transition_s,
        music=_path(p.audio, "audio") if p.audio else None,
        music_gain_db=0.0,
        duck=False,
        preset=ctx.settings.compose_preset,
    )
    out = ctx.work_dir / "video.mp4"
    result = await _compose(ctx, spec, out)
    return StepResult(
        {"kind": "video", "duration_s": result.duration_s, "width": size[0], "height": size[1]},
        {"main": OutFile(out, "video/mp4")},
    )


async def _compose(ctx: StepContext, spec: ComposeSpec, out: Path) -> composer.ComposeResult:
    """Compose in a thread, checkpointing into the step's work dir (kept across workers)."""
    return await asyncio.to_thread(
        composer.compose,
        spec,
        out,
        work_dir=ctx.checkpoint_dir,
        ffmpeg=ctx.ffmpeg,
        progress=ctx.progress,
        max_parallel=ctx.settings.compose_parallel,
    )


HANDLERS: dict[str, Handler] = {
    "script": run_script,
    "image": run_image,
    "chat_image": run_chat_image,
    "media": run_media,
    "speech": run_speech,
    "captions": run_captions,
    "music": run_music,
    "compose": run_compose,
    "merge": run_merge,
}
