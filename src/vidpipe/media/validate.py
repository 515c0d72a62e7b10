"""Verdicts on a delivered output: pure functions of measurements and what was asked for.

``validate_basic`` judges the headers alone (``MediaInfo``); ``validate_full`` judges a
full ``Analysis`` (decode pass, detectors, loudness, box order) under a
``ValidationPolicy``. A failed check is a quality failure (its own retry budget), so
each check names what it saw and what it expected in words a user can read.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from vidpipe.media.analysis import Analysis
from vidpipe.media.policy import ValidationPolicy
from vidpipe.media.probe import MediaInfo

__all__ = ["Check", "Expectation", "ValidationReport", "validate_basic", "validate_full"]


@dataclass(frozen=True)
class Expectation:
    """What the output was requested to be."""

    width: int
    height: int
    seconds: float
    # Relative: 0.10 accepts 4.5-5.5 s for a 5 s request.
    duration_tolerance: float = 0.10


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class ValidationReport:
    ok: bool
    checks: tuple[Check, ...]

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    @property
    def reason(self) -> str:
        """One sentence naming every failed check and its values, or "all checks passed"."""
        if self.ok:
            return "all checks passed"
        return "; ".join(c.detail for c in self.failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reason": self.reason,
            "checks": [c.to_dict() for c in self.checks],
        }


def validate_basic(info: MediaInfo, expected: Expectation) -> ValidationReport:
    """Check that the file plays, has exactly the requested size and about the right length."""
    checks = (
        _check_playable(info),
        _check_resolution(info, expected),
        _check_duration(info, expected),
    )
    return ValidationReport(ok=all(c.ok for c in checks), checks=checks)


def _check_playable(info: MediaInfo) -> Check:
    problems = []
    if info.video is None:
        problems.append("no video stream")
    if info.duration_s <= 0:
        problems.append(f"duration {info.duration_s:g} s")
    if info.size_bytes <= 0:
        problems.append("empty file")
    if problems:
        return Check("playable", False, "not playable: " + ", ".join(problems))
    return Check("playable", True, f"{info.format_name}, {info.size_bytes} bytes")


def _check_resolution(info: MediaInfo, expected: Expectation) -> Check:
    want = f"{expected.width}x{expected.height}"
    if info.video is None:
        return Check("resolution", False, f"resolution unknown (no video stream), expected {want}")
    got = f"{info.video.width}x{info.video.height}"
    # Exact, orientation included: 720x1280 delivered for 1280x720 is a wrong video.
    if (info.video.width, info.video.height) != (expected.width, expected.height):
        return Check("resolution", False, f"resolution {got}, expected {want}")
    return Check("resolution", True, f"resolution {got}")


def _check_duration(info: MediaInfo, expected: Expectation) -> Check:
    low = expected.seconds * (1 - expected.duration_tolerance)
    high = expected.seconds * (1 + expected.duration_tolerance)
    got = f"duration {info.duration_s:.2f} s"
    if not low <= info.duration_s <= high:
        return Check(
            "duration",
            False,
            f"{got}, expected {expected.seconds:g} s (±{expected.duration_tolerance:.0%})",
        )
    return Check("duration", True, got)


def validate_full(
    analysis: Analysis, expected: Expectation, policy: ValidationPolicy = ValidationPolicy()
) -> ValidationReport:
    """Judge a full analysis against the request and the policy's thresholds.

    Checks, in order: playable, resolution, fps, codec, faststart, duration, size,
    black, freeze, silence, loudness. A check that does not apply (faststart of a
    non-MP4, silence when no audio was asked for) passes and says why. A file that
    could not be opened at all gets the one failed ``playable`` check: nothing else
    about it was measured.
    """
    if analysis.info is None:
        detail = f"not playable: {analysis.open_error or 'cannot open the file'}"
        return ValidationReport(ok=False, checks=(Check("playable", False, detail),))
    info = analysis.info
    if policy.duration_tolerance is not None:
        expected = dataclasses.replace(expected, duration_tolerance=policy.duration_tolerance)
    checks = (
        _check_full_playable(analysis, info, policy),
        _check_resolution_policy(info, expected, policy),
        _check_fps(info, policy),
        _check_codec(info, policy),
        _check_faststart(analysis, info, policy),
        _check_duration(info, expected),
        _check_size(info, policy),
        _check_share("black", "black", analysis.black_s, info, policy.max_black_fraction),
        _check_share("freeze", "frozen", analysis.frozen_s, info, policy.max_frozen_fraction),
        _check_silence(analysis, info, policy),
        _check_loudness(analysis, info, policy),
    )
    return ValidationReport(ok=all(c.ok for c in checks), checks=checks)


def _check_full_playable(analysis: Analysis, info: MediaInfo, policy: ValidationPolicy) -> Check:
    basic = _check_playable(info)
    if not basic.ok or info.video is None:
        return basic
    decoded = analysis.decoded_frames
    announced = info.video.frames or round(info.video.fps * info.duration_s)
    if analysis.decode_error is not None:
        return Check(
            "playable",
            False,
            f"not playable: decoding failed after {decoded} of {announced} frames",
        )
    if decoded == 0:
        return Check("playable", False, "not playable: no frame decoded")
    # At least one frame of slack: headers and decoders may disagree on the last one.
    allowed_missing = max(1, math.floor(announced * (1 - policy.min_decoded_fraction)))
    if announced - decoded > allowed_missing:
        return Check("playable", False, f"not playable: decoded {decoded} of {announced} frames")
    return Check("playable", True, f"decoded {decoded} of {announced} frames")


def _check_resolution_policy(
    info: MediaInfo, expected: Expectation, policy: ValidationPolicy
) -> Check:
    if policy.resolution_mode == "exact" or info.video is None:
        return _check_resolution(info, expected)
    want = f"{expected.width}x{expected.height}"
    width, height = info.video.width, info.video.height
    got = f"resolution {width}x{height}"
    # Both sides at least the request: a portrait video for a landscape request fails.
    if width < expected.width or height < expected.height:
        return Check("resolution", False, f"{got}, expected at least {want}")
    want_aspect = expected.width / expected.height
    aspect = width / height
    if abs(aspect / want_aspect - 1) > policy.aspect_tolerance:
        return Check(
            "resolution",
            False,
            f"{got} has aspect {aspect:.3f}, expected {want_aspect:.3f} ({want})",
        )
    return Check("resolution", True, got)


def _check_fps(info: MediaInfo, policy: ValidationPolicy) -> Check:
    if info.video is None:
        return Check("fps", False, "frame rate unknown (no video stream)")
    fps = info.video.fps
    if not policy.min_fps <= fps <= policy.max_fps:
        return Check(
            "fps",
            False,
            f"frame rate {fps:.3g} fps, expected {policy.min_fps:g}-{policy.max_fps:g}",
        )
    return Check("fps", True, f"frame rate {fps:.3g} fps")


def _check_codec(info: MediaInfo, policy: ValidationPolicy) -> Check:
    if info.video is None:
        return Check("codec", False, "codec unknown (no video stream)")
    problems = []
    if info.video.codec not in policy.video_codecs:
        problems.append(f"video codec {info.video.codec}, expected {'/'.join(policy.video_codecs)}")
    if info.video.pix_fmt not in policy.pix_fmts:
        problems.append(f"pixel format {info.video.pix_fmt}, expected {'/'.join(policy.pix_fmts)}")
    if info.audio is not None and info.audio.codec not in policy.audio_codecs:
        problems.append(f"audio codec {info.audio.codec}, expected {'/'.join(policy.audio_codecs)}")
    if problems:
        return Check("codec", False, "; ".join(problems))
    audio = f" + {info.audio.codec}" if info.audio is not None else ""
    return Check("codec", True, f"{info.video.codec} {info.video.pix_fmt}{audio}")


def _check_faststart(analysis: Analysis, info: MediaInfo, policy: ValidationPolicy) -> Check:
    if analysis.faststart is None:
        return Check("faststart", True, f"not an MP4 ({info.format_name}): no index to place")
    if analysis.faststart:
        return Check("faststart", True, "index (moov) before the media data")
    if not policy.require_faststart:
        return Check("faststart", True, "index (moov) after the media data (allowed)")
    return Check(
        "faststart",
        False,
        "not faststart: the index (moov) is after the media data, "
        "so playback cannot start before the whole file is downloaded",
    )


def _check_size(info: MediaInfo, policy: ValidationPolicy) -> Check:
    size = f"size {_kb(info.size_bytes)}"
    if info.size_bytes < policy.min_size_bytes:
        return Check("size", False, f"{size}, expected at least {_kb(policy.min_size_bytes)}")
    rates = [s.bit_rate for s in (info.video, info.audio) if s is not None and s.bit_rate]
    if not rates or info.duration_s <= 0:
        return Check("size", True, size)
    promised = sum(rates) * info.duration_s / 8
    factor = policy.size_bitrate_factor
    if not promised / factor <= info.size_bytes <= promised * factor:
        return Check(
            "size",
            False,
            f"{size}, but the stream bit rates promise about {_kb(promised)} (truncated?)",
        )
    return Check("size", True, f"{size}, as the stream bit rates promise")


def _check_share(name: str, what: str, seconds: float, info: MediaInfo, limit: float) -> Check:
    duration = info.duration_s
    share = seconds / duration if duration > 0 else 0.0
    measured = f"{what} for {seconds:.2f} s of {duration:.2f} s ({share:.0%})"
    if share > limit:
        return Check(name, False, f"{measured}, at most {limit:.0%} allowed")
    return Check(name, True, measured)


def _check_silence(analysis: Analysis, info: MediaInfo, policy: ValidationPolicy) -> Check:
    if not analysis.want_audio:
        return Check("silence", True, "audio not requested")
    if info.audio is None:
        return Check("silence", False, "no audio track, audio was requested")
    return _check_share("silence", "silent", analysis.silent_s, info, policy.max_silent_fraction)


def _check_loudness(analysis: Analysis, info: MediaInfo, policy: ValidationPolicy) -> Check:
    has_target = (
        policy.loudness_min_lufs is not None
        or policy.loudness_max_lufs is not None
        or policy.max_true_peak_dbtp is not None
    )
    if info.audio is None:
        return Check("loudness", True, "no audio track")
    loudness = analysis.loudness
    if loudness is None:
        return Check("loudness", not has_target, "loudness not measured")
    peak = loudness.true_peak_dbtp
    measured = (
        f"loudness {loudness.integrated_lufs:.1f} LUFS, range {loudness.range_lu:.1f} LU, "
        + (f"true peak {peak:.1f} dBTP" if peak is not None else "digital silence")
    )
    problems = []
    low, high = policy.loudness_min_lufs, policy.loudness_max_lufs
    if (low is not None and loudness.integrated_lufs < low) or (
        high is not None and loudness.integrated_lufs > high
    ):
        problems.append(f"expected {_range(low, high)} LUFS")
    if (
        policy.max_true_peak_dbtp is not None
        and peak is not None
        and (peak > policy.max_true_peak_dbtp)
    ):
        problems.append(f"true peak at most {policy.max_true_peak_dbtp:g} dBTP")
    if problems:
        return Check("loudness", False, f"{measured}; {', '.join(problems)}")
    return Check("loudness", True, measured)


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low:g} to {high:g}"
    if low is not None:
        return f"at least {low:g}"
    return f"at most {high:g}"


def _kb(size_bytes: float) -> str:
    return f"{size_bytes / 1000:.1f} KB"
