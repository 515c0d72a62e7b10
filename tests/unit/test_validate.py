"""validate_basic: verdicts over probe data, as tables of cases."""

from __future__ import annotations

import dataclasses

import pytest

from vidpipe.media.probe import AudioStreamInfo, MediaInfo, VideoStreamInfo
from vidpipe.media.validate import Expectation, validate_basic


def media(
    *,
    width: int = 1280,
    height: int = 720,
    duration_s: float = 5.0,
    size_bytes: int = 100_000,
    video: bool = True,
) -> MediaInfo:
    return MediaInfo(
        path="/tmp/x.mp4",
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        duration_s=duration_s,
        size_bytes=size_bytes,
        bit_rate=160_000,
        video=VideoStreamInfo("h264", width, height, 30.0, "yuv420p", 150) if video else None,
        audio=AudioStreamInfo("aac", 44_100, 2),
    )


EXPECT_720P_5S = Expectation(width=1280, height=720, seconds=5)


@pytest.mark.parametrize(
    ("info", "expected", "failed"),
    [
        pytest.param(media(), EXPECT_720P_5S, set(), id="exact"),
        pytest.param(media(duration_s=4.5), EXPECT_720P_5S, set(), id="duration-at-low-edge"),
        pytest.param(media(duration_s=5.5), EXPECT_720P_5S, set(), id="duration-at-high-edge"),
        pytest.param(media(duration_s=4.49), EXPECT_720P_5S, {"duration"}, id="too-short"),
        pytest.param(media(duration_s=5.51), EXPECT_720P_5S, {"duration"}, id="too-long"),
        pytest.param(
            media(duration_s=5.9),
            dataclasses.replace(EXPECT_720P_5S, duration_tolerance=0.2),
            set(),
            id="wider-tolerance",
        ),
        pytest.param(media(width=640, height=360), EXPECT_720P_5S, {"resolution"}, id="smaller"),
        pytest.param(
            media(width=720, height=1280), EXPECT_720P_5S, {"resolution"}, id="wrong-orientation"
        ),
        pytest.param(
            media(video=False), EXPECT_720P_5S, {"playable", "resolution"}, id="no-video-stream"
        ),
        pytest.param(
            media(duration_s=0.0), EXPECT_720P_5S, {"playable", "duration"}, id="zero-duration"
        ),
        pytest.param(media(size_bytes=0), EXPECT_720P_5S, {"playable"}, id="empty-file"),
        pytest.param(
            media(width=640, height=360, duration_s=2.0),
            EXPECT_720P_5S,
            {"resolution", "duration"},
            id="two-failures",
        ),
    ],
)
def test_validate_basic_verdicts(info: MediaInfo, expected: Expectation, failed: set[str]) -> None:
    report = validate_basic(info, expected)

    assert {c.name for c in report.checks} == {"playable", "resolution", "duration"}
    assert {c.name for c in report.checks if not c.ok} == failed
    assert report.ok is (not failed)


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        pytest.param(media(), "all checks passed", id="ok"),
        pytest.param(
            media(width=640, height=360),
            "resolution 640x360, expected 1280x720",
            id="resolution",
        ),
        pytest.param(
            media(duration_s=2.0),
            "duration 2.00 s, expected 5 s (±10%)",
            id="duration",
        ),
        pytest.param(
            media(width=720, height=1280, duration_s=9.0),
            "resolution 720x1280, expected 1280x720; duration 9.00 s, expected 5 s (±10%)",
            id="both",
        ),
        pytest.param(
            media(size_bytes=0),
            "not playable: empty file",
            id="empty",
        ),
    ],
)
def test_reason_names_failed_checks_and_values(info: MediaInfo, reason: str) -> None:
    assert validate_basic(info, EXPECT_720P_5S).reason == reason


def test_to_dict_is_plain_data() -> None:
    report = validate_basic(media(width=640, height=360), EXPECT_720P_5S)

    data = report.to_dict()

    assert data["ok"] is False
    assert data["reason"] == report.reason
    assert data["checks"][1] == {
        "name": "resolution",
        "ok": False,
        "detail": "resolution 640x360, expected 1280x720",
    }


def test_media_info_to_dict_nests_streams() -> None:
    data = media().to_dict()

    assert data["video"]["width"] == 1280
    assert data["audio"]["channels"] == 2
    assert media(video=False).to_dict()["video"] is None
