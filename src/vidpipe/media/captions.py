"""Prompt text as short on-screen cards: split into chunks, word-wrapped, drawn to PNGs.

Text is drawn with Pillow rather than ffmpeg's drawtext so a prompt never passes
through filtergraph escaping: arbitrary user text (quotes, colons, backslashes, emoji)
cannot break or inject into the ffmpeg command.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["Card", "chunk_words", "draw_card", "wrap_words"]

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

_FONT_DIR = Path("/usr/share/fonts")
_FONT_NAMES = ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf")
_ELLIPSIS = "\u2026"
_MIN_FONT_PX = 10


@dataclass(frozen=True)
class Card:
    """A drawn text card: its PNG and its pixel size."""

    path: Path
    width: int
    height: int


def chunk_words(
    prompt: str,
    *,
    seconds: float,
    words_per_chunk: int = 4,
    min_chunk_s: float = 1.0,
    max_words_per_chunk: int = 12,
) -> list[str]:
    """Split ``prompt`` into chunks shown one after another over ``seconds``.

    Chunks hold about ``words_per_chunk`` words, but never so many chunks that one is
    on screen less than ``min_chunk_s`` (a longer prompt gets fuller chunks instead),
    and never more than ``max_words_per_chunk`` words each: the rest is cut with an
    ellipsis. Control characters are dropped; an empty prompt gives no chunk.
    """
    cleaned = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in prompt)
    words = cleaned.split()
    if not words:
        return []
    slots = max(1, int(seconds // min_chunk_s))
    count = min(math.ceil(len(words) / words_per_chunk), slots)
    capacity = count * max_words_per_chunk
    if len(words) > capacity:
        words = words[:capacity]
        words[-1] += _ELLIPSIS
    # Spread words evenly so the last chunk is not a lonely word.
    base, extra = divmod(len(words), count)
    chunks: list[str] = []
    start = 0
    for index in range(count):
        size = base + (1 if index < extra else 0)
        chunks.append(" ".join(words[start : start + size]))
        start += size
    return chunks


def wrap_words(text: str, font: Font, max_width: float) -> list[str]:
    """Greedy word wrap of ``text`` into lines no wider than ``max_width`` pixels.

    A single word wider than ``max_width`` gets a line of its own (the caller shrinks
    the font when that happens).
    """
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if current and font.getlength(candidate) > max_width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def draw_card(text: str, *, frame_width: int, frame_height: int, path: Path) -> Card:
    """Draw ``text`` as white bold words on a translucent plate into an RGBA PNG.

    The font is sized from the frame and shrunk until the wrapped text fits within
    85% of the frame's width and 60% of its height. The PNG is only as large as the
    plate, so overlaying it costs little.
    """
    max_width = frame_width * 0.85
    max_height = frame_height * 0.60
    size = max(_MIN_FONT_PX, round(min(frame_width, frame_height) * 0.075))
    while True:
        font = _font(size)
        lines = wrap_words(text, font, max_width)
        line_height = _line_height(font, size)
        widest = max((font.getlength(line) for line in lines), default=0.0)
        fits = widest <= max_width and line_height * len(lines) <= max_height
        if fits or size <= _MIN_FONT_PX:
            break
        size = max(_MIN_FONT_PX, int(size * 0.85))
    return _paint(lines, font, size, line_height, widest, path)


def _paint(
    lines: Sequence[str], font: Font, size: int, line_height: int, widest: float, path: Path
) -> Card:
    pad = max(4, size // 2)
    stroke = max(1, size // 16)
    # Even sizes keep the overlay aligned with yuv420p's 2x2 chroma blocks.
    width = _even(math.ceil(widest) + 2 * pad)
    height = _even(line_height * len(lines) + 2 * pad)
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, width - 1, height - 1), radius=pad, fill=(0, 0, 0, 110))
    for index, line in enumerate(lines):
        x = (width - font.getlength(line)) / 2
        y = pad + index * line_height
        draw.text(
            (x, y),
            line,
            font=font,
            fill=(255, 255, 255, 255),
            stroke_width=stroke,
            stroke_fill=(0, 0, 0, 220),
        )
    image.save(path, format="PNG")
    return Card(path=path, width=width, height=height)


def _line_height(font: Font, size: int) -> int:
    if isinstance(font, ImageFont.FreeTypeFont):
        ascent, descent = font.getmetrics()
        return int(ascent + descent + size * 0.15)
    return int(size * 1.3)


def _even(value: int) -> int:
    return value + (value % 2)


@functools.cache
def _font(size: int) -> Font:
    font_path = _font_path()
    if font_path is not None:
        return ImageFont.truetype(str(font_path), size)
    # Pillow >= 10.1 ships a scalable FreeType default font.
    return ImageFont.load_default(size=size)


@functools.cache
def _font_path() -> Path | None:
    for name in _FONT_NAMES:
        found = next(iter(sorted(_FONT_DIR.rglob(name))), None) if _FONT_DIR.is_dir() else None
        if found is not None:
            return found
    return None
