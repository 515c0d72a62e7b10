"""The offline renderer behind the local provider: a real MP4 made from a text prompt.

A moving procedural background (ffmpeg's ``gradients`` source, its colours, motion and
shape derived from seed and prompt, so the same request gives the same video) with the
prompt's words overlaid a few at a time, each card fading and sliding in.
"""

from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vidpipe.media.captions import Card, chunk_words, draw_card
from vidpipe.media.ffmpeg import run_ffmpeg

__all__ = [
    "Background",
    "TimedCard",
    "background_for",
    "build_render_command",
    "render_prompt_video",
]

_GRADIENT_TYPES = ("linear", "radial", "circular", "spiral", "square")
_FADE_IN_S = 0.35
_FADE_OUT_S = 0.25
# How far (as a share of frame height) a card slides up while it fades in.
_SLIDE_SHARE = 0.04


@dataclass(frozen=True)
class Background:
    """Parameters of the ``gradients`` source."""

    colors: tuple[str, ...]
    speed: float
    kind: str
    seed: int


@dataclass(frozen=True)
class TimedCard:
    """A text card and when it is on screen."""

    card: Card
    start_s: float
    duration_s: float


def background_for(prompt: str, seed: int | None) -> Background:
    """Deterministic background parameters for a prompt and seed."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    base_hue = digest[0] / 255
    colors = []
    for index in range(3):
        # Hues spread around the wheel from a prompt-chosen start: varied but harmonious.
        hue = (base_hue + index * (0.18 + digest[1] / 255 * 0.2)) % 1.0
        saturation = 0.55 + digest[2 + index] / 255 * 0.35
        value = 0.45 + digest[5 + index] / 255 * 0.4
        red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
        colors.append(f"0x{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}")
    return Background(
        colors=tuple(colors),
        speed=round(0.008 + digest[8] / 255 * 0.02, 4),
        kind=_GRADIENT_TYPES[digest[9] % len(_GRADIENT_TYPES)],
        seed=int.from_bytes(digest[10:14], "big"),
    )


def build_render_command(
    *,
    background: Background,
    cards: Sequence[TimedCard],
    seconds: float,
    width: int,
    height: int,
    fps: int,
    out_path: Path,
    progress_path: Path,
) -> list[str]:
    """ffmpeg arguments (after the global flags) that render the video to ``out_path``.

    Input 0 is the background; input i+1 is card i, a still looped for its own window
    only, so no card is decoded while it is off screen.
    """
    args = ["-f", "lavfi", "-i", _gradients_source(background, seconds, width, height, fps)]
    for timed in cards:
        args += [
            "-loop", "1", "-framerate", str(fps), "-t", f"{timed.duration_s:.3f}",
            "-i", str(timed.card.path),
        ]  # fmt: skip
    args += [
        "-filter_complex", _filter_graph(cards, width, height),
        "-map", "[vout]",
        "-t", f"{seconds:g}",
        "-r", str(fps),
        "-c:v", "libx264",
        "-preset", "veryfast",
        "-pix_fmt", "yuv420p",
        "-movflags", "+faststart",
        "-an",
        "-progress", str(progress_path),
        # Explicit, because the renderer writes to a temporary name without .mp4.
        "-f", "mp4",
        str(out_path),
    ]  # fmt: skip
    return args


def render_prompt_video(
    prompt: str,
    *,
    seconds: float,
    width: int,
    height: int,
    fps: int,
    seed: int | None,
    out_path: Path,
    work_dir: Path,
    progress_path: Path,
    ffmpeg: Path,
    timeout_s: float = 300.0,
) -> None:
    """Render ``prompt`` to an H.264 MP4 of exactly ``width``x``height``, ``seconds`` long.

    Card PNGs go to ``work_dir``; ffmpeg's ``-progress`` output goes to ``progress_path``
    (``out_time_us`` against ``seconds`` gives the share done). Raises ``MediaError``.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    chunks = chunk_words(prompt, seconds=seconds)
    window_s = seconds / len(chunks) if chunks else seconds
    cards = [
        TimedCard(
            card=draw_card(
                text, frame_width=width, frame_height=height, path=work_dir / f"card{i:03d}.png"
            ),
            start_s=i * window_s,
            duration_s=window_s,
        )
        for i, text in enumerate(chunks)
    ]
    args = build_render_command(
        background=background_for(prompt, seed),
        cards=cards,
        seconds=seconds,
        width=width,
        height=height,
        fps=fps,
        out_path=out_path,
        progress_path=progress_path,
    )
    run_ffmpeg(args, ffmpeg=ffmpeg, timeout_s=timeout_s, cwd=work_dir)


def _gradients_source(
    background: Background, seconds: float, width: int, height: int, fps: int
) -> str:
    colors = ":".join(f"c{i}={color}" for i, color in enumerate(background.colors))
    # Drawn at half size and scaled up in the graph: a smooth gradient loses nothing
    # visible, and the per-pixel trigonometry of the circular and spiral kinds is
    # otherwise the most expensive part of the render.
    return (
        f"gradients=s={max(2, width // 2)}x{max(2, height // 2)}:r={fps}:d={seconds:g}:{colors}"
        f":n={len(background.colors)}:speed={background.speed}"
        f":type={background.kind}:seed={background.seed}"
    )


def _filter_graph(cards: Sequence[TimedCard], width: int, height: int) -> str:
    # Blend in yuv420p: the background is converted once and cards are blended on
    # the chroma grid, rather than every overlay working on full RGB frames.
    background = f"[0:v]scale={width}:{height}:flags=bilinear,format=yuv420p"
    if not cards:
        return f"{background},setsar=1[vout]"
    slide_px = round(height * _SLIDE_SHARE)
    parts = [f"{background}[bg]"]
    base = "[bg]"
    for index, timed in enumerate(cards):
        fade_in = min(_FADE_IN_S, timed.duration_s / 3)
        fade_out = min(_FADE_OUT_S, timed.duration_s / 4)
        start = f"{timed.start_s:.3f}"
        # Fades run on the card's own clock; setpts then moves it to its window.
        parts.append(
            f"[{index + 1}:v]format=rgba,"
            f"fade=t=in:st=0:d={fade_in:.3f}:alpha=1,"
            f"fade=t=out:st={timed.duration_s - fade_out:.3f}:d={fade_out:.3f}:alpha=1,"
            f"setpts=PTS+{start}/TB[c{index}]"
        )
        out = f"[v{index}]"
        parts.append(
            f"{base}[c{index}]overlay=x=(W-w)/2"
            f":y='(H-h)/2+{slide_px}*max(0,1-(t-{start})/{fade_in:.3f})'"
            f":eof_action=pass:format=yuv420{out}"
        )
        base = out
    parts.append(f"{base}format=yuv420p,setsar=1[vout]")
    return ";".join(parts)
