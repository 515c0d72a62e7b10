"""The thresholds ``validate_full`` judges a delivered video by, and per-request overrides.

Every threshold has a default that suits generated clips of a few seconds to a minute;
a request (or a tenant's settings) may override any of them by name with
``ValidationPolicy.from_overrides``, which refuses unknown names and wrong types.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ResolutionMode", "ValidationPolicy"]

ResolutionMode = Literal["at_least", "exact"]


@dataclass(frozen=True)
class ValidationPolicy:
    """Thresholds of the full validation. Constructing one checks every value's range.

    A fraction of 1.0 (or a size of 0) turns the corresponding check into a report.
    """

    # "at_least": both sides at least the requested ones (so orientation must match)
    # and the aspect ratio within aspect_tolerance; "exact": exactly the request.
    resolution_mode: ResolutionMode = "at_least"
    aspect_tolerance: float = 0.02
    min_fps: float = 12.0
    max_fps: float = 120.0
    # What every browser and phone plays without transcoding.
    video_codecs: tuple[str, ...] = ("h264",)
    pix_fmts: tuple[str, ...] = ("yuv420p",)
    audio_codecs: tuple[str, ...] = ("aac",)
    # MP4/MOV must have the index first, so playback starts before the download ends.
    require_faststart: bool = True
    # Relative (0.10 accepts 4.5-5.5 s for 5 s); None: the Expectation's tolerance.
    duration_tolerance: float | None = None
    # Anything smaller is not a real video of a few seconds (a placeholder, an error page).
    min_size_bytes: int = 50_000
    # The file must hold between 1/f and f times the bytes its index promises
    # (stream bit rates x duration / 8); far fewer means truncated.
    size_bitrate_factor: float = 1.5
    # Decoded frames against the frame count the header announces.
    min_decoded_fraction: float = 0.98
    # Generated clips often fade in or out through black (about a second of five).
    max_black_fraction: float = 0.25
    # A slow, near-still shot is legitimate; more than half the clip frozen is a still.
    max_frozen_fraction: float = 0.5
    # Only judged when audio was asked for; ambient tracks have pauses.
    max_silent_fraction: float = 0.8
    # Optional loudness targets (EBU R128 integrated, LUFS; true peak, dBTP). None:
    # loudness is measured and reported, never failed.
    loudness_min_lufs: float | None = None
    loudness_max_lufs: float | None = None
    max_true_peak_dbtp: float | None = None

    def __post_init__(self) -> None:
        for name in (
            "aspect_tolerance",
            "min_decoded_fraction",
            "max_black_fraction",
            "max_frozen_fraction",
            "max_silent_fraction",
        ):
            _require(0.0 <= getattr(self, name) <= 1.0, name, "must be between 0 and 1")
        if self.duration_tolerance is not None:
            _require(0.0 <= self.duration_tolerance <= 1.0, "duration_tolerance", "must be 0-1")
        _require(self.min_fps > 0, "min_fps", "must be positive")
        _require(self.max_fps >= self.min_fps, "max_fps", "must be at least min_fps")
        _require(self.min_size_bytes >= 0, "min_size_bytes", "must not be negative")
        _require(self.size_bitrate_factor >= 1.0, "size_bitrate_factor", "must be at least 1")
        _require(
            self.resolution_mode in typing.get_args(ResolutionMode),
            "resolution_mode",
            f"must be one of {', '.join(typing.get_args(ResolutionMode))}",
        )
        for name in ("video_codecs", "pix_fmts", "audio_codecs"):
            values = getattr(self, name)
            _require(
                bool(values) and all(isinstance(v, str) and v for v in values),
                name,
                "must be a non-empty list of names",
            )
        if self.loudness_min_lufs is not None and self.loudness_max_lufs is not None:
            _require(
                self.loudness_min_lufs <= self.loudness_max_lufs,
                "loudness_max_lufs",
                "must be at least loudness_min_lufs",
            )

    @classmethod
    def from_overrides(
        cls, overrides: Mapping[str, object], *, base: ValidationPolicy | None = None
    ) -> ValidationPolicy:
        """``base`` (default: the defaults) with the named thresholds replaced.

        Raises ``ValueError`` naming the key for an unknown name, a value of the wrong
        type (lists are accepted for the tuple fields, integers for float fields) or a
        value out of range.
        """
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in known:
                raise ValueError(
                    f"unknown validation policy key {key!r} (known: {', '.join(sorted(known))})"
                )
            changes[key] = _coerce(key, value, hints[key])
        return dataclasses.replace(base or cls(), **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (tuples become lists)."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(self).items()
        }


def _require(ok: bool, name: str, problem: str) -> None:
    if not ok:
        raise ValueError(f"validation policy {name} {problem}")


def _coerce(key: str, value: object, hint: Any) -> object:
    """``value`` as the type ``hint`` names, or ``ValueError`` naming ``key``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return _coerce(key, value, inner)
    if origin is Literal:
        if value in args:
            return value
        raise ValueError(f"validation policy {key} must be one of {', '.join(map(str, args))}")
    if origin is tuple:
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ValueError(f"validation policy {key} must be a list of strings")
    # bool is an int to Python; a threshold given as true/false is a mistake.
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if (
        hint is float
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    ):
        return float(value)
    raise ValueError(f"validation policy {key} must be a {getattr(hint, '__name__', hint)}")
