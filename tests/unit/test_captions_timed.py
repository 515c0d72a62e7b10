"""Captions from word timings: timestamps, line grouping, escaping, SRT/VTT/ASS text."""

from __future__ import annotations

import itertools

import pytest

from vidpipe.errors import InvalidRequest
from vidpipe.media.alignment import WordTiming
from vidpipe.media.captions_timed import (
    CaptionLine,
    CaptionStyle,
    ass_colour,
    ass_time,
    escape_ass,
    escape_srt,
    escape_vtt,
    group_words,
    srt_time,
    to_ass,
    to_srt,
    to_vtt,
    vtt_time,
)


def timed(*spec: tuple[str, float, float]) -> list[WordTiming]:
    return [WordTiming(word, start, end) for word, start, end in spec]


# A short narration: two sentences, a long pause inside the second.
WORDS = timed(
    ("Cats", 0.00, 0.30),
    ("can", 0.35, 0.50),
    ("jump", 0.55, 0.80),
    ("very", 0.85, 1.10),
    ("high.", 1.15, 1.60),
    ("Dogs", 2.00, 2.30),
    ("cannot!", 3.50, 4.00),
)


@pytest.mark.parametrize(
    ("seconds", "srt", "vtt", "ass"),
    [
        (0.0, "00:00:00,000", "00:00:00.000", "0:00:00.00"),
        (1.234, "00:00:01,234", "00:00:01.234", "0:00:01.23"),
        (1.2345, "00:00:01,234", "00:00:01.234", "0:00:01.23"),  # float 1.2345 is below .5
        (1.2356, "00:00:01,236", "00:00:01.236", "0:00:01.24"),
        (59.9999, "00:01:00,000", "00:01:00.000", "0:01:00.00"),  # rounding carries
        (61.5, "00:01:01,500", "00:01:01.500", "0:01:01.50"),
        (3723.45, "01:02:03,450", "01:02:03.450", "1:02:03.45"),
        (-0.2, "00:00:00,000", "00:00:00.000", "0:00:00.00"),  # never negative
    ],
)
def test_timestamps(seconds: float, srt: str, vtt: str, ass: str) -> None:
    assert srt_time(seconds) == srt
    assert vtt_time(seconds) == vtt
    assert ass_time(seconds) == ass


@pytest.mark.parametrize(
    ("max_words", "max_chars", "expected"),
    [
        # Sentence end and the 1.2 s pause before "cannot!" always cut.
        (4, 24, ["Cats can jump very", "high.", "Dogs", "cannot!"]),
        (3, 24, ["Cats can jump", "very high.", "Dogs", "cannot!"]),
        (10, 24, ["Cats can jump very high.", "Dogs", "cannot!"]),
        (10, 12, ["Cats can", "jump very", "high.", "Dogs", "cannot!"]),
        (1, 24, ["Cats", "can", "jump", "very", "high.", "Dogs", "cannot!"]),
        (10, 3, ["Cats", "can", "jump", "very", "high.", "Dogs", "cannot!"]),  # long words alone
    ],
)
def test_grouping(max_words: int, max_chars: int, expected: list[str]) -> None:
    lines = group_words(WORDS, max_words=max_words, max_chars=max_chars)

    assert [line.text for line in lines] == expected
    assert [w for line in lines for w in line.words] == WORDS


def test_lines_hold_briefly_but_never_overlap() -> None:
    lines = group_words(WORDS, max_words=3, hold_s=0.4)

    ends = [(line.text, line.start_s, line.end_s) for line in lines]
    assert ends == [
        ("Cats can jump", 0.0, pytest.approx(0.85)),  # held until "very" starts
        ("very high.", 0.85, pytest.approx(2.0)),  # held 0.4 s, capped by "Dogs"
        ("Dogs", 2.0, pytest.approx(2.7)),  # held 0.4 s after its end
        ("cannot!", 3.5, pytest.approx(4.4)),
    ]
    for before, after in itertools.pairwise(lines):
        assert before.end_s <= after.start_s


def test_grouping_rejects_nonsense_limits() -> None:
    with pytest.raises(InvalidRequest):
        group_words(WORDS, max_words=0)


@pytest.mark.parametrize(
    ("text", "srt", "vtt", "ass"),
    [
        ("plain", "plain", "plain", "plain"),
        (
            "<b>bold</b>",
            "\u2039b\u203abold\u2039/b\u203a",
            "&lt;b&gt;bold&lt;/b&gt;",
            "<b>bold</b>",
        ),
        ("a-->b", "a--\u203ab", "a--&gt;b", "a-->b"),
        ("Tom & Jerry", "Tom & Jerry", "Tom &amp; Jerry", "Tom & Jerry"),
        ("{\\an8}up", "(\\an8)up", "{\\an8}up", "\\{\\\u2060an8\\}up"),
        ("line\\Nbreak", "line\\Nbreak", "line\\Nbreak", "line\\\u2060Nbreak"),
        ("two\nlines", "two lines", "two lines", "two lines"),
    ],
)
def test_escaping(text: str, srt: str, vtt: str, ass: str) -> None:
    assert escape_srt(text) == srt
    assert escape_vtt(text) == vtt
    assert escape_ass(text) == ass


def test_srt() -> None:
    lines = group_words(timed(("Hello", 0.0, 0.4), ("<world>.", 0.5, 1.0), ("Bye", 1.5, 2.0)))

    assert to_srt(lines) == (
        "1\n00:00:00,000 --> 00:00:01,400\nHello \u2039world\u203a.\n"
        "\n"
        "2\n00:00:01,500 --> 00:00:02,400\nBye\n"
    )


def test_vtt_lines_and_word_timestamps() -> None:
    lines = group_words(timed(("Hi", 0.0, 0.2), ("you", 0.25, 0.5), ("&", 0.6, 0.7)))

    assert to_vtt(lines) == "WEBVTT\n\n00:00:00.000 --> 00:00:01.100\nHi you &amp;\n"
    assert to_vtt(lines, word_timestamps=True) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.100\nHi <00:00:00.250>you <00:00:00.600>&amp;\n"
    )


@pytest.mark.parametrize(
    ("colour", "style", "override"),
    [
        ("#FFFFFF", "&H00FFFFFF", "&HFFFFFF&"),
        ("#FFD400", "&H0000D4FF", "&H00D4FF&"),
        ("#11223380", "&H7F332211", "&H332211&"),
        ("#000000FF", "&H00000000", "&H000000&"),
        ("#abcdef00", "&HFFEFCDAB", "&HEFCDAB&"),  # fully transparent
    ],
)
def test_ass_colours(colour: str, style: str, override: str) -> None:
    assert ass_colour(colour) == style
    assert ass_colour(colour, override=True) == override


@pytest.mark.parametrize(
    "bad",
    [
        {"font": "Comma, Sans"},
        {"text_colour": "white"},
        {"highlight_colour": "#FFF"},
        {"size_px": 0},
        {"outline_px": -1.0},
        {"bottom_margin_pct": 100.0},
        {"max_width_pct": 0.0},
    ],
)
def test_style_is_validated(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        CaptionStyle(**bad)  # type: ignore[arg-type]


def _events(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("Dialogue:")]


def test_ass_style_sits_in_the_safe_zone() -> None:
    script = to_ass([], CaptionStyle(width_px=1080, height_px=1920))

    assert "PlayResX: 1080\nPlayResY: 1920\n" in script
    style = next(line for line in script.splitlines() if line.startswith("Style:"))
    fields = style.removeprefix("Style: ").split(",")
    assert fields[:3] == ["Caption", "DejaVu Sans", "80"]
    # Alignment 2 (bottom centre); 10 % side margins keep the text within 80 % of the
    # width; the bottom margin is 20 % of the height.
    assert fields[18:22] == ["2", "108", "108", "384"]
    assert _events(script) == []


def test_ass_highlight_lights_one_word_per_event() -> None:
    line = CaptionLine(
        timed(("Go", 1.0, 1.3), ("{now}", 1.4, 2.0), ("!", 2.0, 2.0)), start_s=1.0, end_s=2.5
    )

    events = _events(to_ass([line]))

    on, off = "{\\c&H00D4FF&}", "{\\c&HFFFFFF&}"
    assert events == [
        f"Dialogue: 0,0:00:01.00,0:00:01.40,Caption,,0,0,0,,{on}Go{off} \\{{now\\}} !",
        f"Dialogue: 0,0:00:01.40,0:00:02.00,Caption,,0,0,0,,Go {on}\\{{now\\}}{off} !",
        f"Dialogue: 0,0:00:02.00,0:00:02.50,Caption,,0,0,0,,Go \\{{now\\}} {on}!{off}",
    ]


def test_ass_karaoke_durations_add_up_to_the_line() -> None:
    line = CaptionLine(
        timed(("one", 0.004, 0.3), ("two", 0.333, 0.6), ("three", 0.666, 1.0)),
        start_s=0.004,
        end_s=1.2,
    )

    script = to_ass([line], mode="karaoke")

    assert _events(script) == [
        "Dialogue: 0,0:00:00.00,0:00:01.20,Caption,,0,0,0,,{\\k33}one {\\k34}two {\\k53}three"
    ]
    # Karaoke fills words with PrimaryColour: the highlight.
    assert ",&H0000D4FF,&H00FFFFFF," in script


@pytest.mark.parametrize("mode", ["highlight", "karaoke"])
def test_empty_input(mode: str) -> None:
    assert group_words([]) == ()
    assert to_srt([]) == ""
    assert to_vtt([]) == "WEBVTT\n"
    assert _events(to_ass([], mode=mode)) == []  # type: ignore[arg-type]
