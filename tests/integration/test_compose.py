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
    assert (result.transitions_rendered, result.transitions_reused) == (2, 0)
    _check_output(result, spec, ffmpeg)
    assert shares == sorted(shares)
    assert shares[-1] == 1.0
    # Nothing of the run is left but the checkpoints.
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["segments"]


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
    assert (same.transitions_reused, same.transitions_rendered) == (2, 0)

    # The middle scene changes: its segment and the two transitions touching it are
    # made again, the other two segments are reused.
    scenes = list(spec.scenes)
    scenes[1] = dataclasses.replace(scenes[1], motion="zoom_out")
    changed_spec = dataclasses.replace(spec, scenes=tuple(scenes))
    changed = compose(changed_spec, tmp_path / "changed.mp4", work_dir=work, ffmpeg=ffmpeg)
    assert (changed.segments_reused, changed.segments_rendered) == (2, 1)
    assert (changed.transitions_reused, changed.transitions_rendered) == (0, 2)
    _check_output(changed, changed_spec, ffmpeg)

    # New narration changes no picture: every video piece is reused.
    voiced = dataclasses.replace(
        changed_spec,
        scenes=tuple(dataclasses.replace(s, narration=inputs["voice_b"]) for s in scenes),
    )
    revoiced = compose(voiced, tmp_path / "voiced.mp4", work_dir=work, ffmpeg=ffmpeg)
    assert (revoiced.segments_reused, revoiced.transitions_reused) == (3, 2)


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
    # segment's body has started to be written.
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(inputs["still_a"]), str(tmp_path / "o.mp4"),
         str(work)],
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            partial = list(segments.glob(".tmp-*/body.mp4")) if segments.exists() else []
            if partial and partial[0].stat().st_size > 0:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run finished before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=10)

    assert not (tmp_path / "o.mp4").exists()
    assert [p.name for p in segments.iterdir() if not p.name.startswith(".tmp-")] == []
    assert list(segments.glob(".tmp-*/body.mp4")), "the partial segment stays where it was"

    # The replacement run renders the segment anew (the partial one is never read)
    # and delivers a complete file.
    spec = ComposeSpec(scenes=(Scene(inputs["still_a"], "image", 6.0, "zoom_in"),), size=(540, 960))
    result = compose(spec, tmp_path / "o.mp4", work_dir=work, ffmpeg=ffmpeg)
    assert (result.segments_reused, result.segments_rendered) == (0, 1)
    assert decode_check(result.path) == 180
