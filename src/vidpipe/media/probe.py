"""What a media file contains, read with PyAV (libav* in-process, no ffprobe binary).

``probe`` reads container and stream headers only, so it is fast on any size of file;
``decode_check`` decodes every video frame, for when headers are not enough proof.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from vidpipe.errors import MediaError

__all__ = ["AudioStreamInfo", "MediaInfo", "VideoStreamInfo", "decode_check", "probe"]


@dataclass(frozen=True)
class VideoStreamInfo:
    codec: str
    width: int
    height: int
    fps: float
    pix_fmt: str | None
    # From the container header; None when the muxer did not record it.
    frames: int | None
    # Bits per second of this stream's data (for MP4, computed from the sample table,
    # so it describes what the index promises, not what the file holds); None if unknown.
    bit_rate: int | None = None


@dataclass(frozen=True)
class AudioStreamInfo:
    codec: str
    sample_rate: int
    channels: int
    bit_rate: int | None = None


@dataclass(frozen=True)
class MediaInfo:
    path: str
    format_name: str
    duration_s: float
    size_bytes: int
    bit_rate: int | None
    video: VideoStreamInfo | None
    audio: AudioStreamInfo | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (nested streams become dicts or None)."""
        return dataclasses.asdict(self)


def probe(path: Path) -> MediaInfo:
    """Read the container metadata of ``path`` (the first video and audio stream).

    Raises ``MediaError(code="unplayable")`` when the file cannot be opened as media.
    """
    try:
        size_bytes = path.stat().st_size
        with av.open(str(path)) as container:
            video = _video_info(container.streams.video[0]) if container.streams.video else None
            audio = _audio_info(container.streams.audio[0]) if container.streams.audio else None
            return MediaInfo(
                path=str(path),
                format_name=str(container.format.name),
                duration_s=_duration_s(container),
                size_bytes=size_bytes,
                bit_rate=int(container.bit_rate) or None,
                video=video,
                audio=audio,
            )
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"cannot open {path} as media: {exc}", code="unplayable") from exc


def decode_check(path: Path) -> int:
    """Decode every frame of the first video stream and return how many there were.

    Raises ``MediaError(code="undecodable")`` when decoding fails or finds no frame.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path} has no video stream", code="undecodable")
            stream = container.streams.video[0]
            # Frame-threaded decoding: same frames, a fraction of the wall time.
            stream.thread_type = "AUTO"
            count = sum(1 for _ in container.decode(stream))
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"decoding {path} failed: {exc}", code="undecodable") from exc
    if count == 0:
        raise MediaError(f"{path} has no decodable video frame", code="undecodable")
    return count


def _video_info(stream: Any) -> VideoStreamInfo:
    rate: Fraction | None = stream.average_rate or stream.guessed_rate
    return VideoStreamInfo(
        codec=str(stream.codec_context.name),
        width=int(stream.codec_context.width),
        height=int(stream.codec_context.height),
        fps=float(rate) if rate else 0.0,
        pix_fmt=stream.codec_context.pix_fmt,
        frames=int(stream.frames) or None,
        bit_rate=int(stream.bit_rate or 0) or None,
    )


def _audio_info(stream: Any) -> AudioStreamInfo:
    context = stream.codec_context
    return AudioStreamInfo(
        codec=str(context.name),
        sample_rate=int(context.sample_rate),
        channels=int(context.layout.nb_channels),
        bit_rate=int(stream.bit_rate or 0) or None,
    )


def _duration_s(container: Any) -> float:
    if container.duration is not None:
        return float(container.duration / av.time_base)
    # Some containers (raw streams) only know durations per stream.
    durations = [
        float(s.duration * s.time_base)
        for s in container.streams
        if s.duration is not None and s.time_base is not None
    ]
    return max(durations, default=0.0)
