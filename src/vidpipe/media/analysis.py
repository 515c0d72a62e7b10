"""Measurements of a media file, taken in one decode pass: the input to ``validate_full``.

``analyze`` probes the headers (PyAV), reads the MP4 box order, and then runs ffmpeg
once over the whole file: the video is decoded through ``blackdetect`` and
``freezedetect``, the audio through ``ebur128`` (with true peak) and
``silencedetect``, everything into the ``null`` muxer. The filters' findings are read
from the files ``metadata=mode=print`` writes (one block per frame that carries
metadata) and the frame count from ``-progress``: structured outputs, not log lines.
Failure is ffmpeg's exit code, with ``-xerror`` so a decoding error stops the pass
with a non-zero code instead of being concealed.

The result is data, not a verdict: a broken file still yields an ``Analysis`` (with
``open_error`` or ``decode_error`` set) for the verdicts to judge.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidpipe.errors import MediaError
from vidpipe.media.ffmpeg import run_ffmpeg
from vidpipe.media.mp4 import is_faststart
from vidpipe.media.probe import MediaInfo, probe

__all__ = [
    "Analysis",
    "Detection",
    "Interval",
    "Loudness",
    "MetadataFrame",
    "analysis_args",
    "analyze",
    "intervals_from_metadata",
    "loudness_from_metadata",
    "parse_metadata_print",
    "parse_progress_frames",
]

_VIDEO_METADATA = "video-metadata.txt"
_AUDIO_METADATA = "audio-metadata.txt"
_PROGRESS = "progress.txt"


@dataclass(frozen=True)
class Interval:
    """A span of media time, in seconds."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return max(0.0, self.end_s - self.start_s)

    def to_dict(self) -> dict[str, float]:
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3)}


@dataclass(frozen=True)
class Loudness:
    """EBU R128 loudness of the whole audio track (the ``ebur128`` filter's final values)."""

    integrated_lufs: float
    range_lu: float
    # None for digital silence (a peak of exactly zero has no decibel value).
    true_peak_dbtp: float | None


@dataclass(frozen=True)
class Detection:
    """What the detectors count as black, frozen and silent (measurement, not verdict)."""

    # blackdetect: a pixel is black below this share of the luma range, a picture is
    # black when this share of its pixels are; spans shorter than black_min_s are
    # ignored (a cut through one dark frame is not a black video).
    black_pixel_threshold: float = 0.10
    black_picture_ratio: float = 0.98
    black_min_s: float = 0.1
    # freezedetect: frames differing by less than this (dB of the mean absolute
    # difference) are "the same"; a still shorter than freeze_min_s is a held frame,
    # not frozen video.
    freeze_noise_db: float = -60.0
    freeze_min_s: float = 1.0
    # silencedetect: below this level for at least silence_min_s is silence.
    silence_noise_db: float = -60.0
    silence_min_s: float = 0.5
    # Skip H.264/HEVC deblocking while decoding: every block is still parsed and
    # reconstructed (so corrupt data still fails), the pictures are only not smoothed
    # at block edges, which neither detector can tell; it saves ~15% of decode time.
    skip_loop_filter: bool = True


@dataclass(frozen=True)
class Analysis:
    """Everything measured about one file; ``validate_full`` turns it into verdicts."""

    path: str
    # Whether the request asked for sound (so silence is a fault, not a choice).
    want_audio: bool
    # None when the file could not be opened as media; open_error then says why.
    info: MediaInfo | None
    open_error: str | None
    # MP4/MOV only: index before media data. None for other containers.
    faststart: bool | None
    # Video frames that came out of the full decode pass.
    decoded_frames: int
    # None when the decode pass ran to the end; else why it stopped.
    decode_error: str | None
    black: tuple[Interval, ...]
    frozen: tuple[Interval, ...]
    silence: tuple[Interval, ...]
    # None when there is no audio stream (or the pass did not get far enough).
    loudness: Loudness | None
    # Wall time the analysis took.
    elapsed_s: float

    @property
    def duration_s(self) -> float:
        return self.info.duration_s if self.info is not None else 0.0

    @property
    def black_s(self) -> float:
        return sum(i.duration_s for i in self.black)

    @property
    def frozen_s(self) -> float:
        return sum(i.duration_s for i in self.frozen)

    @property
    def silent_s(self) -> float:
        return sum(i.duration_s for i in self.silence)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (no infinities: silence has ``true_peak_dbtp`` None)."""
        return {
            "path": self.path,
            "want_audio": self.want_audio,
            "info": self.info.to_dict() if self.info is not None else None,
            "open_error": self.open_error,
            "faststart": self.faststart,
            "decoded_frames": self.decoded_frames,
            "decode_error": self.decode_error,
            "black": [i.to_dict() for i in self.black],
            "frozen": [i.to_dict() for i in self.frozen],
            "silence": [i.to_dict() for i in self.silence],
            "loudness": dataclasses.asdict(self.loudness) if self.loudness else None,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass(frozen=True)
class MetadataFrame:
    """One block of a ``metadata=mode=print`` file: a frame's time and its keys."""

    pts_time: float
    values: dict[str, str]


def analyze(
    path: Path,
    *,
    want_audio: bool,
    ffmpeg: Path,
    detection: Detection = Detection(),
    timeout_s: float = 600.0,
) -> Analysis:
    """Measure ``path``: headers, box order, and one full decode pass with the detectors.

    Never raises for a bad file (that is what the result describes); raises
    ``MediaError`` only when ffmpeg itself cannot run (``ffmpeg_missing``) or the pass
    times out (``ffmpeg_timeout``).
    """
    started = time.perf_counter()
    try:
        faststart = is_faststart(path)
    except OSError:
        faststart = None
    try:
        info = probe(path)
    except MediaError as exc:
        return Analysis(
            path=str(path),
            want_audio=want_audio,
            info=None,
            open_error=exc.message,
            faststart=faststart,
            decoded_frames=0,
            decode_error=None,
            black=(),
            frozen=(),
            silence=(),
            loudness=None,
            elapsed_s=time.perf_counter() - started,
        )
    decode_error: str | None = None
    video_frames: list[MetadataFrame] = []
    audio_frames: list[MetadataFrame] = []
    decoded = 0
    # With neither stream there is nothing to decode; the verdicts fail the file.
    if info.video is not None or info.audio is not None:
        video_frames, audio_frames, decoded, decode_error = _decode_pass(
            path, info, ffmpeg=ffmpeg, detection=detection, timeout_s=timeout_s
        )
    end_s = info.duration_s
    return Analysis(
        path=str(path),
        want_audio=want_audio,
        info=info,
        open_error=None,
        faststart=faststart,
        decoded_frames=decoded,
        decode_error=decode_error,
        black=intervals_from_metadata(
            video_frames,
            start_key="lavfi.black_start",
            end_key="lavfi.black_end",
            end_of_media_s=end_s,
            min_s=detection.black_min_s,
        ),
        frozen=intervals_from_metadata(
            video_frames,
            start_key="lavfi.freezedetect.freeze_start",
            end_key="lavfi.freezedetect.freeze_end",
            end_of_media_s=end_s,
        ),
        silence=intervals_from_metadata(
            audio_frames,
            start_key="lavfi.silence_start",
            end_key="lavfi.silence_end",
            end_of_media_s=end_s,
        ),
        loudness=loudness_from_metadata(audio_frames) if info.audio else None,
        elapsed_s=time.perf_counter() - started,
    )


def _decode_pass(
    path: Path, info: MediaInfo, *, ffmpeg: Path, detection: Detection, timeout_s: float
) -> tuple[list[MetadataFrame], list[MetadataFrame], int, str | None]:
    """Run the one ffmpeg pass; return video and audio marks, frames decoded, and error."""
    decode_error: str | None = None
    with tempfile.TemporaryDirectory(prefix="vidpipe-analyze-") as tmp:
        work = Path(tmp)
        try:
            run_ffmpeg(
                analysis_args(
                    path,
                    video=info.video is not None,
                    audio=info.audio is not None,
                    detection=detection,
                ),
                ffmpeg=ffmpeg,
                timeout_s=timeout_s,
                # The filters write their files here under plain relative names, so no
                # path needs escaping inside the filtergraph.
                cwd=work,
            )
        except MediaError as exc:
            if exc.code != "ffmpeg_failed":
                raise
            decode_error = exc.message
        video_frames = parse_metadata_print(_read(work / _VIDEO_METADATA))
        audio_frames = parse_metadata_print(_read(work / _AUDIO_METADATA))
        decoded = parse_progress_frames(_read(work / _PROGRESS)) if info.video else 0
    return video_frames, audio_frames, decoded, decode_error


def analysis_args(path: Path, *, video: bool, audio: bool, detection: Detection) -> list[str]:
    """The ffmpeg arguments of the one analysis pass (run with the work directory as cwd).

    At least one of ``video`` and ``audio`` must be true.
    """
    chains: list[str] = []
    maps: list[str] = []
    if video:
        chains.append(
            "[0:v:0]"
            f"blackdetect=d=0:pix_th={detection.black_pixel_threshold:g}"
            f":pic_th={detection.black_picture_ratio:g},"
            f"freezedetect=n={detection.freeze_noise_db:g}dB:d={detection.freeze_min_s:g},"
            f"metadata=mode=print:file={_VIDEO_METADATA}[v]"
        )
        maps += ["-map", "[v]"]
    if audio:
        # ebur128 first: with metadata=1 it re-cuts the audio into 100 ms frames, and
        # silencedetect's marks must land on the frames that get printed.
        chains.append(
            "[0:a:0]ebur128=peak=true:metadata=1,"
            f"silencedetect=n={detection.silence_noise_db:g}dB:d={detection.silence_min_s:g},"
            f"ametadata=mode=print:file={_AUDIO_METADATA}[a]"
        )
        maps += ["-map", "[a]"]
    args = ["-xerror"]
    if detection.skip_loop_filter:
        args += ["-skip_loop_filter", "all"]
    args += ["-i", str(path.resolve()), "-filter_complex", ";".join(chains), *maps]
    return [
        *args,
        # One output frame per decoded frame: no duplicates or drops to fake a rate.
        "-fps_mode", "passthrough",
        "-progress", _PROGRESS,
        "-f", "null", "-",
    ]  # fmt: skip


def parse_metadata_print(text: str) -> list[MetadataFrame]:
    """Parse a ``metadata``/``ametadata`` ``mode=print`` file into frames in order.

    A block is a ``frame:N pts:P pts_time:T`` line followed by ``key=value`` lines.
    """
    frames: list[MetadataFrame] = []
    for line in text.splitlines():
        if line.startswith("frame:"):
            pts_time = 0.0
            for field in line.split():
                name, _, value = field.partition(":")
                if name == "pts_time":
                    pts_time = _float(value, default=0.0)
            frames.append(MetadataFrame(pts_time, {}))
        elif frames and "=" in line:
            key, _, value = line.partition("=")
            frames[-1].values[key.strip()] = value.strip()
    return frames


def intervals_from_metadata(
    frames: Iterable[MetadataFrame],
    *,
    start_key: str,
    end_key: str,
    end_of_media_s: float,
    min_s: float = 0.0,
) -> tuple[Interval, ...]:
    """Pair each ``start_key`` mark with the next ``end_key`` mark into intervals.

    The values of the marks are the times (the detectors record when a span began,
    on the frame where they became sure of it). A span still open at the end of the
    stream is closed at ``end_of_media_s``; spans shorter than ``min_s`` are dropped.
    """
    spans: list[Interval] = []
    open_start: float | None = None
    for frame in frames:
        if start_key in frame.values and open_start is None:
            open_start = _float(frame.values[start_key], default=frame.pts_time)
        if end_key in frame.values and open_start is not None:
            spans.append(Interval(open_start, _float(frame.values[end_key], frame.pts_time)))
            open_start = None
    if open_start is not None:
        spans.append(Interval(open_start, max(open_start, end_of_media_s)))
    clamped = (
        Interval(max(0.0, s.start_s), min(s.end_s, end_of_media_s) if end_of_media_s else s.end_s)
        for s in spans
    )
    return tuple(s for s in clamped if s.duration_s > 0 and s.duration_s >= min_s)


def loudness_from_metadata(frames: Sequence[MetadataFrame]) -> Loudness | None:
    """The final integrated loudness, loudness range and true peak ``ebur128`` reported.

    ``ebur128`` with ``metadata=1`` stamps every 100 ms frame with the values so far
    (integrated over everything before it, peak as the running maximum), so the last
    stamped frame carries the whole-track result. None when no frame was stamped.
    """
    for frame in reversed(frames):
        values = frame.values
        if "lavfi.r128.I" not in values:
            continue
        peak = _float(values.get("lavfi.r128.true_peak", ""), default=0.0)
        return Loudness(
            integrated_lufs=_float(values["lavfi.r128.I"], default=-70.0),
            range_lu=_float(values.get("lavfi.r128.LRA", ""), default=0.0),
            true_peak_dbtp=round(20 * math.log10(peak), 2) if peak > 0 else None,
        )
    return None


def parse_progress_frames(text: str) -> int:
    """The last ``frame=`` count in an ffmpeg ``-progress`` file (0 when there is none)."""
    count = 0
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "frame":
            count = int(_float(value, default=count))
    return count


def _float(text: str, default: float) -> float:
    try:
        value = float(text)
    except ValueError:
        return default
    return value if math.isfinite(value) else default


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
