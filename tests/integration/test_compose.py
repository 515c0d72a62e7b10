"""compose() on real files: the output, the checkpoints, a run killed mid-way."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vidpipe.media.alignment import WordTiming
from vidpipe.media.analysis import analyze
from vidpipe.media.captions_timed import CaptionStyle, group_words, to_ass
from vidpipe.media.compose import ComposeResult, ComposeSpec, Scene, compose, plan_timeline
from vidpipe.media.ffmpeg import find_ffmpeg, run_ffmpeg
from vidpipe.media.probe import decode_check, probe
from vidpipe.media.validate import Expectation, validate_full

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 360, 640


@pytest.fixture(scope="module")
def ffmpeg() -> Path:
    return find_ffmpeg()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, ffmpeg: Path) -> dict[str, Path]:
    """Two stills, a 24 fps clip, two narration tones, quiet music and captions."""
    root = tmp_path_factory.mktemp("compose-inputs")
    made = {
        "still_a": ("-f", "lavfi", "-i", "mandelbrot=s=480x800", "-frames:v", "1"),
        "still_b": ("-f", "lavfi", "-i", "testsrc2=s=640x360", "-frames:v", "1"),
        "clip": ("-f", "lavfi", "-i", "testsrc=s=320x240:r=24:d=1.5", "-pix_fmt", "yuv420p"),
        "voice_a": ("-f", "lavfi", "-i", "sine=f=300:b=3:r=48000:d=1.6"),
        "voice_b": ("-f", "lavfi", "-i", "sine=f=500:b=2:r=48000:d=1.2"),
        "music": ("-f", "lavfi", "-i", "anoisesrc=c=pink:a=0.05:r=44100:d=1"),
    }
    suffix = {"still_a": ".png", "still_b": ".png", "clip": ".mp4"}
    paths: dict[str, Path] = {}
    for name, args in made.items():
        path = root / f"{name}{suffix.get(name, '.wav')}"
        run_ffmpeg([*args, str(path)], ffmpeg=ffmpeg, timeout_s=60)
        paths[name] = path
    words = ["every", "frame", "is", "encoded", "once", "and", "every", "piece", "is", "saved"]
    step = 4.4 / len(words)
    timings = [WordTiming(w, 0.1 + i * step, 0.1 + (i + 1) * step) for i, w in enumerate(words)]
    style = CaptionStyle(size_px=28, outline_px=2, width_px=WIDTH, height_px=HEIGHT)
    paths["captions"] = root / "captions.ass"
    paths["captions"].write_text(to_ass(group_words(timings, max_words=3), style))
    return paths


def _spec(inputs: dict[str, Path], **options: object) -> ComposeSpec:
    scenes = (
        Scene(inputs["still_a"], "image", 2.0, "zoom_in", inputs["voice_a"]),
        Scene(inputs["clip"], "video", 1.5, "pan_left"),
        Scene(inputs["still_b"], "image", 1.5, "none", inputs["voice_b"]),
    )
    defaults: dict[str, object] = {
        "scenes": scenes,
        "size": (WIDTH, HEIGHT),
        "captions_ass": inputs["captions"],
        "music": inputs["music"],
    }
    return ComposeSpec(**{**defaults, **options})  # type: ignore[arg-type]


def _check_output(result: ComposeResult, spec: ComposeSpec, ffmpeg: Path) -> None:
    width, height = spec.size
    timeline = plan_timeline(spec)
    info = probe(result.path)
    assert info.video is not None
    assert (info.video.width, info.video.height) == (width, height)
    assert info.video.fps == pytest.approx(30.0)
    assert info.video.codec == "h264"
    assert info.video.pix_fmt == "yuv420p"
    assert decode_check(result.path) == timeline.total_frames
    assert info.duration_s == pytest.approx(result.duration_s, abs=0.05)
    analysis = analyze(result.path, want_audio=True, ffmpeg=ffmpeg)
    assert analysis.faststart is True
    assert info.audio is not None
    assert info.audio.codec == "aac"
    assert analysis.loudness is not None
    assert analysis.loudness.integrated_lufs == pytest.approx(spec.target_lufs, abs=1.5)
    report = validate_full(analysis, Expectation(width, height, result.duration_s))
    assert report.ok, report.reason


def test_compose_delivers_a_valid_short(
    inputs: dict[str, Path], ffmpeg: Path, tmp_path: Path
) -> None:
    spec = _spec(inputs)
    shares: list[float] = []

    result = compose(
        spec, tmp_path / "short.mp4", work_dir=tmp_path / "work", ffmpeg=ffmpeg,
        progress=shares.append,
    )  # fmt: skip

    # 2 + 1.5 + 1.5 s minus two 0.4 s fades.
    assert result.duration_s == pytest.approx(4.2)
    assert (result.segments_rendered, result.segments_reused) == (3, 0)
    _check_output(result, spec, ffmpeg)
    assert shares == sorted(shares)
    assert shares[-1] == 1.0
    # Nothing of the run is left but the checkpoints.
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["segments"]


def _mean_rgb_per_frame(path: Path, ffmpeg: Path) -> list[tuple[int, int, int]]:
    """The mean (red, green, blue) of each decoded frame, 0-255."""
    raw = subprocess.run(
        [str(ffmpeg), "-v", "error", "-i", str(path), "-vf", "scale=4:4", "-pix_fmt", "rgb24",
         "-f", "rawvideo", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    size = 4 * 4 * 3
    frames = [raw[i : i + size] for i in range(0, len(raw), size)]
    return [tuple(sum(f[c::3]) // 16 for c in range(3)) for f in frames]  # type: ignore[misc]


@pytest.mark.parametrize("transition", ["fade", "slide"])
def test_each_frame_of_each_scene_lands_on_its_place(
    ffmpeg: Path, tmp_path: Path, transition: str
) -> None:
    # Two 1 s clips whose frames say their own number: in the first, red is 6 x the
    # frame's number, in the second green is 8 x it. Crossed in 12 frames: 48 frames,
    # 0-17 the first clip's 0-17, 18-29 its 18-29 crossed with the second's 0-11,
    # 30-47 the second's 12-29. A frame repeated, lost or shifted at a seam fails.
    clips = {}
    for name, expr in (("a", "r='6*N':g='0':b='0'"), ("b", "r='0':g='8*N':b='0'")):
        clips[name] = tmp_path / f"{name}.mp4"
        run_ffmpeg(
            ["-f", "lavfi", "-i", "color=c=black:s=64x64:r=30:d=1", "-vf",
             f"format=rgb24,geq={expr}", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p",
             str(clips[name])],
            ffmpeg=ffmpeg, timeout_s=60,
        )  # fmt: skip
    spec = ComposeSpec(
        scenes=(Scene(clips["a"], "video", 1.0), Scene(clips["b"], "video", 1.0)),
        size=(64, 64),
        transition=transition,  # type: ignore[arg-type]
    )
    result = compose(spec, tmp_path / "o.mp4", work_dir=tmp_path / "w", ffmpeg=ffmpeg)
    frames = _mean_rgb_per_frame(result.path, ffmpeg)

    assert len(frames) == 48
    for n, (red, green, _) in enumerate(frames):
        if n < 18:
            assert red == pytest.approx(6 * n, abs=3), n
            assert green <= 3, n
        elif n >= 30:
            assert red <= 3, n
            assert green == pytest.approx(8 * (n - 18), abs=3), n
    crossing = frames[18:30]
    if transition == "slide":
        # The second clip pushes the first out: less of it, more of the other.
        assert [f[0] for f in crossing] == sorted((f[0] for f in crossing), reverse=True)
        assert [f[1] for f in crossing] == sorted(f[1] for f in crossing)
        return
    # In a fade, frame k of 12 is (1 - k/12) of the first clip's frame 18 + k and k/12
    # of the second's frame k.
    for k, (red, green, _) in enumerate(crossing):
        assert red == pytest.approx((1 - k / 12) * 6 * (18 + k), abs=5), (k, crossing[k])
        assert green == pytest.approx(k / 12 * 8 * k, abs=5), (k, crossing[k])


@pytest.mark.parametrize(
    ("size", "options"),
    [
        ((640, 360), {"transition": "slide", "captions_ass": None}),
        ((480, 480), {"transition": "none", "music": None}),
    ],
)
def test_compose_other_aspects_and_options(
    inputs: dict[str, Path],
    ffmpeg: Path,
    tmp_path: Path,
    size: tuple[int, int],
    options: dict[str, object],
) -> None:
    spec = _spec(inputs, size=size, **options)
    result = compose(spec, tmp_path / "o.mp4", work_dir=tmp_path / "w", ffmpeg=ffmpeg)
    _check_output(result, spec, ffmpeg)


def test_a_second_run_reuses_every_unchanged_segment(
    inputs: dict[str, Path], ffmpeg: Path, tmp_path: Path
) -> None:
    spec = _spec(inputs)
    work = tmp_path / "work"
    compose(spec, tmp_path / "first.mp4", work_dir=work, ffmpeg=ffmpeg)

    same = compose(spec, tmp_path / "same.mp4", work_dir=work, ffmpeg=ffmpeg)
    assert (same.segments_reused, same.segments_rendered) == (3, 0)

    # The middle scene changes: its segment is made again, and the first one, whose
    # transition shows the middle scene's first frames; the last one is reused.
    scenes = list(spec.scenes)
    scenes[1] = dataclasses.replace(scenes[1], motion="zoom_out")
    changed_spec = dataclasses.replace(spec, scenes=tuple(scenes))
    changed = compose(changed_spec, tmp_path / "changed.mp4", work_dir=work, ffmpeg=ffmpeg)
    assert (changed.segments_reused, changed.segments_rendered) == (1, 2)
    _check_output(changed, changed_spec, ffmpeg)

    # New narration changes no picture: every video piece is reused.
    voiced = dataclasses.replace(
        changed_spec,
        scenes=tuple(dataclasses.replace(s, narration=inputs["voice_b"]) for s in scenes),
    )
    revoiced = compose(voiced, tmp_path / "voiced.mp4", work_dir=work, ffmpeg=ffmpeg)
    assert (revoiced.segments_reused, revoiced.segments_rendered) == (3, 0)


_KILLED_RUN = """
import sys
from pathlib import Path
from vidpipe.media.compose import ComposeSpec, Scene, compose
from vidpipe.media.ffmpeg import find_ffmpeg

still, out, work = map(Path, sys.argv[1:4])
spec = ComposeSpec(scenes=(Scene(still, "image", 6.0, "zoom_in"),), size=(540, 960))
compose(spec, out, work_dir=work, ffmpeg=find_ffmpeg(), max_parallel=1)
"""


def test_a_killed_run_leaves_nothing_that_is_reused(
    inputs: dict[str, Path], ffmpeg: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    segments = work / "segments"
    # A run in its own process group (so ffmpeg dies with it), killed once its
    # segment has started to be written.
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(inputs["still_a"]), str(tmp_path / "o.mp4"),
         str(work)],
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            partial = list(segments.glob(".tmp-*/segment.mp4")) if segments.exists() else []
            if partial and partial[0].stat().st_size > 0:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run finished before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=10)

    assert not (tmp_path / "o.mp4").exists()
    assert [p.name for p in segments.iterdir() if not p.name.startswith(".tmp-")] == []
    assert list(segments.glob(".tmp-*/segment.mp4")), "the partial segment stays where it was"

    # The replacement run renders the segment anew (the partial one is never read)
    # and delivers a complete file.
    spec = ComposeSpec(scenes=(Scene(inputs["still_a"], "image", 6.0, "zoom_in"),), size=(540, 960))
    result = compose(spec, tmp_path / "o.mp4", work_dir=work, ffmpeg=ffmpeg)
    assert (result.segments_reused, result.segments_rendered) == (0, 1)
    assert decode_check(result.path) == 180
