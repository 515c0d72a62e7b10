"""validate_full and ValidationPolicy: verdicts over synthetic measurements, as tables."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from vidpipe.media.analysis import Analysis, Interval, Loudness
from vidpipe.media.policy import ValidationPolicy
from vidpipe.media.probe import AudioStreamInfo, MediaInfo, VideoStreamInfo
from vidpipe.media.validate import Expectation, validate_full

# Every check validate_full makes, in its order.
ALL_CHECKS = [
    "playable",
    "resolution",
    "fps",
    "codec",
    "faststart",
    "duration",
    "size",
    "black",
    "freeze",
    "silence",
    "loudness",
]
EXPECT = Expectation(width=1280, height=720, seconds=5)


def measured(
    *,
    width: int = 1280,
    height: int = 720,
    fps: float = 30.0,
    codec: str = "h264",
    pix_fmt: str = "yuv420p",
    audio: str | None = "aac",
    duration_s: float = 5.0,
    size_bytes: int = 2_000_000,
    # Promises 3.2 Mb/s x 5 s / 8 = 2.0 MB together with the audio's 128 kb/s.
    video_bps: int | None = 3_072_000,
    frames: int | None = 150,
    decoded: int = 150,
    decode_error: str | None = None,
    faststart: bool | None = True,
    want_audio: bool = True,
    black: tuple[Interval, ...] = (),
    frozen: tuple[Interval, ...] = (),
    silence: tuple[Interval, ...] = (),
    loudness: Loudness | None = Loudness(-16.0, 4.0, -1.5),
) -> Analysis:
    info = MediaInfo(
        path="/tmp/x.mp4",
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        duration_s=duration_s,
        size_bytes=size_bytes,
        bit_rate=None,
        video=VideoStreamInfo(codec, width, height, fps, pix_fmt, frames, video_bps),
        audio=AudioStreamInfo(audio, 48_000, 2, 128_000) if audio else None,
    )
    return Analysis(
        path=info.path,
        want_audio=want_audio,
        info=info,
        open_error=None,
        faststart=faststart,
        decoded_frames=decoded,
        decode_error=decode_error,
        black=black,
        frozen=frozen,
        silence=silence,
        loudness=loudness if audio else None,
        elapsed_s=0.1,
    )


def policy(**overrides: Any) -> ValidationPolicy:
    return ValidationPolicy.from_overrides(overrides)


def span(seconds: float, start: float = 0.0) -> tuple[Interval, ...]:
    return (Interval(start, start + seconds),)


@pytest.mark.parametrize(
    ("analysis", "pol", "failed"),
    [
        pytest.param(measured(), policy(), set(), id="good"),
        # playable
        pytest.param(measured(decode_error="exit 183"), policy(), {"playable"}, id="decode-error"),
        pytest.param(measured(decoded=100), policy(), {"playable"}, id="decoded-too-few"),
        pytest.param(measured(decoded=147), policy(), set(), id="decoded-within-2pct"),
        pytest.param(measured(decoded=146), policy(), {"playable"}, id="decoded-beyond-2pct"),
        # 2% of 24 frames is less than one: one frame of slack all the same.
        pytest.param(measured(frames=24, decoded=23), policy(), set(), id="one-frame-slack"),
        pytest.param(measured(frames=24, decoded=22), policy(), {"playable"}, id="two-missing"),
        pytest.param(measured(decoded=0), policy(), {"playable"}, id="nothing-decoded"),
        pytest.param(
            measured(frames=None, decoded=150), policy(), set(), id="frames-from-fps-x-duration"
        ),
        # resolution
        pytest.param(measured(width=640, height=360), policy(), {"resolution"}, id="smaller"),
        pytest.param(measured(width=1920, height=1080), policy(), set(), id="larger-same-aspect"),
        pytest.param(
            measured(width=1920, height=1080),
            policy(resolution_mode="exact"),
            {"resolution"},
            id="larger-but-exact-asked",
        ),
        pytest.param(measured(width=720, height=1280), policy(), {"resolution"}, id="portrait"),
        pytest.param(measured(width=1280, height=1280), policy(), {"resolution"}, id="square"),
        pytest.param(measured(width=1288, height=720), policy(), set(), id="aspect-within-2pct"),
        # fps
        pytest.param(measured(fps=8), policy(), {"fps"}, id="fps-too-low"),
        pytest.param(measured(fps=240), policy(), {"fps"}, id="fps-too-high"),
        pytest.param(measured(fps=12), policy(), set(), id="fps-at-low-edge"),
        pytest.param(measured(fps=8), policy(min_fps=5), set(), id="fps-lower-floor"),
        # codec
        pytest.param(measured(codec="hevc"), policy(), {"codec"}, id="hevc"),
        pytest.param(
            measured(codec="hevc"), policy(video_codecs=["h264", "hevc"]), set(), id="hevc-allowed"
        ),
        pytest.param(measured(pix_fmt="yuv444p"), policy(), {"codec"}, id="yuv444p"),
        pytest.param(measured(audio="opus"), policy(), {"codec"}, id="opus-audio"),
        # faststart
        pytest.param(measured(faststart=False), policy(), {"faststart"}, id="moov-last"),
        pytest.param(
            measured(faststart=False), policy(require_faststart=False), set(), id="moov-last-ok"
        ),
        pytest.param(measured(faststart=None), policy(), set(), id="not-mp4"),
        # duration
        pytest.param(measured(duration_s=4.4), policy(), {"duration"}, id="too-short"),
        pytest.param(
            measured(duration_s=4.4), policy(duration_tolerance=0.2), set(), id="wider-tolerance"
        ),
        # size
        pytest.param(
            measured(size_bytes=40_000, video_bps=None, audio=None, want_audio=False),
            policy(),
            {"size"},
            id="below-floor",
        ),
        pytest.param(measured(size_bytes=900_000), policy(), {"size"}, id="truncated"),
        pytest.param(measured(size_bytes=5_000_000), policy(), {"size"}, id="bloated"),
        pytest.param(
            measured(size_bytes=900_000), policy(size_bitrate_factor=3), set(), id="loose-factor"
        ),
        # black / freeze
        pytest.param(measured(black=span(2.0)), policy(), {"black"}, id="black-40pct"),
        pytest.param(measured(black=span(1.0)), policy(), set(), id="black-fade-20pct"),
        pytest.param(
            measured(black=span(5.0), frozen=span(5.0)),
            policy(),
            {"black", "freeze"},
            id="all-black",
        ),
        pytest.param(measured(frozen=span(3.0, 2.0)), policy(), {"freeze"}, id="frozen-60pct"),
        pytest.param(measured(frozen=span(2.5)), policy(), set(), id="frozen-at-50pct"),
        pytest.param(
            measured(frozen=span(3.0)), policy(max_frozen_fraction=1.0), set(), id="freeze-off"
        ),
        # silence
        pytest.param(measured(silence=span(5.0)), policy(), {"silence"}, id="silent-track"),
        pytest.param(measured(silence=span(5.0), want_audio=False), policy(), set(), id="no-ask"),
        pytest.param(measured(silence=span(3.0)), policy(), set(), id="pauses"),
        pytest.param(measured(audio=None), policy(), {"silence"}, id="audio-missing"),
        pytest.param(measured(audio=None, want_audio=False), policy(), set(), id="no-audio-ok"),
        # loudness
        pytest.param(
            measured(loudness=Loudness(-23.0, 2.0, -9.0)), policy(), set(), id="reported-only"
        ),
        pytest.param(
            measured(loudness=Loudness(-23.0, 2.0, -9.0)),
            policy(loudness_min_lufs=-18, loudness_max_lufs=-14),
            {"loudness"},
            id="too-quiet-for-target",
        ),
        pytest.param(
            measured(),
            policy(loudness_min_lufs=-18, loudness_max_lufs=-14),
            set(),
            id="on-target",
        ),
        pytest.param(
            measured(loudness=Loudness(-14.0, 2.0, 0.4)),
            policy(max_true_peak_dbtp=-1.0),
            {"loudness"},
            id="clipping",
        ),
        pytest.param(
            measured(loudness=None), policy(loudness_max_lufs=-14), {"loudness"}, id="unmeasured"
        ),
        pytest.param(
            measured(loudness=Loudness(-70.0, 0.0, None), silence=span(5.0)),
            policy(max_true_peak_dbtp=-1.0),
            {"silence"},
            id="digital-silence-has-no-peak",
        ),
        # several at once
        pytest.param(
            measured(width=640, height=360, duration_s=2.0, faststart=False, size_bytes=800_000),
            policy(),
            {"resolution", "duration", "faststart"},
            id="three-failures",
        ),
    ],
)
def test_validate_full_verdicts(
    analysis: Analysis, pol: ValidationPolicy, failed: set[str]
) -> None:
    report = validate_full(analysis, EXPECT, pol)

    assert [c.name for c in report.checks] == ALL_CHECKS
    assert {c.name for c in report.checks if not c.ok} == failed, report.reason
    assert report.ok is (not failed)


def test_a_file_that_did_not_open_has_only_the_playable_check() -> None:
    analysis = dataclasses.replace(measured(), info=None, open_error="moov atom not found")

    report = validate_full(analysis, EXPECT)

    assert not report.ok
    assert [c.name for c in report.checks] == ["playable"]
    assert report.reason == "not playable: moov atom not found"


@pytest.mark.parametrize(
    ("analysis", "pol", "reason"),
    [
        pytest.param(measured(), policy(), "all checks passed", id="ok"),
        pytest.param(
            measured(width=720, height=1280),
            policy(),
            "resolution 720x1280, expected at least 1280x720",
            id="orientation",
        ),
        pytest.param(
            measured(width=1280, height=1280),
            policy(),
            "resolution 1280x1280 has aspect 1.000, expected 1.778 (1280x720)",
            id="aspect",
        ),
        pytest.param(
            measured(decoded=21, decode_error="ffmpeg exited with code 183"),
            policy(),
            "not playable: decoding failed after 21 of 150 frames",
            id="decode",
        ),
        pytest.param(
            measured(black=span(2.0)),
            policy(),
            "black for 2.00 s of 5.00 s (40%), at most 25% allowed",
            id="black",
        ),
        pytest.param(
            measured(audio=None),
            policy(),
            "no audio track, audio was requested",
            id="audio-missing",
        ),
        pytest.param(
            measured(size_bytes=900_000),
            policy(),
            "size 900.0 KB, but the stream bit rates promise about 2000.0 KB (truncated?)",
            id="truncated",
        ),
        pytest.param(
            measured(loudness=Loudness(-23.04, 2.0, -9.0)),
            policy(loudness_min_lufs=-18, loudness_max_lufs=-14),
            "loudness -23.0 LUFS, range 2.0 LU, true peak -9.0 dBTP; expected -18 to -14 LUFS",
            id="loudness",
        ),
    ],
)
def test_reason_names_what_was_seen_and_expected(
    analysis: Analysis, pol: ValidationPolicy, reason: str
) -> None:
    assert validate_full(analysis, EXPECT, pol).reason == reason


def test_loudness_is_reported_even_without_a_target() -> None:
    report = validate_full(measured(), EXPECT)

    (loudness,) = (c for c in report.checks if c.name == "loudness")
    assert loudness.ok
    assert loudness.detail == "loudness -16.0 LUFS, range 4.0 LU, true peak -1.5 dBTP"


def test_policy_tolerance_defaults_to_the_expectations() -> None:
    loose = dataclasses.replace(EXPECT, duration_tolerance=0.2)

    assert validate_full(measured(duration_s=4.4), loose).ok
    assert not validate_full(measured(duration_s=4.4), loose, policy(duration_tolerance=0.1)).ok


def test_report_and_analysis_are_strict_json() -> None:
    analysis = measured(black=span(1.0), loudness=Loudness(-70.0, 0.0, None))

    data = {
        "report": validate_full(analysis, EXPECT).to_dict(),
        "analysis": analysis.to_dict(),
        "policy": ValidationPolicy().to_dict(),
    }

    decoded = json.loads(json.dumps(data, allow_nan=False))
    assert decoded["analysis"]["black"] == [{"start_s": 0.0, "end_s": 1.0}]
    assert decoded["analysis"]["loudness"]["true_peak_dbtp"] is None
    assert [c["name"] for c in decoded["report"]["checks"]] == ALL_CHECKS
    assert decoded["policy"]["video_codecs"] == ["h264"]


# --- ValidationPolicy -------------------------------------------------------------------


def test_from_overrides_replaces_named_thresholds_and_coerces() -> None:
    pol = ValidationPolicy.from_overrides(
        {"max_black_fraction": 0.5, "min_fps": 10, "pix_fmts": ["yuv420p", "yuvj420p"]}
    )

    assert pol.max_black_fraction == 0.5
    assert pol.min_fps == 10.0
    assert isinstance(pol.min_fps, float)
    assert pol.pix_fmts == ("yuv420p", "yuvj420p")
    assert pol.max_frozen_fraction == ValidationPolicy().max_frozen_fraction


def test_from_overrides_starts_from_a_base() -> None:
    base = ValidationPolicy(min_size_bytes=1000)

    pol = ValidationPolicy.from_overrides({"require_faststart": False}, base=base)

    assert (pol.min_size_bytes, pol.require_faststart) == (1000, False)


def test_to_dict_round_trips() -> None:
    pol = policy(loudness_min_lufs=-18, resolution_mode="exact")

    assert ValidationPolicy.from_overrides(pol.to_dict()) == pol
    assert ValidationPolicy.from_overrides({}) == ValidationPolicy()


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        pytest.param({"max_blak_fraction": 0.5}, "'max_blak_fraction'", id="unknown-key"),
        pytest.param({"max_black_fraction": "0.5"}, "max_black_fraction", id="string-for-float"),
        pytest.param({"max_black_fraction": True}, "max_black_fraction", id="bool-for-float"),
        pytest.param({"min_size_bytes": 1.5}, "min_size_bytes", id="float-for-int"),
        pytest.param({"min_size_bytes": None}, "min_size_bytes", id="none-for-int"),
        pytest.param({"require_faststart": 1}, "require_faststart", id="int-for-bool"),
        pytest.param({"video_codecs": "h264"}, "video_codecs", id="string-for-list"),
        pytest.param({"video_codecs": [264]}, "video_codecs", id="list-of-ints"),
        pytest.param({"video_codecs": []}, "video_codecs", id="empty-list"),
        pytest.param({"resolution_mode": "roughly"}, "resolution_mode", id="unknown-mode"),
        pytest.param({"max_black_fraction": 1.5}, "max_black_fraction", id="fraction-over-1"),
        pytest.param({"max_fps": 5}, "max_fps", id="max-below-min"),
        pytest.param({"min_fps": 0}, "min_fps", id="zero-fps"),
        pytest.param({"size_bitrate_factor": 0.5}, "size_bitrate_factor", id="factor-below-1"),
        pytest.param({"min_size_bytes": -1}, "min_size_bytes", id="negative-size"),
        pytest.param({"max_black_fraction": float("nan")}, "max_black_fraction", id="nan"),
        pytest.param(
            {"loudness_min_lufs": -10, "loudness_max_lufs": -20},
            "loudness_max_lufs",
            id="inverted-loudness-range",
        ),
    ],
)
def test_from_overrides_refuses_bad_values_naming_the_key(
    overrides: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        ValidationPolicy.from_overrides(overrides)


def test_optional_thresholds_accept_none() -> None:
    pol = policy(loudness_min_lufs=-18)

    assert ValidationPolicy.from_overrides({"loudness_min_lufs": None}, base=pol) == (
        ValidationPolicy()
    )
