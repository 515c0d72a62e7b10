"""ffmpeg, probe, decode and validation on real files rendered here."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from vidpipe.errors import MediaError
from vidpipe.media.ffmpeg import find_ffmpeg, read_progress_out_time_s, run_ffmpeg
from vidpipe.media.probe import decode_check, probe
from vidpipe.media.render import render_prompt_video
from vidpipe.media.validate import Expectation, validate_basic

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s 640x360 prompt video, rendered once for the module."""
    work = tmp_path_factory.mktemp("render")
    out = work / "out.mp4"
    render_prompt_video(
        "a red fox jumps over the lazy dog under a starry sky",
        seconds=2,
        width=640,
        height=360,
        fps=30,
        seed=3,
        out_path=out,
        work_dir=work / "cards",
        progress_path=work / "progress.txt",
        ffmpeg=find_ffmpeg(),
    )
    return out


def test_render_has_requested_size_duration_and_encoding(rendered: Path) -> None:
    info = probe(rendered)

    assert info.video is not None
    assert (info.video.width, info.video.height) == (640, 360)
    assert info.video.codec == "h264"
    assert info.video.pix_fmt == "yuv420p"
    assert info.video.fps == pytest.approx(30.0)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert info.audio is None
    assert info.size_bytes == rendered.stat().st_size > 0
    assert "mp4" in info.format_name


def test_render_passes_basic_validation_and_fails_the_other_orientation(rendered: Path) -> None:
    info = probe(rendered)

    assert validate_basic(info, Expectation(width=640, height=360, seconds=2)).ok
    report = validate_basic(info, Expectation(width=360, height=640, seconds=2))
    assert not report.ok
    assert report.reason == "resolution 640x360, expected 360x640"


def test_decode_check_counts_every_frame(rendered: Path) -> None:
    assert decode_check(rendered) == pytest.approx(60, abs=1)


def test_render_writes_progress_up_to_the_end(rendered: Path) -> None:
    out_s = read_progress_out_time_s(rendered.parent / "progress.txt")

    assert out_s is not None
    assert 1.8 <= out_s <= 2.0
    assert "progress=end" in (rendered.parent / "progress.txt").read_text()


def test_render_is_faststart(rendered: Path) -> None:
    # +faststart moves the index (moov) before the media data (mdat).
    data = rendered.read_bytes()

    assert 0 <= data.find(b"moov") < data.find(b"mdat")


@pytest.mark.parametrize(
    ("width", "height", "prompt"),
    [
        pytest.param(360, 640, "a portrait video with a very long prompt " * 6, id="portrait-long"),
        pytest.param(720, 720, "", id="square-no-text"),
        pytest.param(
            640, 360, "quotes ' \" : \\ ; [brackets] %{pts} emoji \U0001f98a", id="odd-chars"
        ),
    ],
)
def test_render_any_size_and_text(tmp_path: Path, width: int, height: int, prompt: str) -> None:
    out = tmp_path / "out.mp4"

    render_prompt_video(
        prompt,
        seconds=1,
        width=width,
        height=height,
        fps=30,
        seed=None,
        out_path=out,
        work_dir=tmp_path,
        progress_path=tmp_path / "progress.txt",
        ffmpeg=find_ffmpeg(),
    )

    info = probe(out)
    assert validate_basic(info, Expectation(width=width, height=height, seconds=1)).ok


def test_probe_refuses_what_is_not_media(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)

    with pytest.raises(MediaError) as excinfo:
        probe(junk)
    assert excinfo.value.code == "unplayable"
    with pytest.raises(MediaError) as missing:
        probe(tmp_path / "missing.mp4")
    assert missing.value.code == "unplayable"


def test_decode_check_fails_on_a_truncated_file(rendered: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.mp4"
    # faststart puts the index first; cutting the tail loses most frames' data.
    truncated.write_bytes(rendered.read_bytes()[:2000])

    with pytest.raises(MediaError):
        decode_check(truncated)


def test_run_ffmpeg_reports_the_error_and_logs_the_command(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vidpipe.media")

    with pytest.raises(MediaError) as excinfo:
        run_ffmpeg(
            ["-i", str(tmp_path / "missing.mp4"), str(tmp_path / "out.mp4")],
            ffmpeg=find_ffmpeg(),
            timeout_s=30,
        )

    assert excinfo.value.code == "ffmpeg_failed"
    assert "missing.mp4" in excinfo.value.message
    assert "No such file" in excinfo.value.message
    assert any("-nostdin" in r.getMessage() for r in caplog.records)


def test_run_ffmpeg_times_out(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as excinfo:
        run_ffmpeg(
            ["-re", "-f", "lavfi", "-i", "color=d=30", "-f", "null", "-"],
            ffmpeg=find_ffmpeg(),
            timeout_s=0.5,
        )
    assert excinfo.value.code == "ffmpeg_timeout"


def test_find_ffmpeg_refuses_a_bad_override(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as excinfo:
        find_ffmpeg(str(tmp_path / "no-ffmpeg-here"))
    assert excinfo.value.code == "ffmpeg_missing"
    assert find_ffmpeg() == find_ffmpeg()
    assert find_ffmpeg(str(find_ffmpeg())) == find_ffmpeg()
