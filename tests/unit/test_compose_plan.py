"""The composer's pure plan: timeline, ffmpeg arguments, checkpoint keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vidpipe.errors import InvalidRequest
from vidpipe.media import compose, compose_plan
from vidpipe.media.compose_plan import (
    ComposeSpec,
    Scene,
    ass_events_in_window,
    build_audio_args,
    build_audio_finish_args,
    build_final_args,
    build_segment_args,
    concat_list,
    loudness_gain_db,
    plan_timeline,
    segment_key,
)

IMG = Path("/in/a.png")
CLIP = Path("/in/b.mp4")
VOICE = Path("/in/voice.wav")
MUSIC = Path("/in/music.wav")


def _spec(*durations: float, **options: object) -> ComposeSpec:
    scenes = tuple(Scene(IMG, "image", d, "zoom_in", VOICE) for d in durations)
    return ComposeSpec(scenes=scenes, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("durations", "transition", "transition_s", "starts", "total", "leads"),
    [
        # One scene: no transition, whatever was asked.
        ((2.0,), "fade", 0.4, (0,), 60, ((0, 0),)),
        # Two scenes overlap by 12 frames (0.4 s at 30 fps).
        ((2.0, 3.0), "fade", 0.4, (0, 48), 138, ((0, 12), (12, 0))),
        ((10.4,) * 5 + (10.0,), "slide", 0.4, (0, 300, 600, 900, 1200, 1500), 1800, None),
        # No transition: back to back, nothing shared.
        ((2.0, 3.0, 1.0), "none", 0.4, (0, 60, 150), 180, ((0, 0), (0, 0), (0, 0))),
        # Durations are rounded to whole frames.
        ((1.01, 0.99), "fade", 0.1, (0, 27), 57, ((0, 3), (3, 0))),
    ],
)
def test_timeline_overlaps_scenes_by_the_transition(
    durations: tuple[float, ...],
    transition: str,
    transition_s: float,
    starts: tuple[int, ...],
    total: int,
    leads: tuple[tuple[int, int], ...] | None,
) -> None:
    timeline = plan_timeline(_spec(*durations, transition=transition, transition_s=transition_s))

    assert tuple(p.start_frame for p in timeline.placements) == starts
    assert timeline.total_frames == total
    assert timeline.duration_s == pytest.approx(total / 30)
    overlap = timeline.transition_frames
    assert timeline.duration_s == pytest.approx(
        sum(round(d * 30) for d in durations) / 30 - overlap * (len(durations) - 1) / 30
    )
    if leads is not None:
        assert tuple((p.lead_in, p.lead_out) for p in timeline.placements) == leads
    # Bodies and transitions tile the timeline exactly.
    assert sum(p.body_frames for p in timeline.placements) + overlap * (len(durations) - 1) == total


def test_a_scene_too_short_for_its_transitions_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="too short"):
        plan_timeline(_spec(2.0, 0.8, 2.0, transition_s=0.4))
    # The same scene fits at either end, where it has one transition only.
    assert plan_timeline(_spec(0.8, 2.0, transition_s=0.4)).total_frames == 72


@pytest.mark.parametrize(
    "options",
    [
        {"size": (1081, 1920)},
        {"size": (8, 8)},
        {"fps": 0},
        {"transition": "wipe"},
        {"transition_s": -1.0},
        {"crf": 60},
    ],
)
def test_spec_refuses_impossible_options(options: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        _spec(2.0, **options)


def test_scene_refuses_unknown_kind_motion_and_bad_duration() -> None:
    with pytest.raises(InvalidRequest):
        Scene(IMG, "gif", 1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        Scene(IMG, "image", 1.0, "spin")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        Scene(IMG, "image", 0.0)


def test_spec_keeps_scenes_as_a_tuple() -> None:
    spec = ComposeSpec(scenes=[Scene(IMG, "image", 1.0)])  # type: ignore[arg-type]
    assert isinstance(spec.scenes, tuple)
    hash(spec)


def _graph(args: list[str]) -> str:
    return args[args.index("-filter_complex") + 1]


def _encoder(args: list[str]) -> list[str]:
    start = args.index("libx264") - 1
    return args[start : args.index("-dn") + 1]


def test_segment_args_for_an_image_zoom_scale_once_then_zoompan() -> None:
    spec = _spec(2.0, 3.0, 2.0, size=(360, 640))
    timeline = plan_timeline(spec)
    args = build_segment_args(spec, timeline, 1, Path("/out"))
    graph = _graph(args)

    # Fitted once to the output size times the zoom, then zoomed at output size.
    assert "scale=414:736:flags=lanczos" in graph
    assert "zoompan=z='1+0.15*min(on/89,1)'" in graph
    assert ":d=90:s=360x640:fps=30" in graph
    # The segment starts after the incoming transition (the previous segment's): the
    # body, 90 - 2 x 12 frames, then the crossing into the next scene's first frames,
    # made here from the next visual (input 1) on the same zoom it starts with there.
    assert "[scene]trim=start_frame=12,setpts=PTS-STARTPTS,split=2[body_in][tail_in]" in graph
    assert "[body_in]trim=end_frame=66," in graph
    assert "[tail_in]trim=start_frame=66," in graph
    assert args[:4] == ["-i", "/in/a.png", "-i", "/in/a.png"]
    assert "[1:v]" in graph
    assert "zoompan=z='1+0.15*min(on/59,1)'" in graph  # the next scene: 2 s, 60 frames
    assert ":d=12:s=360x640:fps=30" in graph  # only its first 12 frames
    assert "xfade=transition=fade:duration=0.400000:offset=0,trim=end_frame=12" in graph
    assert "[body][cross]concat=n=2:v=1:a=0[segment]" in graph
    assert args[-3:] == ["-f", "mp4", "/out/segment.mp4"]
    assert args.count("-map") == 1
    assert "ass=" not in graph


def test_segment_args_for_a_clip_and_for_the_end_scenes() -> None:
    scenes = (
        Scene(CLIP, "video", 2.0, "none"),
        Scene(CLIP, "video", 2.0, "pan_left"),
    )
    spec = ComposeSpec(scenes=scenes, size=(640, 360), captions_ass=Path("/in/c.ass"))
    timeline = plan_timeline(spec)
    first = build_segment_args(spec, timeline, 0, Path("/o"))
    second = build_segment_args(spec, timeline, 1, Path("/o"))

    assert "[0:v]setpts=PTS-STARTPTS,fps=30,tpad=stop_mode=clone:stop=-1,trim=end_frame=60," in (
        _graph(first)
    )
    assert "scale=640:360" in _graph(first)
    # The next clip is read for its first 12 frames (0.4 s) and a margin, no further;
    # its motion still spans its 60 frames.
    assert first[:6] == ["-i", "/in/b.mp4", "-t", "1.400000", "-i", "/in/b.mp4"]
    assert "[1:v]setpts=PTS-STARTPTS,fps=30,tpad=stop_mode=clone:stop=-1,trim=end_frame=12," in (
        _graph(first)
    )
    assert "zoompan=z='1.12':x='(iw-iw/zoom)*(1-min(on/59,1))'" in _graph(first)
    # The last scene: no next input, no crossing; its first 12 frames are made and
    # dropped (they are in the first segment).
    assert second[:2] == ["-i", "/in/b.mp4"]
    assert second.count("-i") == 1
    assert "zoompan=z='1.12':x='(iw-iw/zoom)*(1-min(on/59,1))'" in _graph(second)
    assert "xfade" not in _graph(second)
    assert _graph(second).endswith("[scene]trim=start_frame=12,setpts=PTS-STARTPTS[segment]")
    # Captions drawn on the output clock, on each whole scene before the crossing (so
    # a fade needs none of its own): the second scene starts at frame 48, in both.
    on_second = "setpts=PTS+1.600000/TB,ass=captions.ass,setpts=PTS-STARTPTS"
    assert f"{on_second}[scene]" in _graph(second)
    assert _graph(second).count("ass=") == 1
    assert f"{on_second}[next]" in _graph(first)
    assert "setpts=PTS+0.000000/TB,ass=captions.ass,setpts=PTS-STARTPTS[scene]" in _graph(first)
    assert _graph(first).count("ass=") == 2

    # A slide moves the pictures, not the captions: then the segment is captioned once
    # after the crossing, from where it starts on the timeline (frame 0, and 60).
    slide = dataclasses.replace(spec, transition="slide")
    timeline = plan_timeline(slide)
    for index, start in ((0, "0.000000"), (1, "2.000000")):
        graph = _graph(build_segment_args(slide, timeline, index, Path("/o")))
        drawn = f"setpts=PTS+{start}/TB,ass=captions.ass,setpts=PTS-STARTPTS[segment]"
        assert graph.endswith(drawn)
        assert graph.count("ass=") == 1
    first_slide = _graph(build_segment_args(slide, timeline, 0, Path("/o")))
    assert "xfade=transition=slideleft" in first_slide


def test_image_pan_is_a_moving_crop_and_still_is_a_loop() -> None:
    scenes = (Scene(IMG, "image", 1.0, "pan_right"), Scene(IMG, "image", 1.0, "none"))
    spec = ComposeSpec(scenes=scenes, size=(360, 640), transition="none")
    timeline = plan_timeline(spec)
    pan = _graph(build_segment_args(spec, timeline, 0, Path("/o")))
    still = _graph(build_segment_args(spec, timeline, 1, Path("/o")))

    assert "loop=loop=29:size=1:start=0" in pan
    assert "crop=360:640:x='(iw-ow)*min(n/29,1)'" in pan
    assert "zoompan" not in pan
    assert "scale=360:640:flags=lanczos" in still
    assert "crop=360:640" not in still


def test_every_segment_is_encoded_with_the_same_parameters() -> None:
    # The segments are joined without re-encoding: this is what makes that valid.
    spec = _spec(2.0, 2.0, 2.0, preset="faster", crf=23)
    timeline = plan_timeline(spec)
    first, middle, last = (build_segment_args(spec, timeline, i, Path("/o")) for i in range(3))
    assert _encoder(first) == _encoder(middle) == _encoder(last)
    assert _encoder(first)[2:8] == ["-preset", "faster", "-crf", "23", "-pix_fmt", "yuv420p"]


def test_a_thread_count_goes_to_every_encoder_and_changes_nothing_else() -> None:
    spec = _spec(2.0, 2.0)
    timeline = plan_timeline(spec)
    plain = build_segment_args(spec, timeline, 0, Path("/o"))
    segment = build_segment_args(spec, timeline, 0, Path("/o"), encoder_threads=1)
    last = build_segment_args(spec, timeline, 1, Path("/o"), encoder_threads=1)
    assert "-threads" not in plain
    assert _encoder(segment)[:4] == ["-c:v", "libx264", "-threads", "1"]
    assert _encoder(segment) == _encoder(last)
    at = segment.index("-threads")
    assert segment[:at] + segment[at + 2 :] == plain


def test_encoders_share_the_cpus_among_the_pieces_that_run_at_once() -> None:
    import os

    cpus = len(os.sched_getaffinity(0))
    assert compose.encoder_threads(1) == cpus
    assert compose.encoder_threads(2) == max(1, cpus // 2)
    assert compose.encoder_threads(cpus * 4) == 1
    assert compose.encoder_threads(0) == cpus


@pytest.mark.parametrize(
    ("transition", "captions", "on_scenes"),
    [("fade", True, True), ("none", True, True), ("slide", True, False), ("fade", False, False)],
)
def test_captions_on_scenes(transition: str, captions: bool, on_scenes: bool) -> None:
    spec = _spec(2.0, 2.0, transition=transition, captions_ass=Path("/c.ass") if captions else None)
    assert compose_plan.captions_on_scenes(spec) is on_scenes


def test_audio_args_place_narration_and_duck_the_music() -> None:
    scenes = (
        Scene(IMG, "image", 2.0, narration=VOICE),
        Scene(IMG, "image", 2.0),
        Scene(IMG, "image", 2.0, narration=Path("/in/v3.wav")),
    )
    spec = ComposeSpec(scenes=scenes, music=MUSIC, music_gain_db=-20)
    timeline = plan_timeline(spec)
    args = build_audio_args(spec, timeline, out=Path("/run/mix.wav"))
    assert args is not None
    graph = _graph(args)

    assert args[:4] == ["-i", str(VOICE), "-i", "/in/v3.wav"]
    assert args[4:8] == ["-stream_loop", "-1", "-i", str(MUSIC)]
    # Scene 3 starts at frame 96 = 3.2 s = 153600 samples; each voice stops where the
    # next scene starts (48 frames = 1.6 s for the first).
    assert "atrim=end_sample=76800,asetpts=PTS-STARTPTS,adelay=delays=0S:all=1" in graph
    assert "adelay=delays=153600S:all=1" in graph
    assert "amix=inputs=2:normalize=0" in graph
    assert "volume=-20dB" in graph
    assert "sidechaincompress" in graph
    assert "ebur128=metadata=1" in graph
    assert args[-3:] == ["-f", "wav", "/run/mix.wav"]


def test_audio_args_without_ducking_music_only_or_nothing() -> None:
    no_duck = _spec(2.0, music=MUSIC, duck=False)
    timeline = plan_timeline(no_duck)
    args = build_audio_args(no_duck, timeline, out=Path("/m.wav"))
    assert args is not None
    assert "sidechaincompress" not in _graph(args)

    music_only = ComposeSpec(scenes=(Scene(IMG, "image", 2.0),), music=MUSIC)
    args = build_audio_args(music_only, plan_timeline(music_only), out=Path("/m.wav"))
    assert args is not None
    assert "[music]ebur128" in _graph(args)

    silent = ComposeSpec(scenes=(Scene(IMG, "image", 2.0),))
    assert build_audio_args(silent, plan_timeline(silent), out=Path("/m.wav")) is None


def test_final_args_copy_the_video_and_the_finished_audio() -> None:
    spec = _spec(2.0, 2.0)
    timeline = plan_timeline(spec)
    args = build_final_args(
        spec, timeline, concat_file=Path("/r/p.ffconcat"), audio=Path("/r/a.m4a"), out=Path("/o")
    )
    assert args[:6] == ["-f", "concat", "-safe", "0", "-i", "/r/p.ffconcat"]
    assert args[args.index("-c") + 1] == "copy"
    assert "-af" not in args  # nothing is encoded in the last, serial pass
    assert args[args.index("-movflags") + 1] == "+faststart"
    assert args[args.index("-t") + 1] == "3.600000"
    assert args[args.index("1:a:0") - 1 : args.index("1:a:0") + 1] == ["-map", "1:a:0"]

    silent = build_final_args(
        spec, timeline, concat_file=Path("/p"), audio=None, out=Path("/o.mp4")
    )
    assert "1:a:0" not in silent
    assert "-map" in silent


def test_audio_finish_args_apply_the_gain_and_the_limiter_then_aac() -> None:
    args = build_audio_finish_args(mix=Path("/r/mix.wav"), gain_db=4.25, out=Path("/r/a.m4a"))
    assert args[args.index("-af") + 1].startswith("volume=4.25dB,alimiter=limit=0.8414")
    assert args[args.index("-c:a") + 1] == "aac"
    assert args[-1] == "/r/a.m4a"


def test_concat_list_quotes_paths_and_states_durations() -> None:
    text = concat_list([(Path("/a/b.mp4"), 1.5), (Path("/a/it's.mp4"), 0.4)])
    assert text.splitlines() == [
        "ffconcat version 1.0",
        "file '/a/b.mp4'",
        "duration 1.500000",
        "file '/a/it'\\''s.mp4'",
        "duration 0.400000",
    ]


@pytest.mark.parametrize(
    ("measured", "target", "gain"),
    [(-20.0, -14.0, 6.0), (-10.5, -14.0, -3.5), (-14.0, -14.0, 0.0), (None, -14.0, 0.0),
     (-70.0, -14.0, 0.0), (-60.0, -14.0, 30.0)],
)  # fmt: skip
def test_loudness_gain(measured: float | None, target: float, gain: float) -> None:
    assert loudness_gain_db(measured, target) == pytest.approx(gain)


ASS = """[Script Info]
PlayResX: 360

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:00.00,0:00:01.00,Default,,0,0,0,,one
Dialogue: 0,0:00:01.00,0:00:02.50,Default,,0,0,0,,two, with a comma
Dialogue: 0,0:01:00.00,0:01:01.00,Default,,0,0,0,,late
Dialogue: 0,broken,0:00:01.00,Default,,0,0,0,,unreadable
"""


@pytest.mark.parametrize(
    ("start", "end", "texts"),
    [
        (0.0, 1.0, ["one", "unreadable"]),
        (0.5, 1.5, ["one", "two, with a comma", "unreadable"]),
        (2.5, 59.0, ["unreadable"]),
        (60.5, 70.0, ["late", "unreadable"]),
    ],
)
def test_caption_lines_in_a_window(start: float, end: float, texts: list[str]) -> None:
    lines = ass_events_in_window(ASS, start, end)
    assert lines[:4] == (
        "[Script Info]",
        "PlayResX: 360",
        "[Events]",
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
    )
    assert [line.rsplit(",,", 1)[1] for line in lines[4:]] == texts


def test_caption_window_follows_a_reordered_format_line() -> None:
    text = "Format: Start, End, Text\nDialogue: 0:00:05.00,0:00:06.00,five\n"
    assert ass_events_in_window(text, 0.0, 1.0) == ("Format: Start, End, Text",)
    assert len(ass_events_in_window(text, 5.5, 7.0)) == 2


def test_segment_key_covers_what_the_pixels_depend_on() -> None:
    spec = _spec(2.0, 2.0, 2.0, captions_ass=Path("/in/c.ass"))
    timeline = plan_timeline(spec)

    def key(
        s: ComposeSpec = spec,
        digest: str = "a" * 64,
        captions: str | None = ASS,
        following: str = "n" * 64,
        index: int = 1,
    ) -> str:
        return segment_key(
            s,
            plan_timeline(s),
            index,
            visual_sha256=digest,
            captions=captions,
            next_visual_sha256=following,
        )

    base = key()
    assert base == key()
    assert key(digest="b" * 64) != base
    still = dataclasses.replace(spec.scenes[1], motion="none")
    moved = dataclasses.replace(spec, scenes=(spec.scenes[0], still, spec.scenes[2]))
    assert key(moved) != base
    assert key(dataclasses.replace(spec, crf=23)) != base
    assert key(dataclasses.replace(spec, size=(720, 1280))) != base
    # The transition into the next scene is drawn in this segment: its kind and that
    # scene's picture, motion and length are in the key; the scene before is not.
    assert key(following="m" * 64) != base
    assert key(dataclasses.replace(spec, transition="slide")) != base
    next_still = dataclasses.replace(spec.scenes[2], motion="none")
    assert key(dataclasses.replace(spec, scenes=(*spec.scenes[:2], next_still))) != base
    longer = dataclasses.replace(spec.scenes[2], duration_s=3.0)
    assert key(dataclasses.replace(spec, scenes=(*spec.scenes[:2], longer))) != base
    first_still = dataclasses.replace(spec.scenes[0], motion="none")
    assert key(dataclasses.replace(spec, scenes=(first_still, *spec.scenes[1:]))) == base
    # The last segment has no transition out: the next visual plays no part, and one
    # that has a transition must be given it.
    assert key(index=2, following="x" * 64) == key(index=2, following="y" * 64)
    with pytest.raises(ValueError, match="next visual"):
        segment_key(spec, timeline, 0, visual_sha256="a" * 64, captions=None)
    # Narration and music are not in the picture.
    unvoiced = dataclasses.replace(
        spec, scenes=tuple(dataclasses.replace(s, narration=None) for s in spec.scenes)
    )
    assert key(unvoiced) == base
    assert key(dataclasses.replace(spec, music=MUSIC)) == base
    # The middle scene is on screen 1.6-3.6 s (captioned whole, the next head within
    # it): a caption outside it does not matter, inside does.
    assert key(captions=ASS.replace(",late", ",later")) == base
    assert key(captions=ASS.replace("two, with", "TWO, with")) != base
    assert timeline.placements[1].start_frame == 48


@pytest.mark.parametrize("module", [compose, compose_plan])
def test_public_names_exist(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert sorted(names) == sorted(set(names))
    for name in names:
        assert hasattr(module, name)


@pytest.mark.parametrize("kind", ["image", "video"])
@pytest.mark.parametrize("motion", ["none", "zoom_in", "zoom_out", "pan_left", "pan_right"])
def test_every_scene_is_restamped_on_the_output_clock(kind: str, motion: str) -> None:
    # Frame n at n/fps in a 1/fps time base, whatever the source's clock: otherwise
    # the encoder's constant rate duplicates or drops frames and pieces drift.
    spec = ComposeSpec(scenes=(Scene(IMG, kind, 10.4, motion),))  # type: ignore[arg-type]
    graph = _graph(build_segment_args(spec, plan_timeline(spec), 0, Path("/o")))
    scene = graph.split(";")[0].replace(",trim=end_frame=312", "")
    assert scene.endswith(",settb=1/30,setpts=N[scene]")


def test_the_dearest_segments_run_first_and_the_audio_beside_them() -> None:
    # On 2 cores a long segment started last runs alone while the other core idles:
    # the run order is by weight, heaviest first, and the light audio starts at once.
    started: list[str] = []

    def task(name: str, weight: float, *, light: bool = False) -> compose._Task:
        return compose._Task(name, weight, lambda: started.append(name), light=light)

    tasks = [task("a", 10), task("b", 30), task("audio", 5, light=True), task("c", 20)]
    compose._run_tasks(tasks, max_parallel=1, report=None)
    assert started == ["audio", "b", "c", "a"]


def test_a_clip_weighs_more_than_a_zooming_still_more_than_a_still() -> None:
    clip = compose._cost(Scene(CLIP, "video", 1.0, "none"))
    zoom = compose._cost(Scene(IMG, "image", 1.0, "zoom_out"))
    pan = compose._cost(Scene(IMG, "image", 1.0, "pan_left"))
    still = compose._cost(Scene(IMG, "image", 1.0, "none"))
    assert clip > zoom > pan == still
