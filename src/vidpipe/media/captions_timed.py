"""Captions from word timings: SRT, WebVTT and ASS with a word-by-word highlight.

Pure functions: ``group_words`` cuts the words into short caption lines, and
``to_srt`` / ``to_vtt`` / ``to_ass`` write those lines as text. Styles are data
(``CaptionStyle``): font, size, colours as ``#RRGGBB[AA]``, outline, and the box the
text must stay in, given as margins of the frame (by default the 9:16 safe zone of a
short: 20 % from the bottom, at most 80 % of the width).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from vidpipe.errors import InvalidRequest
from vidpipe.media.alignment import WordTiming

__all__ = [
    "CaptionLine",
    "CaptionStyle",
    "ass_colour",
    "ass_time",
    "escape_ass",
    "escape_srt",
    "escape_vtt",
    "group_words",
    "srt_time",
    "to_ass",
    "to_srt",
    "to_vtt",
    "vtt_time",
]

AssMode = Literal["highlight", "karaoke"]

_SENTENCE_END = (".", "!", "?", "…")
_CLOSING = "\"')]\u201d\u2019"
_COLOUR = re.compile(r"#([0-9a-fA-F]{6})([0-9a-fA-F]{2})?")
_WORD_JOINER = "\u2060"


@dataclass(frozen=True)
class CaptionLine:
    """Words shown together, from ``start_s`` to ``end_s`` (at least the words' span)."""

    words: tuple[WordTiming, ...]
    start_s: float
    end_s: float

    @property
    def text(self) -> str:
        return " ".join(w.word for w in self.words)


# --- Grouping -------------------------------------------------------------------------


def group_words(
    words: Sequence[WordTiming],
    *,
    max_words: int = 4,
    max_chars: int = 24,
    max_pause_s: float = 0.6,
    hold_s: float = 0.4,
) -> tuple[CaptionLine, ...]:
    """Cut ``words`` into lines of at most ``max_words`` words and ``max_chars``
    characters (a longer single word gets a line of its own).

    A line also ends after a sentence (``.``, ``!``, ``?``) and before a pause longer
    than ``max_pause_s``. Each line stays up ``hold_s`` after its last word, but never
    past the start of the next line, so continuous speech shows no blank flashes.
    ``max_words=1`` gives one caption per word.
    """
    if max_words < 1 or max_chars < 1:
        raise InvalidRequest("max_words and max_chars must be at least 1", param="max_words")
    groups: list[list[WordTiming]] = []
    for word in words:
        current = groups[-1] if groups else None
        if current is None or _starts_new_line(
            current, word, max_words=max_words, max_chars=max_chars, max_pause_s=max_pause_s
        ):
            groups.append([word])
        else:
            current.append(word)
    lines: list[CaptionLine] = []
    for index, group in enumerate(groups):
        end_s = group[-1].end_s + hold_s
        if index + 1 < len(groups):
            end_s = min(end_s, groups[index + 1][0].start_s)
        lines.append(CaptionLine(tuple(group), group[0].start_s, max(end_s, group[-1].end_s)))
    return tuple(lines)


def _starts_new_line(
    current: Sequence[WordTiming],
    word: WordTiming,
    *,
    max_words: int,
    max_chars: int,
    max_pause_s: float,
) -> bool:
    last = current[-1]
    chars = sum(len(w.word) for w in current) + len(current) + len(word.word)
    return (
        len(current) >= max_words
        or chars > max_chars
        or last.word.rstrip(_CLOSING).endswith(_SENTENCE_END)
        or word.start_s - last.end_s > max_pause_s
    )


# --- Timestamps -----------------------------------------------------------------------


def _hms(total: int, per_second: int) -> tuple[int, int, int, int]:
    seconds, fraction = divmod(total, per_second)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return hours, minutes, seconds, fraction


def srt_time(seconds: float) -> str:
    """``00:00:01,234``: SRT's timestamp, to the nearest millisecond (negatives are 0)."""
    h, m, s, ms = _hms(round(max(seconds, 0.0) * 1000), 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def vtt_time(seconds: float) -> str:
    """``00:00:01.234``: WebVTT's timestamp, to the nearest millisecond."""
    h, m, s, ms = _hms(round(max(seconds, 0.0) * 1000), 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def ass_time(seconds: float) -> str:
    """``0:00:01.23``: ASS's timestamp, to the nearest centisecond."""
    h, m, s, cs = _hms(round(max(seconds, 0.0) * 100), 100)
    return f"{h:d}:{m:02d}:{s:02d}.{cs:02d}"


# --- Escaping -------------------------------------------------------------------------


def escape_srt(text: str) -> str:
    """Text safe in an SRT cue.

    SRT has no escape syntax, and players read ``<…>`` as HTML-like tags and
    ``{…}`` as ASS overrides (ffmpeg and libass hide both), so those four characters
    become look-alikes: single angle quotation marks (U+2039, U+203A) and
    parentheses. Newlines become spaces (a blank line would end the cue).
    """
    table = str.maketrans({"<": "\u2039", ">": "\u203a", "{": "(", "}": ")", "\n": " ", "\r": " "})
    return text.translate(table)


def escape_vtt(text: str) -> str:
    """Text safe in a WebVTT cue: ``&``, ``<`` and ``>`` as character references (so
    ``-->`` cannot appear either); newlines become spaces."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\r", " ")
        .replace("\n", " ")
    )


def escape_ass(text: str) -> str:
    """Text safe in an ASS Dialogue: braces as ``\\{ \\}`` (libass shows them), and a
    word joiner after each backslash so ``\\N``, ``\\n`` and ``\\h`` stay literal."""
    text = text.replace("\\", "\\" + _WORD_JOINER)
    text = text.replace("{", "\\{").replace("}", "\\}")
    return text.replace("\r", " ").replace("\n", " ")


# --- SRT and WebVTT -------------------------------------------------------------------


def to_srt(lines: Sequence[CaptionLine]) -> str:
    """SubRip text: numbered cues, one per line; empty input gives an empty string."""
    cues = [
        f"{n}\n{srt_time(line.start_s)} --> {srt_time(line.end_s)}\n{escape_srt(line.text)}\n"
        for n, line in enumerate(lines, start=1)
    ]
    return "\n".join(cues)


def to_vtt(lines: Sequence[CaptionLine], *, word_timestamps: bool = False) -> str:
    """WebVTT text. With ``word_timestamps``, each word after the first is preceded by
    its start time (``<00:00:01.234>``), which players use for karaoke-style display."""
    parts = ["WEBVTT\n"]
    for line in lines:
        if word_timestamps:
            words = [escape_vtt(line.words[0].word)]
            words += [f"<{vtt_time(w.start_s)}>{escape_vtt(w.word)}" for w in line.words[1:]]
            text = " ".join(words)
        else:
            text = escape_vtt(line.text)
        parts.append(f"\n{vtt_time(line.start_s)} --> {vtt_time(line.end_s)}\n{text}\n")
    return "".join(parts)


# --- ASS ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionStyle:
    """How ASS captions look. Sizes are in pixels of a ``width_px`` x ``height_px``
    frame (the ASS PlayRes, so they scale with the video); colours are ``#RRGGBB`` or
    ``#RRGGBBAA`` (AA: FF opaque)."""

    font: str = "DejaVu Sans"
    size_px: int = 80
    bold: bool = True
    text_colour: str = "#FFFFFF"
    highlight_colour: str = "#FFD400"
    outline_colour: str = "#000000"
    shadow_colour: str = "#00000080"
    outline_px: float = 6.0
    shadow_px: float = 0.0
    width_px: int = 1080
    height_px: int = 1920
    # The text box: bottom edge this far above the frame's bottom, centred, at most
    # this wide.
    bottom_margin_pct: float = 20.0
    max_width_pct: float = 80.0

    def __post_init__(self) -> None:
        if not self.font or any(ch in self.font for ch in ",\r\n"):
            raise InvalidRequest(f"invalid font name {self.font!r}", param="font")
        for name in ("text_colour", "highlight_colour", "outline_colour", "shadow_colour"):
            if not _COLOUR.fullmatch(getattr(self, name)):
                raise InvalidRequest(f"{name} must be #RRGGBB or #RRGGBBAA", param=name)
        if self.size_px <= 0 or self.width_px <= 0 or self.height_px <= 0:
            raise InvalidRequest("sizes must be positive", param="size_px")
        if self.outline_px < 0 or self.shadow_px < 0:
            raise InvalidRequest("outline and shadow cannot be negative", param="outline_px")
        if not 0 <= self.bottom_margin_pct < 100:
            raise InvalidRequest("bottom_margin_pct must be in [0, 100)", param="bottom_margin_pct")
        if not 0 < self.max_width_pct <= 100:
            raise InvalidRequest("max_width_pct must be in (0, 100]", param="max_width_pct")

    @property
    def margin_v_px(self) -> int:
        return round(self.height_px * self.bottom_margin_pct / 100)

    @property
    def margin_h_px(self) -> int:
        return round(self.width_px * (100 - self.max_width_pct) / 200)


def ass_colour(colour: str, *, override: bool = False) -> str:
    """``#RRGGBB[AA]`` as ASS ``&HAABBGGRR`` (style) or ``&HBBGGRR&`` (override tag)."""
    match = _COLOUR.fullmatch(colour)
    if not match:
        raise InvalidRequest(f"invalid colour {colour!r}", param="colour")
    rgb, alpha = match.group(1).upper(), (match.group(2) or "FF")
    bgr = rgb[4:6] + rgb[2:4] + rgb[0:2]
    if override:
        return f"&H{bgr}&"
    # ASS alpha counts transparency: 00 is opaque.
    return f"&H{255 - int(alpha, 16):02X}{bgr}"


def to_ass(
    lines: Sequence[CaptionLine],
    style: CaptionStyle | None = None,
    *,
    mode: AssMode = "highlight",
) -> str:
    """An ASS script showing ``lines`` with the word being spoken highlighted.

    ``highlight`` (default): one event per word, the whole line shown with only the
    current word in the highlight colour. ``karaoke``: one event per line with ``\\k``
    tags, so words turn to the highlight colour as they are reached and stay so.
    """
    style = style or CaptionStyle()
    if mode == "karaoke":
        # \k shows a word in SecondaryColour until it is reached, PrimaryColour after.
        primary, secondary = style.highlight_colour, style.text_colour
    else:
        primary, secondary = style.text_colour, style.highlight_colour
    fields = [
        "Caption",
        style.font,
        str(style.size_px),
        ass_colour(primary),
        ass_colour(secondary),
        ass_colour(style.outline_colour),
        ass_colour(style.shadow_colour),
        "-1" if style.bold else "0",
        "0",
        "0",
        "0",
        "100",
        "100",
        "0",
        "0",
        "1",
        f"{style.outline_px:g}",
        f"{style.shadow_px:g}",
        "2",  # bottom centre
        str(style.margin_h_px),
        str(style.margin_h_px),
        str(style.margin_v_px),
        "1",
    ]
    header = (
        "[Script Info]\n"
        "ScriptType: v4.00+\n"
        f"PlayResX: {style.width_px}\n"
        f"PlayResY: {style.height_px}\n"
        "WrapStyle: 0\n"
        "ScaledBorderAndShadow: yes\n"
        "YCbCr Matrix: None\n"
        "\n"
        "[V4+ Styles]\n"
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
        "BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, "
        "BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
        f"Style: {','.join(fields)}\n"
        "\n"
        "[Events]\n"
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
    )
    events: list[str] = []
    for line in lines:
        if mode == "karaoke":
            events.append(_dialogue(line.start_s, line.end_s, _karaoke_text(line)))
        else:
            events.extend(_highlight_events(line, style))
    return header + "".join(events)


def _dialogue(start_s: float, end_s: float, text: str) -> str:
    return f"Dialogue: 0,{ass_time(start_s)},{ass_time(end_s)},Caption,,0,0,0,,{text}\n"


def _highlight_events(line: CaptionLine, style: CaptionStyle) -> list[str]:
    on = "{\\c" + ass_colour(style.highlight_colour, override=True) + "}"
    off = "{\\c" + ass_colour(style.text_colour, override=True) + "}"
    words = [escape_ass(w.word) for w in line.words]
    events: list[str] = []
    for index in range(len(words)):
        # Word i is lit from its start (the line's, for the first) to the next word's
        # start (the line's end, for the last): exactly one event is ever on screen.
        start_s = line.start_s if index == 0 else line.words[index].start_s
        end_s = line.end_s if index + 1 == len(words) else line.words[index + 1].start_s
        if ass_time(end_s) == ass_time(start_s):
            continue
        text = " ".join(
            f"{on}{word}{off}" if position == index else word for position, word in enumerate(words)
        )
        events.append(_dialogue(start_s, end_s, text))
    return events


def _karaoke_text(line: CaptionLine) -> str:
    # Durations from rounded absolute times, so rounding errors do not add up.
    marks = [round(w.start_s * 100) for w in line.words[1:]] + [round(line.end_s * 100)]
    previous = round(line.start_s * 100)
    parts: list[str] = []
    for word, mark in zip(line.words, marks, strict=True):
        parts.append(f"{{\\k{max(mark - previous, 0)}}}{escape_ass(word.word)}")
        previous = mark
    return " ".join(parts)
