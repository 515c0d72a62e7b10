"""The renderer's pure parts: word chunks, background parameters, the ffmpeg command."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidpipe.media.captions import Card, chunk_words
from vidpipe.media.ffmpeg import GLOBAL_ARGS, ffmpeg_argv
from vidpipe.media.render import Background, TimedCard, background_for, build_render_command

BACKGROUND = Background(colors=("0x112233", "0x445566"), speed=0.01, kind="linear", seed=7)


def card(index: int, start_s: float, duration_s: float) -> TimedCard:
    return TimedCard(Card(Path(f"/w/card{index}.png"), 200, 80), start_s, duration_s)


def command(
    cards: list[TimedCard], *, seconds: float = 5, width: int = 720, height: int = 1280
) -> list[str]:
    return build_render_command(
        background=BACKGROUND,
        cards=cards,
        seconds=seconds,
        width=width,
        height=height,
        fps=30,
        out_path=Path("/w/out.partial.mp4"),
        progress_path=Path("/w/progress.txt"),
    )


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize(
    ("prompt", "seconds", "chunks"),
    [
        pytest.param("", 5, [], id="empty"),
        pytest.param("  \n\t ", 5, [], id="blank"),
        pytest.param("hello", 5, ["hello"], id="one-word"),
        pytest.param("a b c d", 5, ["a b c d"], id="one-chunk"),
        pytest.param("a b c d e", 5, ["a b c", "d e"], id="balanced-not-lonely"),
        pytest.param("a b c d e f g h", 5, ["a b c d", "e f g h"], id="two-full"),
        # 1 s leaves room for one chunk only: it takes every word.
        pytest.param("a b c d e f g h", 1, ["a b c d e f g h"], id="short-video-fuller"),
        pytest.param("a\x00b\x1bc d", 5, ["a b c d"], id="control-chars-dropped"),
    ],
)
def test_chunk_words(prompt: str, seconds: float, chunks: list[str]) -> None:
    assert chunk_words(prompt, seconds=seconds) == chunks


def test_chunk_words_cuts_an_overlong_prompt_with_an_ellipsis() -> None:
    words = [f"w{i}" for i in range(100)]

    chunks = chunk_words(" ".join(words), seconds=2)

    assert len(chunks) == 2
    assert all(len(c.split()) == 12 for c in chunks)
    assert chunks[-1].endswith("w23\u2026")


def test_background_is_deterministic_per_seed_and_prompt() -> None:
    first = background_for("a cat", 1)

    assert background_for("a cat", 1) == first
    assert background_for("a cat", 2) != first
    assert background_for("a dog", 1) != first
    assert all(c.startswith("0x") and len(c) == 8 for c in first.colors)
    assert 0 < first.speed <= 1


def test_command_has_exact_size_duration_and_encoding() -> None:
    args = command([card(0, 0.0, 2.5), card(1, 2.5, 2.5)])

    assert args[:3] == ["-f", "lavfi", "-i"]
    assert args[3].startswith("gradients=s=360x640:r=30:d=5:")
    graph = option(args, "-filter_complex")
    assert "scale=720:1280" in graph
    assert graph.endswith("format=yuv420p,setsar=1[vout]")
    assert option(args, "-map") == "[vout]"
    tail = args[args.index("-map") :]
    assert tail == [
        "-map", "[vout]",
        "-t", "5",
        "-r", "30",
        "-c:v", "libx264",
        "-preset", "veryfast",
        "-pix_fmt", "yuv420p",
        "-movflags", "+faststart",
        "-an",
        "-progress", "/w/progress.txt",
        "-f", "mp4",
        "/w/out.partial.mp4",
    ]  # fmt: skip


def test_each_card_is_an_input_bounded_to_its_window() -> None:
    args = command([card(0, 0.0, 2.5), card(1, 2.5, 2.5)])

    inputs = [args[i + 1] for i, a in enumerate(args) if a == "-i"]
    assert inputs[1:] == ["/w/card0.png", "/w/card1.png"]
    second = args.index("/w/card1.png")
    assert args[second - 7 : second - 1] == ["-loop", "1", "-framerate", "30", "-t", "2.500"]
    graph = option(args, "-filter_complex")
    assert "[2:v]format=rgba,fade=t=in" in graph
    assert "setpts=PTS+2.500/TB[c1]" in graph
    assert "(t-2.500)" in graph  # the slide-in starts with the card
    assert graph.count("overlay=") == 2


def test_command_without_cards_is_background_only() -> None:
    args = command([], width=640, height=360, seconds=2)

    assert [a for a in args if a.endswith(".png")] == []
    assert option(args, "-filter_complex") == (
        "[0:v]scale=640:360:flags=bilinear,format=yuv420p,setsar=1[vout]"
    )
    assert option(args, "-t") == "2"


def test_ffmpeg_argv_puts_global_flags_first() -> None:
    argv = ffmpeg_argv(Path("/bin/ffmpeg"), ["-i", "x"])

    assert argv == ["/bin/ffmpeg", *GLOBAL_ARGS, "-i", "x"]
    assert {"-hide_banner", "-nostdin", "-y"} <= set(GLOBAL_ARGS)
