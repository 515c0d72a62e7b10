"""The composer's plan, pure: inputs, the frame timeline, ffmpeg arguments, checkpoint keys.

Nothing here runs ffmpeg or touches a file's content (keys take the visual's digest
as an argument), so every choice ``compose`` makes is a function of the spec that
tests can check with tables. See ``vidpipe.media.compose`` for the design.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from vidpipe.errors import InvalidRequest

__all__ = [
    "AUDIO_SAMPLE_RATE",
    "CAPTIONS_FILE",
    "LOUDNESS_FILE",
    "SEGMENT_FILE",
    "ComposeSpec",
    "Motion",
    "Scene",
    "ScenePlacement",
    "Timeline",
    "Transition",
    "VisualKind",
    "ass_events_in_window",
    "build_audio_args",
    "build_audio_finish_args",
    "build_final_args",
    "build_segment_args",
    "captions_on_scenes",
    "concat_list",
    "loudness_gain_db",
    "plan_timeline",
    "segment_key",
]

VisualKind = Literal["image", "video"]
Motion = Literal["zoom_in", "zoom_out", "pan_left", "pan_right", "none"]
Transition = Literal["fade", "slide", "none"]

AUDIO_SAMPLE_RATE = 48_000
_AUDIO_BITRATE = "192k"
# Zoom motions go between 1x and this; pans travel across a frame zoomed this much
# (so a pan moves by 1 - 1/1.12, about 11% of the frame width).
_ZOOM_END = 1.15
_PAN_ZOOM = 1.12
# Peak ceiling after the loudness gain (sample peak; leaves room for the inter-sample
# peaks of AAC so the true peak stays near -1 dBTP).
_PEAK_LIMIT_DB = -1.5
# A gain this large means the mix is (nearly) silent: do not amplify noise to -14.
_MAX_GAIN_DB = 30.0
# Music fades out over the last seconds instead of stopping mid-note.
_MUSIC_FADE_S = 1.5
# Bump when the pixels a segment's ffmpeg arguments produce change, so that old
# checkpoints are not mistaken for new ones.
_SEGMENT_FORMAT = 3
# How much more of the next clip than its transition frames a segment decodes (the
# frame-rate conversion looks at neighbouring frames; the rest is never read).
_NEXT_CLIP_MARGIN_S = 1.0

# The file of a segment's checkpoint directory, and those of a run's working directory.
SEGMENT_FILE = "segment.mp4"
CAPTIONS_FILE = "captions.ass"
LOUDNESS_FILE = "loudness.txt"

_XFADE = {"fade": "fade", "slide": "slideleft"}


# --- Inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """One shot: a still or a clip shown for ``duration_s``, with optional narration.

    A clip shorter than the scene holds its last frame; a longer one is cut. The
    narration starts when the scene starts and is cut where the next scene starts.
    """

    visual: Path
    kind: VisualKind
    duration_s: float
    motion: Motion = "none"
    narration: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in get_args(VisualKind):
            raise InvalidRequest(f"scene kind must be image or video, not {self.kind!r}")
        if self.motion not in get_args(Motion):
            raise InvalidRequest(f"unknown motion {self.motion!r}", param="motion")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise InvalidRequest(f"scene duration must be positive, not {self.duration_s!r}")


@dataclass(frozen=True)
class ComposeSpec:
    """What to compose. ``size`` is (width, height), both even."""

    scenes: tuple[Scene, ...]
    size: tuple[int, int] = (1080, 1920)
    fps: int = 30
    transition: Transition = "fade"
    transition_s: float = 0.4
    captions_ass: Path | None = None
    music: Path | None = None
    music_gain_db: float = -18.0
    duck: bool = True
    target_lufs: float = -14.0
    preset: str = "veryfast"
    crf: int = 20

    def __post_init__(self) -> None:
        # Accept any sequence, keep a tuple: the spec stays hashable and immutable.
        object.__setattr__(self, "scenes", tuple(self.scenes))
        if not self.scenes:
            raise InvalidRequest("a composition needs at least one scene", param="scenes")
        width, height = self.size
        if width < 16 or height < 16 or width % 2 or height % 2:
            raise InvalidRequest(f"size must be even and at least 16, not {width}x{height}")
        if not 1 <= self.fps <= 120:
            raise InvalidRequest(f"fps must be 1-120, not {self.fps}", param="fps")
        if self.transition not in get_args(Transition):
            raise InvalidRequest(f"unknown transition {self.transition!r}", param="transition")
        if not (math.isfinite(self.transition_s) and self.transition_s >= 0):
            raise InvalidRequest("transition_s must be >= 0", param="transition_s")
        if not 0 <= self.crf <= 51:
            raise InvalidRequest(f"crf must be 0-51, not {self.crf}", param="crf")


# --- Timeline: pure ----------------------------------------------------------------------


@dataclass(frozen=True)
class ScenePlacement:
    """Where one scene sits on the output timeline, in frames.

    The scene is on screen for ``frames`` frames from ``start_frame``; its first
    ``lead_in`` frames are shared with the previous scene's transition and its last
    ``lead_out`` frames with the next one's. The rest is the *body*. The scene's
    *segment* is its body and the transition out of it: everything from
    ``body_start_frame`` to ``end_frame``.
    """

    index: int
    start_frame: int
    frames: int
    lead_in: int
    lead_out: int

    @property
    def body_start_frame(self) -> int:
        return self.start_frame + self.lead_in

    @property
    def body_frames(self) -> int:
        return self.frames - self.lead_in - self.lead_out

    @property
    def end_frame(self) -> int:
        return self.start_frame + self.frames

    @property
    def segment_frames(self) -> int:
        return self.frames - self.lead_in


@dataclass(frozen=True)
class Timeline:
    """The frame plan of a composition: scene placements and transition length."""

    fps: int
    transition_frames: int
    placements: tuple[ScenePlacement, ...]

    @property
    def total_frames(self) -> int:
        return self.placements[-1].end_frame

    @property
    def duration_s(self) -> float:
        return self.total_frames / self.fps

    def start_s(self, index: int) -> float:
        """When scene ``index`` starts to appear (the start of its incoming transition)."""
        return self.placements[index].start_frame / self.fps

    def seconds(self, frames: int) -> float:
        return frames / self.fps


def plan_timeline(spec: ComposeSpec) -> Timeline:
    """Quantize the scenes to whole frames and overlap neighbours by the transition.

    Scene ``i + 1`` starts ``transition`` frames before scene ``i`` ends, so the total
    is the sum of the scene lengths minus one transition per boundary. Raises
    ``InvalidRequest`` when a scene is too short to hold its transitions and at least
    one frame of its own.
    """
    fps = spec.fps
    count = len(spec.scenes)
    overlap = 0
    if spec.transition != "none" and count > 1:
        overlap = round(spec.transition_s * fps)
    placements: list[ScenePlacement] = []
    start = 0
    for index, scene in enumerate(spec.scenes):
        frames = round(scene.duration_s * fps)
        lead_in = overlap if index > 0 else 0
        lead_out = overlap if index < count - 1 else 0
        if frames - lead_in - lead_out < 1:
            raise InvalidRequest(
                f"scene {index} lasts {frames} frames, too short for its transitions "
                f"({lead_in + lead_out} frames)",
                param="scenes",
            )
        placements.append(ScenePlacement(index, start, frames, lead_in, lead_out))
        start += frames - lead_out
    return Timeline(fps=fps, transition_frames=overlap, placements=tuple(placements))


# --- ffmpeg arguments: pure --------------------------------------------------------------


def _encoder_args(spec: ComposeSpec, threads: int | None) -> list[str]:
    # Identical in every piece, so the pieces can be joined without re-encoding: same
    # profile, pixel format, frame rate and MP4 timescale. The thread count changes
    # how the work is spread, not the format (``None``: x264's own choice).
    thread_args = [] if threads is None else ["-threads", str(threads)]
    return [
        "-c:v", "libx264",
        *thread_args,
        "-preset", spec.preset,
        "-crf", str(spec.crf),
        "-pix_fmt", "yuv420p",
        "-profile:v", "high",
        "-r", str(spec.fps),
        "-video_track_timescale", str(spec.fps * 512),
        "-an", "-sn", "-dn",
    ]  # fmt: skip


def _aspect_crop(width: int, height: int) -> str:
    # The largest centered region of the source with the output's aspect, even-sized.
    return (
        f"crop=w='2*floor(min(iw,ih*{width}/{height})/2)'"
        f":h='2*floor(min(ih,iw*{height}/{width})/2)'"
    )


def _progress_expr(var: str, frames: int) -> str:
    return f"min({var}/{max(1, frames - 1)},1)"


def _zoompan(motion: Motion, frames: int, spec: ComposeSpec, per_frame: int) -> str:
    """zoompan for a motion over ``frames``; ``per_frame`` output frames per input frame
    (the motion's progress counts output frames, whatever ``per_frame`` is)."""
    width, height = spec.size
    p = _progress_expr("on", frames)
    center_x, center_y = "iw/2-iw/zoom/2", "ih/2-ih/zoom/2"
    if motion == "zoom_in":
        zoom, x, y = f"1+{_ZOOM_END - 1:g}*{p}", center_x, center_y
    elif motion == "zoom_out":
        zoom, x, y = f"{_ZOOM_END:g}-{_ZOOM_END - 1:g}*{p}", center_x, center_y
    elif motion == "pan_left":
        zoom, x, y = f"{_PAN_ZOOM:g}", f"(iw-iw/zoom)*(1-{p})", center_y
    else:  # pan_right
        zoom, x, y = f"{_PAN_ZOOM:g}", f"(iw-iw/zoom)*{p}", center_y
    return f"zoompan=z='{zoom}':x='{x}':y='{y}':d={per_frame}:s={width}x{height}:fps={spec.fps}"


def _scene_chain(
    scene: Scene, frames: int, spec: ComposeSpec, *, keep: int | None = None, source: int = 0
) -> str:
    """The filters that turn input ``source`` into the scene's frames at output size.

    The motion spans ``frames``; only the first ``keep`` frames (default: all) are
    made, so the head of the next scene, drawn into this scene's transition, is the
    same picture that scene's own segment starts from. The chain's output is labelled
    ``[scene]`` for input 0 and ``[next]`` for input 1.
    """
    width, height = spec.size
    fps = spec.fps
    made = frames if keep is None else min(keep, frames)
    label = "[scene]" if source == 0 else "[next]"
    # Frame n at n/fps exactly, in a 1/fps time base: a still's frames come in the
    # image demuxer's 1/25 time base, where n/30 s would round onto the same ticks and
    # make the encoder duplicate or drop frames to hold the rate.
    restamp = f"settb=1/{fps},setpts=N"
    if scene.kind == "image":
        # Decoded once, fitted once (cropped to the aspect, then scaled to the output
        # size plus the margin the motion needs), and only then repeated: no frame is
        # ever decoded or scaled twice, and the largest intermediate is the output
        # size times the zoom.
        margin = {"none": 1.0, "zoom_in": _ZOOM_END, "zoom_out": _ZOOM_END}.get(
            scene.motion, _PAN_ZOOM
        )
        fit_w, fit_h = _even(width * margin), _even(height * margin)
        fit = (
            f"{_aspect_crop(width, height)},scale={fit_w}:{fit_h}:flags=lanczos,"
            "format=yuv420p,setsar=1"
        )
        if scene.motion in ("zoom_in", "zoom_out"):
            moved = _zoompan(scene.motion, frames, spec, per_frame=made)
        else:
            moved = f"loop=loop={made - 1}:size=1:start=0,{restamp}"
            if scene.motion != "none":
                # A pan is a moving window over the once-scaled picture: a crop, which
                # only moves plane pointers (no per-frame scaling at all).
                travel = "(1-" + _progress_expr("n", frames) + ")"
                if scene.motion == "pan_right":
                    travel = _progress_expr("n", frames)
                moved += f",crop={width}:{height}:x='(iw-ow)*{travel}':y='(ih-oh)/2':exact=1"
        return f"[{source}:v]{fit},{moved},{restamp},trim=end_frame={made}{label}"
    # A clip: constant frame rate from its own start, the last frame held if it is
    # too short, cut to length, then cropped to the aspect and scaled once per frame,
    # by zoompan (which crops and scales in one step) when there is motion.
    clip = (
        f"[{source}:v]setpts=PTS-STARTPTS,fps={fps},tpad=stop_mode=clone:stop=-1,"
        f"trim=end_frame={made},{_aspect_crop(width, height)}"
    )
    if scene.motion == "none":
        moved = f"scale={width}:{height}"
    else:
        moved = _zoompan(scene.motion, frames, spec, per_frame=1)
    return f"{clip},{moved},format=yuv420p,setsar=1,{restamp}{label}"


def captions_on_scenes(spec: ComposeSpec) -> bool:
    """Whether captions are drawn on whole scenes (before any transition) or later.

    A crossfade of two pictures that carry the same caption at the same place is the
    crossfade with that caption drawn on top (blending is linear), so with ``fade``
    (and ``none``) each scene is captioned once, before its frames are split into
    body, head and tail, and transitions draw nothing. A ``slide`` would carry the
    caption away with the picture: there the body and the transition are captioned.
    """
    return spec.captions_ass is not None and spec.transition != "slide"


def _captions_filter(offset_s: float) -> str:
    # ``ass`` draws by frame time: shift the piece to its place on the output timeline
    # for the drawing, then back to zero for the encoder.
    return f"setpts=PTS+{offset_s:.6f}/TB,ass={CAPTIONS_FILE},setpts=PTS-STARTPTS"


def build_segment_args(
    spec: ComposeSpec,
    timeline: Timeline,
    index: int,
    out_dir: Path,
    *,
    encoder_threads: int | None = None,
) -> list[str]:
    """ffmpeg arguments that render scene ``index``'s segment to ``out_dir/segment.mp4``.

    The segment is the scene's body and, when a scene follows, the transition into
    it: the next scene's first transition frames are made here from its own visual
    (input 1; a clip is read only as far as those frames need) and crossed with this
    scene's last ones, all in one filtergraph and one encode. The scene's own first
    transition frames are made (the motion starts there) but not written: they belong
    to the previous segment. Captions, when the spec has them, are read as
    ``captions.ass`` from the working directory and drawn on each scene before the
    crossing when ``captions_on_scenes``, else on the segment's frames.
    """
    scene = spec.scenes[index]
    place = timeline.placements[index]
    on_scenes = captions_on_scenes(spec)
    scene_chain = _scene_chain(scene, place.frames, spec)
    if on_scenes:
        offset = _captions_filter(timeline.seconds(place.start_frame))
        scene_chain = scene_chain.removesuffix("[scene]") + f",{offset}[scene]"
    graph = [scene_chain]
    inputs = ["-i", str(scene.visual.resolve())]
    own = f"trim=start_frame={place.lead_in},setpts=PTS-STARTPTS"
    if place.lead_out:
        overlap = timeline.transition_frames
        following = spec.scenes[index + 1]
        next_place = timeline.placements[index + 1]
        next_chain = _scene_chain(following, next_place.frames, spec, keep=overlap, source=1)
        if on_scenes:
            offset = _captions_filter(timeline.seconds(next_place.start_frame))
            next_chain = next_chain.removesuffix("[next]") + f",{offset}[next]"
        if following.kind == "video":
            inputs += ["-t", f"{timeline.seconds(overlap) + _NEXT_CLIP_MARGIN_S:.6f}"]
        inputs += ["-i", str(following.visual.resolve())]
        # The same time base and rate on both sides, as xfade requires.
        normalize = f"settb=1/{spec.fps},setpts=N,fps={spec.fps}"
        graph += [
            next_chain,
            f"[scene]{own},split=2[body_in][tail_in]",
            f"[body_in]trim=end_frame={place.body_frames},setpts=PTS-STARTPTS[body]",
            f"[tail_in]trim=start_frame={place.body_frames},{normalize}[tail]",
            f"[next]{normalize}[head]",
            f"[tail][head]xfade=transition={_XFADE[spec.transition]}"
            f":duration={timeline.seconds(overlap):.6f}:offset=0"
            f",trim=end_frame={overlap},setpts=PTS-STARTPTS[cross]",
            "[body][cross]concat=n=2:v=1:a=0",
        ]
        last = graph.pop()
    else:
        last = f"[scene]{own}"
    if spec.captions_ass is not None and not on_scenes:
        # One drawing over body and transition: they are adjacent on the timeline.
        last += "," + _captions_filter(timeline.seconds(place.body_start_frame))
    graph.append(last + "[segment]")
    args = [*inputs, "-filter_complex", ";".join(graph), "-map", "[segment]"]
    args += [*_encoder_args(spec, encoder_threads), "-f", "mp4", str(out_dir / SEGMENT_FILE)]
    return args


def build_audio_args(
    spec: ComposeSpec, timeline: Timeline, *, out: Path, loudness_file: str = LOUDNESS_FILE
) -> list[str] | None:
    """ffmpeg arguments that mix narration and music into a float WAV at ``out``.

    Each narration starts with its scene and is cut where the next scene starts; the
    music loops to the full length, sits ``music_gain_db`` under, is ducked under the
    narration when ``duck`` is set, and fades out at the end. ``ebur128`` measures
    the mix on the way (``loudness_file``, relative to the working directory). None
    when the spec has neither narration nor music.
    """
    total = timeline.total_frames
    total_samples = round(total / spec.fps * AUDIO_SAMPLE_RATE)
    fmt = f"aformat=sample_fmts=fltp:sample_rates={AUDIO_SAMPLE_RATE}:channel_layouts=stereo"
    args: list[str] = []
    graph: list[str] = []
    voices: list[str] = []
    for scene, place in zip(spec.scenes, timeline.placements, strict=True):
        if scene.narration is None:
            continue
        label = f"[n{len(voices)}]"
        delay = round(place.start_frame / spec.fps * AUDIO_SAMPLE_RATE)
        span = round((place.frames - place.lead_out) / spec.fps * AUDIO_SAMPLE_RATE)
        graph.append(
            f"[{len(voices)}:a]{fmt},atrim=end_sample={span},asetpts=PTS-STARTPTS,"
            f"adelay=delays={delay}S:all=1{label}"
        )
        args += ["-i", str(scene.narration.resolve())]
        voices.append(label)
    if not voices and spec.music is None:
        return None
    pad = f"apad=whole_len={total_samples},atrim=end_sample={total_samples}"
    if len(voices) > 1:
        graph.append(
            f"{''.join(voices)}amix=inputs={len(voices)}:normalize=0:duration=longest,{pad}[voice]"
        )
    elif voices:
        graph.append(f"{voices[0]}{pad}[voice]")
    mixed = "[voice]"
    if spec.music is not None:
        music_index = len(voices)
        args += ["-stream_loop", "-1", "-i", str(spec.music.resolve())]
        fade_s = min(_MUSIC_FADE_S, total / spec.fps / 4)
        fade_start = total / spec.fps - fade_s
        graph.append(
            f"[{music_index}:a]{fmt},atrim=end_sample={total_samples},asetpts=PTS-STARTPTS,"
            f"volume={spec.music_gain_db:g}dB,"
            f"afade=t=out:st={fade_start:.3f}:d={fade_s:.3f}[music]"
        )
        if not voices:
            mixed = "[music]"
        else:
            music = "[music]"
            if spec.duck:
                graph.append("[voice]asplit=2[voice_mix][voice_key]")
                # Music drops ~10 dB within 20 ms of speech and comes back over 0.4 s.
                graph.append(
                    "[music][voice_key]sidechaincompress="
                    "threshold=0.02:ratio=8:attack=20:release=400[ducked]"
                )
                music = "[ducked]"
                voice = "[voice_mix]"
            else:
                voice = "[voice]"
            graph.append(f"{voice}{music}amix=inputs=2:normalize=0:duration=first[mix]")
            mixed = "[mix]"
    graph.append(f"{mixed}ebur128=metadata=1,ametadata=mode=print:file={loudness_file}[out]")
    return [
        *args,
        "-filter_complex", ";".join(graph),
        "-map", "[out]", "-c:a", "pcm_f32le", "-f", "wav", str(out),
    ]  # fmt: skip


def loudness_gain_db(measured_lufs: float | None, target_lufs: float) -> float:
    """The gain that brings a mix measured at ``measured_lufs`` to ``target_lufs``.

    No gain for an unmeasured or (nearly) silent mix, and never more than +30 dB.
    """
    if measured_lufs is None or measured_lufs <= -70.0:
        return 0.0
    return min(_MAX_GAIN_DB, target_lufs - measured_lufs)


def build_audio_finish_args(*, mix: Path, gain_db: float, out: Path) -> list[str]:
    """ffmpeg arguments that finish the mix: the loudness gain, a peak limiter, AAC.

    Run while the video renders, so the final pass only copies streams.
    """
    limit = 10 ** (_PEAK_LIMIT_DB / 20)
    return [
        "-i", str(mix),
        "-map", "0:a:0",
        "-af", f"volume={gain_db:.2f}dB,alimiter=limit={limit:.4f}:level=0:latency=1",
        "-c:a", "aac", "-b:a", _AUDIO_BITRATE, "-ar", str(AUDIO_SAMPLE_RATE),
        "-f", "mp4", str(out),
    ]  # fmt: skip


def build_final_args(
    spec: ComposeSpec,
    timeline: Timeline,
    *,
    concat_file: Path,
    audio: Path | None,
    out: Path,
) -> list[str]:
    """ffmpeg arguments of the final pass: join the pieces and the finished audio.

    Both are copied (the pieces are already the final video encoding, ``audio`` the
    AAC of ``build_audio_finish_args``): the pass is a remux, ~0.1 s for a minute.
    ``+faststart`` puts the index first.
    """
    args = ["-f", "concat", "-safe", "0", "-i", str(concat_file)]
    maps = ["-map", "0:v:0"]
    if audio is not None:
        args += ["-i", str(audio)]
        maps += ["-map", "1:a:0"]
    return [
        *args,
        *maps,
        "-c", "copy",
        "-t", f"{timeline.duration_s:.6f}",
        "-movflags", "+faststart",
        "-f", "mp4", str(out),
    ]  # fmt: skip


def concat_list(pieces: Sequence[tuple[Path, float]]) -> str:
    """An ffconcat script joining ``(path, duration_s)`` pieces in order.

    Durations are stated so that each piece starts exactly where the previous one
    ends, whatever the pieces' own container timing says.
    """
    lines = ["ffconcat version 1.0"]
    for path, duration_s in pieces:
        quoted = str(path).replace("'", "'\\''")
        lines += [f"file '{quoted}'", f"duration {duration_s:.6f}"]
    return "\n".join(lines) + "\n"


# --- Checkpoint keys: pure ---------------------------------------------------------------


def ass_events_in_window(text: str, start_s: float, end_s: float) -> tuple[str, ...]:
    """The lines of an ASS script that can change pixels in ``[start_s, end_s)``.

    Every line that is not a ``Dialogue:`` event (script info, styles, format) plus
    the events on screen at some moment of the window. An event whose times cannot
    be read is kept (it might be on screen).
    """
    kept: list[str] = []
    start_field, end_field = 1, 2
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("Format:") and "Start" in line:
            names = [name.strip() for name in line.partition(":")[2].split(",")]
            with contextlib.suppress(ValueError):
                start_field, end_field = names.index("Start"), names.index("End")
        if not line.startswith("Dialogue:"):
            kept.append(line)
            continue
        fields = line.partition(":")[2].split(",", max(start_field, end_field) + 1)
        try:
            shown_from = _ass_time_s(fields[start_field])
            shown_until = _ass_time_s(fields[end_field])
        except (IndexError, ValueError):
            kept.append(line)
            continue
        if shown_from < end_s and shown_until > start_s:
            kept.append(line)
    return tuple(kept)


def _ass_time_s(text: str) -> float:
    hours, minutes, seconds = text.strip().split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _digest(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _video_params(spec: ComposeSpec, timeline: Timeline) -> dict[str, Any]:
    return {
        "format": _SEGMENT_FORMAT,
        "size": list(spec.size),
        "fps": spec.fps,
        "preset": spec.preset,
        "crf": spec.crf,
        "transition_frames": timeline.transition_frames,
    }


def segment_key(
    spec: ComposeSpec,
    timeline: Timeline,
    index: int,
    *,
    visual_sha256: str,
    captions: str | None,
    next_visual_sha256: str | None = None,
) -> str:
    """The checkpoint key of scene ``index``'s segment.

    It covers everything the segment's frames depend on: the visual's content (not
    its path), kind, motion, the scene's frame counts, output size, rate and encoder
    settings; when a scene follows, the transition and that scene's visual
    (``next_visual_sha256``), kind, motion and frames (its head is drawn here); and,
    with captions, the caption lines within the window the segment captions (the
    whole scene, which holds the next one's head, with ``captions_on_scenes``, else
    the segment) and where that sits on the timeline. Narration is not part of it.
    """
    scene = spec.scenes[index]
    place = timeline.placements[index]
    payload: dict[str, Any] = {
        **_video_params(spec, timeline),
        "visual": visual_sha256,
        "kind": scene.kind,
        "motion": scene.motion,
        "frames": place.frames,
        "lead_in": place.lead_in,
        "lead_out": place.lead_out,
    }
    if place.lead_out:
        if next_visual_sha256 is None:
            raise ValueError(f"scene {index} has a transition: its key needs the next visual")
        following = spec.scenes[index + 1]
        payload["transition"] = spec.transition
        payload["next"] = {
            "visual": next_visual_sha256,
            "kind": following.kind,
            "motion": following.motion,
            "frames": timeline.placements[index + 1].frames,
        }
    if captions is not None:
        first = place.start_frame if captions_on_scenes(spec) else place.body_start_frame
        count = place.end_frame - first
        start = timeline.seconds(first)
        payload["captioned"] = {"from_frame": first, "frames": count}
        payload["captions"] = ass_events_in_window(captions, start, start + timeline.seconds(count))
    return _digest(payload)


def _even(value: float) -> int:
    return max(2, 2 * math.ceil(value / 2))
