"""Derivatives of a real clip (stills, preview, sprite, HLS) and the geometry behind them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pytest
from PIL import Image

from vidpipe.media.analysis import Interval
from vidpipe.media.derivatives import (
    HlsPackage,
    Rendition,
    SpriteTile,
    fit_within,
    frame_time_s,
    hls_ladder,
    make_hls,
    make_poster,
    make_preview,
    make_sprite_sheet,
    make_thumbnail,
    parse_master_playlist,
    parse_media_playlist,
    sprite_tiles,
    sprite_vtt,
)
from vidpipe.media.ffmpeg import find_ffmpeg, run_ffmpeg
from vidpipe.media.probe import decode_check, probe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def portrait(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of a moving pattern at 720x1280 (portrait), 24 fps, with a tone."""
    out = tmp_path_factory.mktemp("source") / "portrait.mp4"
    args = [
        "-f", "lavfi", "-i", "testsrc2=s=720x1280:r=24:d=3",
        "-f", "lavfi", "-i", "sine=f=440:r=48000:d=3",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-shortest", "-movflags", "+faststart", str(out),
    ]  # fmt: skip
    run_ffmpeg(args, ffmpeg=find_ffmpeg(), timeout_s=60)
    return out


@pytest.fixture(scope="module")
def hls(portrait: Path, tmp_path_factory: pytest.TempPathFactory) -> HlsPackage:
    return make_hls(portrait, tmp_path_factory.mktemp("hls"), ffmpeg=find_ffmpeg(), segment_s=2.0)


def test_thumbnail_is_a_small_jpeg_of_the_right_shape(portrait: Path, tmp_path: Path) -> None:
    thumb = make_thumbnail(portrait, tmp_path, ffmpeg=find_ffmpeg())

    assert thumb.at_s == pytest.approx(1.0)
    assert (thumb.width, thumb.height) == (180, 320)
    with Image.open(thumb.path) as image:
        assert image.format == "JPEG"
        assert image.size == (180, 320)


def test_poster_is_full_size(portrait: Path, tmp_path: Path) -> None:
    poster = make_poster(portrait, tmp_path, ffmpeg=find_ffmpeg(), at_s=99)

    # A moment past the end is pulled back to the last frame rather than failing.
    assert poster.at_s < 3.0
    with Image.open(poster.path) as image:
        assert image.format == "JPEG"
        assert image.size == (720, 1280)


@pytest.mark.parametrize("fmt", ["webp", "gif"])
def test_preview_is_animated(portrait: Path, tmp_path: Path, fmt: Literal["webp", "gif"]) -> None:
    preview = make_preview(portrait, tmp_path, ffmpeg=find_ffmpeg(), fmt=fmt)

    assert preview.path.name == f"preview.{fmt}"
    assert (preview.width, preview.height) == (180, 320)
    assert (preview.start_s, preview.duration_s) == (0.0, 3.0)
    with Image.open(preview.path) as image:
        assert image.format == fmt.upper()
        assert image.size == (180, 320)
        assert getattr(image, "n_frames", 1) > 1


def test_preview_defaults_to_webp_with_this_ffmpeg(portrait: Path, tmp_path: Path) -> None:
    preview = make_preview(portrait, tmp_path, ffmpeg=find_ffmpeg(), seconds=1.0, fps=4)

    assert preview.format == "webp"
    assert preview.start_s == pytest.approx(0.5)
    with Image.open(preview.path) as image:
        assert getattr(image, "n_frames", 1) == 4


def test_sprite_sheet_geometry_matches_the_image_and_the_vtt(
    portrait: Path, tmp_path: Path
) -> None:
    sheet = make_sprite_sheet(
        portrait, tmp_path, ffmpeg=find_ffmpeg(), count=10, columns=4, min_interval_s=0.25
    )

    assert (sheet.columns, sheet.rows, len(sheet.tiles)) == (4, 3, 10)
    assert (sheet.tile_width, sheet.tile_height) == (90, 160)
    assert sheet.interval_s == pytest.approx(0.3)
    with Image.open(sheet.image_path) as image:
        assert image.format == "JPEG"
        assert image.size == (sheet.width, sheet.height) == (360, 480)
    cues = re.findall(
        r"(\S+) --> (\S+)\nsprite\.jpg#xywh=(\d+),(\d+),(\d+),(\d+)", sheet.vtt_path.read_text()
    )
    assert len(cues) == 10
    assert cues[5] == ("00:00:01.500", "00:00:01.800", "90", "160", "90", "160")
    assert sheet.vtt_path.read_text().startswith("WEBVTT\n")


def test_sprite_sheet_of_a_short_clip_has_fewer_tiles(portrait: Path, tmp_path: Path) -> None:
    sheet = make_sprite_sheet(portrait, tmp_path, ffmpeg=find_ffmpeg())

    # 3 s at no closer than 1 s: three tiles in one row.
    assert (sheet.columns, sheet.rows, len(sheet.tiles)) == (3, 1, 3)
    with Image.open(sheet.image_path) as image:
        assert image.size == (270, 160)


def test_hls_master_lists_every_rendition_with_bandwidth_and_resolution(hls: HlsPackage) -> None:
    variants = parse_master_playlist(hls.master_path.read_text())

    assert len(variants) >= 3
    assert [attrs["RESOLUTION"] for attrs, _ in variants] == [
        "240x426",
        "360x640",
        "540x960",
        "720x1280",
    ]
    for attrs, uri in variants:
        assert int(attrs["BANDWIDTH"]) > 0
        assert "avc1" in attrs["CODECS"]
        assert "mp4a" in attrs["CODECS"]
        assert (hls.master_path.parent / uri).is_file()
    assert [v.bandwidth for v in hls.variants] == sorted(v.bandwidth for v in hls.variants)


def test_hls_segments_exist_and_play_at_their_resolution(hls: HlsPackage) -> None:
    for variant in hls.variants:
        names = parse_media_playlist(variant.playlist_path.read_text())
        assert len(names) == 2  # 3 s in 2 s segments
        assert variant.segment_paths == tuple(variant.playlist_path.parent / n for n in names)
        for segment in variant.segment_paths:
            info = probe(segment)
            assert info.video is not None
            assert (info.video.width, info.video.height) == (variant.width, variant.height)
            assert info.video.codec == "h264"
            assert info.audio is not None
            assert info.audio.codec == "aac"
            assert decode_check(segment) > 0


def test_hls_segments_are_about_segment_s_long(hls: HlsPackage) -> None:
    durations = [
        float(d) for d in re.findall(r"#EXTINF:([\d.]+)", hls.variants[0].playlist_path.read_text())
    ]

    assert durations == pytest.approx([2.0, 1.0], abs=0.05)


# --- Pure geometry --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "max_side", "fitted"),
    [
        ((1920, 1080), 320, (320, 180)),
        ((1080, 1920), 320, (180, 320)),
        ((720, 1280), 160, (90, 160)),
        ((200, 100), 320, (200, 100)),  # never scaled up
        ((1000, 333), 320, (320, 106)),  # sides even
    ],
)
def test_fit_within(size: tuple[int, int], max_side: int, fitted: tuple[int, int]) -> None:
    assert fit_within(*size, max_side) == fitted


@pytest.mark.parametrize(
    ("black", "moment"),
    [
        ((), 3.0),
        ((Interval(2.0, 4.0),), 4.0),
        ((Interval(0.0, 1.0), Interval(2.5, 3.5), Interval(3.5, 5.0)), 5.0),
        ((Interval(2.0, 9.0),), 0.0),  # black to the end: the first picture instead
        ((Interval(0.0, 1.0), Interval(2.0, 9.0)), 1.0),
        ((Interval(0.0, 9.0),), 3.0),  # all black: nothing better than the third
    ],
)
def test_frame_time_avoids_black(black: tuple[Interval, ...], moment: float) -> None:
    assert frame_time_s(9.0, black) == moment


@pytest.mark.parametrize(
    ("width", "height", "ladder"),
    [
        (
            1920,
            1080,
            [("360p", 640, 360), ("540p", 960, 540), ("720p", 1280, 720), ("1080p", 1920, 1080)],
        ),
        (
            1080,
            1920,
            [("360p", 360, 640), ("540p", 540, 960), ("720p", 720, 1280), ("1080p", 1080, 1920)],
        ),
        (
            1280,
            720,
            [("240p", 426, 240), ("360p", 640, 360), ("540p", 960, 540), ("720p", 1280, 720)],
        ),
        (
            1024,
            1024,
            [("240p", 240, 240), ("360p", 360, 360), ("540p", 540, 540), ("720p", 720, 720)],
        ),
        (640, 360, [("240p", 426, 240), ("360p", 640, 360)]),
        (160, 90, [("90p", 160, 90)]),
    ],
)
def test_hls_ladder_follows_orientation_and_never_upscales(
    width: int, height: int, ladder: list[tuple[str, int, int]]
) -> None:
    rungs = hls_ladder(width, height)

    assert [(r.name, r.width, r.height) for r in rungs] == ladder
    assert all(isinstance(r, Rendition) and r.video_bps > 0 for r in rungs)
    assert [r.video_bps for r in rungs] == sorted(r.video_bps for r in rungs)


def test_sprite_tiles_and_vtt() -> None:
    tiles = sprite_tiles(10.0, count=4, columns=3, tile_width=160, tile_height=90)

    assert tiles == (
        SpriteTile(0.0, 2.5, 0, 0, 160, 90),
        SpriteTile(2.5, 5.0, 160, 0, 160, 90),
        SpriteTile(5.0, 7.5, 320, 0, 160, 90),
        SpriteTile(7.5, 10.0, 0, 90, 160, 90),
    )
    assert sprite_vtt(tiles[-1:], "s.jpg") == (
        "WEBVTT\n\n00:00:07.500 --> 00:00:10.000\ns.jpg#xywh=0,90,160,90\n"
    )
    assert sprite_vtt(
        sprite_tiles(3725.0, count=1, columns=1, tile_width=2, tile_height=2), "a.jpg"
    ).splitlines()[2] == ("00:00:00.000 --> 01:02:05.000")


def test_parse_master_playlist_keeps_quoted_commas() -> None:
    master = (
        "#EXTM3U\n#EXT-X-VERSION:6\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=1082880,RESOLUTION=360x640,CODECS="avc1.64001e,mp4a.40.2"\n'
        "360p/index.m3u8\n\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=2000000,RESOLUTION=540x960\n540p/index.m3u8\n"
    )

    assert parse_master_playlist(master) == [
        (
            {"BANDWIDTH": "1082880", "RESOLUTION": "360x640", "CODECS": "avc1.64001e,mp4a.40.2"},
            "360p/index.m3u8",
        ),
        ({"BANDWIDTH": "2000000", "RESOLUTION": "540x960"}, "540p/index.m3u8"),
    ]
