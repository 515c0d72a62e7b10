"""Full validation on real media generated here: each fault made on purpose, then caught."""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from vidpipe.media.analysis import (
    Analysis,
    Interval,
    Loudness,
    MetadataFrame,
    analyze,
    intervals_from_metadata,
    loudness_from_metadata,
    parse_metadata_print,
    parse_progress_frames,
)
from vidpipe.media.ffmpeg import find_ffmpeg, run_ffmpeg
from vidpipe.media.mp4 import Box, is_faststart, top_level_boxes
from vidpipe.media.policy import ValidationPolicy
from vidpipe.media.render import render_prompt_video
from vidpipe.media.validate import Expectation, ValidationReport, validate_full

pytestmark = pytest.mark.slow

# A moving test pattern at 640x360, 24 fps, 2 s; and a 1 kHz tone whose EBU R128
# loudness is -23 LUFS: `sine` peaks at 1/8 (-18.06 dBFS), x0.8 makes 0.1 (-20 dBFS),
# and a full-scale mono 1 kHz sine reads -3.01 LUFS, so this one reads -23.0.
MOVING = "testsrc2=s=640x360:r=24:d=2"
TONE_23_LUFS = "sine=f=1000:r=48000:d=2,volume=0.8"
EXPECT_360P_2S = Expectation(width=640, height=360, seconds=2)
# The clips are tiny; the size floor is for real deliveries.
SMALL_OK = ValidationPolicy(min_size_bytes=1000)

MakeClip = Callable[..., Path]


@pytest.fixture(scope="module")
def make_clip(tmp_path_factory: pytest.TempPathFactory) -> MakeClip:
    """Encode lavfi sources to an H.264/AAC MP4 once per name for the module."""
    directory = tmp_path_factory.mktemp("clips")
    made: dict[str, Path] = {}

    def make(
        name: str,
        video: str = MOVING,
        audio: str | None = TONE_23_LUFS,
        *,
        faststart: bool = True,
    ) -> Path:
        if name in made:
            return made[name]
        out = directory / f"{name}.mp4"
        args = ["-f", "lavfi", "-i", video]
        if audio is not None:
            args += ["-f", "lavfi", "-i", audio]
        args += ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
        args += ["-c:a", "aac", "-b:a", "128k"] if audio is not None else ["-an"]
        if faststart:
            args += ["-movflags", "+faststart"]
        run_ffmpeg([*args, "-shortest", str(out)], ffmpeg=find_ffmpeg(), timeout_s=60)
        made[name] = out
        return out

    return make


def check(
    path: Path,
    *,
    want_audio: bool = True,
    expected: Expectation = EXPECT_360P_2S,
    policy: ValidationPolicy = SMALL_OK,
) -> tuple[Analysis, ValidationReport]:
    analysis = analyze(path, want_audio=want_audio, ffmpeg=find_ffmpeg())
    return analysis, validate_full(analysis, expected, policy)


def failed(report: ValidationReport) -> set[str]:
    return {c.name for c in report.failed}


def test_a_normal_clip_passes_every_check(make_clip: MakeClip) -> None:
    analysis, report = check(make_clip("normal"))

    assert report.ok, report.reason
    assert analysis.faststart is True
    assert analysis.decoded_frames == 48
    assert analysis.decode_error is None
    assert analysis.black == analysis.frozen == analysis.silence == ()
    assert analysis.info is not None
    assert analysis.info.audio is not None


def test_the_tone_measures_minus_23_lufs(make_clip: MakeClip) -> None:
    analysis, _ = check(make_clip("normal"))

    assert analysis.loudness is not None
    assert analysis.loudness.integrated_lufs == pytest.approx(-23.0, abs=1.5)
    assert analysis.loudness.range_lu == pytest.approx(0.0, abs=1.0)
    # The sample peak is -20 dBFS; AAC coding overshoots it by about a decibel.
    assert analysis.loudness.true_peak_dbtp == pytest.approx(-20.0, abs=1.5)


def test_loudness_targets_judge_the_measurement(make_clip: MakeClip) -> None:
    broadcast = {"min_size_bytes": 0, "loudness_min_lufs": -24.5, "loudness_max_lufs": -21.5}
    streaming = {"min_size_bytes": 0, "loudness_min_lufs": -16, "loudness_max_lufs": -13}

    _, on_target = check(make_clip("normal"), policy=ValidationPolicy.from_overrides(broadcast))
    _, too_quiet = check(make_clip("normal"), policy=ValidationPolicy.from_overrides(streaming))

    assert on_target.ok, on_target.reason
    assert failed(too_quiet) == {"loudness"}


def test_an_all_black_clip_fails_black(make_clip: MakeClip) -> None:
    analysis, report = check(make_clip("black", "color=black:s=640x360:r=24:d=2"))

    # Black is also frozen: one picture for two seconds.
    assert failed(report) == {"black", "freeze"}
    assert [i.start_s for i in analysis.black] == [0.0]
    assert analysis.black_s == pytest.approx(2.0, abs=0.05)


def test_a_still_image_clip_fails_freeze(make_clip: MakeClip) -> None:
    analysis, report = check(make_clip("still", "smptehdbars=s=640x360:r=24:d=2"))

    assert failed(report) == {"freeze"}
    assert analysis.frozen_s == pytest.approx(2.0, abs=0.05)
    assert analysis.black == ()


def test_a_silent_track_fails_silence_only_when_audio_was_asked_for(make_clip: MakeClip) -> None:
    silent = make_clip("silent", audio="anullsrc=r=48000:cl=stereo:d=2")

    analysis, asked = check(silent, want_audio=True)
    _, not_asked = check(silent, want_audio=False)

    assert failed(asked) == {"silence"}
    assert analysis.silent_s == pytest.approx(2.0, abs=0.05)
    assert analysis.loudness == Loudness(-70.0, 0.0, None)
    assert not_asked.ok, not_asked.reason


def test_missing_audio_fails_when_asked_for(make_clip: MakeClip) -> None:
    mute = make_clip("mute", audio=None)

    _, asked = check(mute, want_audio=True)
    _, not_asked = check(mute, want_audio=False)

    assert failed(asked) == {"silence"}
    assert asked.reason == "no audio track, audio was requested"
    assert not_asked.ok, not_asked.reason


def test_a_truncated_file_fails_playable(make_clip: MakeClip, tmp_path: Path) -> None:
    whole = make_clip("normal")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])

    analysis, report = check(truncated)

    assert "playable" in failed(report)
    assert analysis.decode_error is not None
    assert 0 < analysis.decoded_frames < 48
    # The index promises twice the bytes the file holds.
    assert "size" in failed(report)


def test_a_corrupt_file_fails_playable(make_clip: MakeClip, tmp_path: Path) -> None:
    data = bytearray(make_clip("normal").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4000] = bytes(range(256)) * 15 + bytes(160)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(data))

    analysis, report = check(corrupt)

    assert "playable" in failed(report)
    assert analysis.decode_error is not None


def test_a_file_that_is_not_media_fails_playable_alone(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"<html>502 Bad Gateway</html>" * 50)

    analysis, report = check(junk)

    assert [c.name for c in report.checks] == ["playable"]
    assert not report.ok
    assert analysis.open_error is not None
    assert analysis.faststart is None


def test_a_non_faststart_mp4_fails_faststart(make_clip: MakeClip) -> None:
    slow = make_clip("slow-start", faststart=False)

    analysis, report = check(slow)
    _, allowed = check(slow, policy=ValidationPolicy(min_size_bytes=0, require_faststart=False))

    assert analysis.faststart is False
    assert failed(report) == {"faststart"}
    assert allowed.ok, allowed.reason


def test_a_640x360_clip_fails_resolution_when_1280x720_was_asked(make_clip: MakeClip) -> None:
    _, report = check(make_clip("normal"), expected=Expectation(width=1280, height=720, seconds=2))

    assert failed(report) == {"resolution"}
    assert report.reason == "resolution 640x360, expected at least 1280x720"


def test_default_policy_floor_fails_a_tiny_clip(make_clip: MakeClip) -> None:
    black = make_clip("black", "color=black:s=640x360:r=24:d=2")

    _, report = check(black, policy=ValidationPolicy())

    assert "size" in failed(report)


def test_a_rendered_prompt_video_passes_all_but_the_size_floor(tmp_path: Path) -> None:
    # What the local provider delivers must pass the full gate: its smooth gradients
    # must not read as frozen. Only its size is below the default floor (2 s of
    # 640x360 compress to ~46 KB), so deployments of it lower min_size_bytes.
    out = tmp_path / "render.mp4"
    render_prompt_video(
        "a lighthouse on a cliff at dusk, waves below",
        seconds=2,
        width=640,
        height=360,
        fps=24,
        seed=7,
        out_path=out,
        work_dir=tmp_path / "cards",
        progress_path=tmp_path / "progress.txt",
        ffmpeg=find_ffmpeg(),
    )

    analysis, report = check(out, want_audio=False, policy=ValidationPolicy())

    assert failed(report) <= {"size"}, (report.reason, analysis.to_dict())
    assert analysis.frozen == ()


def test_analysis_is_one_ffmpeg_run(make_clip: MakeClip, caplog: pytest.LogCaptureFixture) -> None:
    path = make_clip("normal")
    caplog.set_level(logging.INFO, logger="vidpipe.media")

    check(path)

    runs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("running ffmpeg")]
    assert len(runs) == 1
    for detector in ("blackdetect", "freezedetect", "silencedetect", "ebur128=peak=true"):
        assert detector in runs[0]


# --- Parsers of the structured outputs (no media) --------------------------------------

METADATA = """\
frame:0    pts:0       pts_time:0
lavfi.black_start=0
frame:13   pts:6656    pts_time:0.52
lavfi.freezedetect.freeze_start=0
frame:25   pts:12800   pts_time:1
lavfi.black_end=1
lavfi.freezedetect.freeze_duration=1
lavfi.freezedetect.freeze_end=1
frame:60   pts:30720   pts_time:2.4
lavfi.black_start=2.4
"""


def test_parse_metadata_print_reads_blocks_in_order() -> None:
    frames = parse_metadata_print(METADATA)

    assert [f.pts_time for f in frames] == [0.0, 0.52, 1.0, 2.4]
    assert frames[2].values == {
        "lavfi.black_end": "1",
        "lavfi.freezedetect.freeze_duration": "1",
        "lavfi.freezedetect.freeze_end": "1",
    }
    assert parse_metadata_print("") == []


def test_intervals_pair_marks_and_close_at_the_end() -> None:
    frames = parse_metadata_print(METADATA)

    black = intervals_from_metadata(
        frames, start_key="lavfi.black_start", end_key="lavfi.black_end", end_of_media_s=3.0
    )
    frozen = intervals_from_metadata(
        frames,
        start_key="lavfi.freezedetect.freeze_start",
        end_key="lavfi.freezedetect.freeze_end",
        end_of_media_s=3.0,
    )
    short_dropped = intervals_from_metadata(
        frames,
        start_key="lavfi.black_start",
        end_key="lavfi.black_end",
        end_of_media_s=3.0,
        min_s=0.7,
    )

    assert black == (Interval(0.0, 1.0), Interval(2.4, 3.0))
    assert frozen == (Interval(0.0, 1.0),)
    assert short_dropped == (Interval(0.0, 1.0),)


def test_loudness_comes_from_the_last_stamped_frame() -> None:
    def frame(i: str, peak: str) -> MetadataFrame:
        values = {"lavfi.r128.I": i, "lavfi.r128.LRA": "3.5", "lavfi.r128.true_peak": peak}
        return MetadataFrame(0.0, values)

    frames = [frame("-30", "0.1"), frame("-23.04", "0.5"), MetadataFrame(0.3, {"x": "1"})]

    assert loudness_from_metadata(frames) == Loudness(-23.04, 3.5, -6.02)
    assert loudness_from_metadata([frame("-70", "0.000")]) == Loudness(-70.0, 3.5, None)
    assert loudness_from_metadata([]) is None


def test_progress_frames_is_the_last_count() -> None:
    text = "frame=10\nfps=0.0\nprogress=continue\nframe=48\nprogress=end\n"

    assert parse_progress_frames(text) == 48
    assert parse_progress_frames("") == 0


def _box(kind: bytes, body: bytes = b"") -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def test_top_level_boxes_reads_sizes_including_64_bit_and_to_end(tmp_path: Path) -> None:
    large = struct.pack(">I4sQ", 1, b"mdat", 16 + 4) + b"data"
    path = tmp_path / "boxes.mp4"
    path.write_bytes(_box(b"ftyp", b"isom") + _box(b"moov", b"x" * 10) + large + b"\0\0\0\0free")

    assert top_level_boxes(path) == (
        Box("ftyp", 0, 12),
        Box("moov", 12, 18),
        Box("mdat", 30, 20),
        Box("free", 50, 8),
    )


@pytest.mark.parametrize(
    ("content", "faststart"),
    [
        pytest.param(_box(b"ftyp") + _box(b"moov") + _box(b"mdat"), True, id="moov-first"),
        pytest.param(_box(b"ftyp") + _box(b"mdat") + _box(b"moov"), False, id="mdat-first"),
        pytest.param(_box(b"ftyp") + _box(b"mdat", b"x" * 100)[:60], False, id="no-moov"),
        pytest.param(_box(b"ftyp") + _box(b"moov") + _box(b"moof"), True, id="fragmented"),
        pytest.param(b"\x1aE\xdf\xa3" + b"\0" * 40, None, id="webm"),
        pytest.param(b"", None, id="empty"),
    ],
)
def test_is_faststart(tmp_path: Path, content: bytes, faststart: bool | None) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(content)

    assert is_faststart(path) is faststart
