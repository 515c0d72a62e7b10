"""The visible watermark: a line of text and/or an image over a video, in one ffmpeg pass.

The mark is drawn with Pillow into one RGBA PNG at its final pixel size (text never
passes through ffmpeg's filter syntax, and ffmpeg needs no font support), then
overlaid at a pixel position computed here. The video is re-encoded as H.264; audio
is copied untouched, so duration, resolution and sound stay as they were.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from vidpipe.errors import ConfigError
from vidpipe.media.ffmpeg import run_ffmpeg

__all__ = [
    "MARK_FILE",
    "Placement",
    "Position",
    "WatermarkSpec",
    "apply_watermark",
    "mark_position",
    "render_mark",
    "watermark_args",
]

Position = Literal["top-left", "top-right", "bottom-left", "bottom-right", "center"]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

MARK_FILE = "watermark.png"
_FONT_DIR = Path("/usr/share/fonts")
_FONT_NAMES = ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf")
# Margin from the frame's edges, as a fraction of its shorter side: clear of the
# rounded corners and overscan of players.
_MARGIN = 0.03
_MIN_MARK_PX = 8


@dataclass(frozen=True)
class WatermarkSpec:
    """What to draw and where. ``size`` is the mark's height as a fraction of the
    video's shorter side; ``opacity`` scales the mark's alpha."""

    text: str | None = None
    image: Path | None = None
    position: Position = "bottom-right"
    opacity: float = 0.6
    size: float = 0.06

    def check(self) -> None:
        """Refuse a spec that cannot be drawn (ConfigError ``watermark_config``):
        called at start-up so a bad image fails there, not on the first video."""
        if not self.text and self.image is None:
            raise ConfigError("a watermark needs a text or an image", code="watermark_config")
        if not 0 < self.opacity <= 1 or not 0 < self.size <= 0.5:
            raise ConfigError(
                "watermark opacity must be in (0, 1] and size in (0, 0.5]",
                code="watermark_config",
            )
        if self.image is not None:
            _load_image(self.image)


@dataclass(frozen=True)
class Placement:
    """The rendered mark: its PNG, pixel size and top-left corner in the frame."""

    path: Path
    x: int
    y: int
    width: int
    height: int


def mark_position(
    position: Position, frame: tuple[int, int], mark: tuple[int, int], margin: int
) -> tuple[int, int]:
    """Top-left corner of a ``mark`` (w, h) placed at ``position`` in ``frame`` (w, h)."""
    (fw, fh), (mw, mh) = frame, mark
    right, bottom = max(0, fw - mw - margin), max(0, fh - mh - margin)
    corners = {
        "top-left": (margin, margin),
        "top-right": (right, margin),
        "bottom-left": (margin, bottom),
        "bottom-right": (right, bottom),
        "center": ((fw - mw) // 2, (fh - mh) // 2),
    }
    return corners[position]


def render_mark(spec: WatermarkSpec, width: int, height: int, out_dir: Path) -> Placement:
    """Draw the mark for a ``width`` x ``height`` video into ``out_dir/watermark.png``."""
    short = min(width, height)
    mark_h = max(_MIN_MARK_PX, round(spec.size * short))
    margin = max(2, round(_MARGIN * short))
    parts: list[Image.Image] = []
    if spec.image is not None:
        logo = _load_image(spec.image)
        scale = mark_h / logo.height
        parts.append(
            logo.resize((max(1, round(logo.width * scale)), mark_h), Image.Resampling.LANCZOS)
        )
    if spec.text:
        parts.append(_draw_text(spec.text, mark_h))
    gap = mark_h // 3 if len(parts) > 1 else 0
    canvas = Image.new(
        "RGBA", (sum(p.width for p in parts) + gap * (len(parts) - 1), mark_h), (0, 0, 0, 0)
    )
    x = 0
    for part in parts:
        canvas.alpha_composite(part, (x, (mark_h - part.height) // 2))
        x += part.width + gap
    # A long text on a narrow (9:16) frame: shrink the whole mark to fit between margins.
    room = max(1, width - 2 * margin)
    if canvas.width > room:
        canvas = canvas.resize(
            (room, max(1, round(canvas.height * room / canvas.width))), Image.Resampling.LANCZOS
        )
    if spec.opacity < 1:
        alpha = canvas.getchannel("A").point(lambda a: round(a * spec.opacity))
        canvas.putalpha(alpha)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MARK_FILE
    canvas.save(path, "PNG")
    x0, y0 = mark_position(spec.position, (width, height), canvas.size, margin)
    return Placement(path, x0, y0, canvas.width, canvas.height)


def watermark_args(
    video: Path, placement: Placement, out: Path, *, audio: bool, crf: int = 18
) -> list[str]:
    """The ffmpeg arguments of the overlay pass (exact pixel position, no expressions)."""
    # The PNG is one frame: overlay repeats its last frame (eof_action=repeat) for the
    # whole video. passthrough keeps the source's timestamps, so variable frame rate
    # sources keep their timing and the duration does not move.
    graph = f"[0:v:0][1:v:0]overlay=x={placement.x}:y={placement.y}:format=auto[v]"
    args = [
        "-i", str(video), "-i", str(placement.path),
        "-filter_complex", graph, "-map", "[v]",
    ]  # fmt: skip
    if audio:
        args += ["-map", "0:a:0", "-c:a", "copy"]
    args += [
        "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-fps_mode", "passthrough", "-map_metadata", "0", "-movflags", "+faststart",
        "-f", "mp4", str(out),
    ]  # fmt: skip
    return args


def apply_watermark(
    video: Path,
    out: Path,
    spec: WatermarkSpec,
    *,
    width: int,
    height: int,
    audio: bool,
    ffmpeg: Path,
    work_dir: Path,
    timeout_s: float,
) -> Placement:
    """Write ``video`` with the mark drawn over it to ``out``; returns where it went.

    Raises ``MediaError`` when ffmpeg fails, ``ConfigError`` when the image is unreadable.
    """
    placement = render_mark(spec, width, height, work_dir)
    run_ffmpeg(
        watermark_args(video, placement, out, audio=audio), ffmpeg=ffmpeg, timeout_s=timeout_s
    )
    return placement


def _draw_text(text: str, height: int) -> Image.Image:
    """White text with a dark outline (readable on any background), ``height`` px tall."""
    font = _font(height)
    stroke = max(1, height // 14)
    left, top, right, bottom = (math.floor(v) for v in font.getbbox(text, stroke_width=stroke))
    image = Image.new("RGBA", (max(1, right - left + 1), max(1, bottom - top + 1)), (0, 0, 0, 0))
    ImageDraw.Draw(image).text(
        (-left, -top),
        text,
        font=font,
        fill=(255, 255, 255, 255),
        stroke_width=stroke,
        stroke_fill=(0, 0, 0, 255),
    )
    if image.height != height:
        scale = height / image.height
        image = image.resize((max(1, round(image.width * scale)), height), Image.Resampling.LANCZOS)
    return image


@functools.cache
def _font(size: int) -> Font:
    path = _font_path()
    if path is not None:
        return ImageFont.truetype(str(path), size)
    # Pillow >= 10.1 ships a scalable FreeType default font.
    return ImageFont.load_default(size=size)


@functools.cache
def _font_path() -> Path | None:
    if not _FONT_DIR.is_dir():
        return None
    for name in _FONT_NAMES:
        found = next(iter(sorted(_FONT_DIR.rglob(name))), None)
        if found is not None:
            return found
    return None


def _load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGBA")
    except (OSError, UnidentifiedImageError) as exc:
        raise ConfigError(
            f"watermark image {path} is unreadable: {exc}", code="watermark_config"
        ) from exc
