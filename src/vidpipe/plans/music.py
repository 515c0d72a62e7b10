"""An offline music bed: a slow chord progression of soft tones, made by ffmpeg.

Not a composer: a quiet, royalty-free pad that sits under narration (the compose step
ducks it further while someone speaks). Deterministic for a mood and seed, so a retry
makes the same file.
"""

from __future__ import annotations

import random
from pathlib import Path

from vidpipe.media.ffmpeg import run_ffmpeg

SAMPLE_RATE = 48_000

# Chords as semitone offsets from A3 (220 Hz); a progression per mood, and how long
# each chord lasts.
_MOODS: dict[str, tuple[tuple[tuple[int, ...], ...], float]] = {
    "calm": (((0, 3, 7), (-4, 0, 3), (-7, -4, 0), (-2, 2, 5)), 4.0),  # i VI III VII
    "upbeat": (((3, 7, 10), (-2, 2, 5), (0, 3, 7), (5, 8, 12)), 2.0),
    "dramatic": (((0, 3, 7), (1, 5, 8), (-2, 1, 5), (0, 3, 7)), 3.0),
}


def _freq(semitones: int) -> float:
    return 220.0 * 2 ** (semitones / 12)


def music_expression(mood: str, seconds: float, seed: int) -> str:
    """The aevalsrc expression: each chord's three partials under a raised-cosine
    envelope per chord, so chords swell in and out instead of clicking."""
    progression, chord_s = _MOODS[mood]
    rng = random.Random(f"{mood}:{seed}")
    # The seed rotates the progression and detunes slightly: different seeds, different beds.
    start = rng.randrange(len(progression))
    detune = 1.0 + rng.uniform(-0.01, 0.01)
    cycle = len(progression) * chord_s
    terms: list[str] = []
    for index in range(len(progression)):
        chord = progression[(start + index) % len(progression)]
        begin = index * chord_s
        # 1 inside this chord's slot of the cycle, 0 outside; smooth at the edges.
        phase = f"mod(t,{cycle:g})-{begin:g}"
        window = f"between({phase},0,{chord_s:g})*sin(PI*({phase})/{chord_s:g})"
        tones = "+".join(
            f"sin(2*PI*{_freq(n) * detune:.3f}*t)+0.3*sin(4*PI*{_freq(n) * detune:.3f}*t)"
            for n in chord
        )
        terms.append(f"({window})*({tones})")
    return f"0.08*({'+'.join(terms)})"


def cycle_s(mood: str) -> float:
    """Length of one pass of the mood's progression."""
    progression, chord_s = _MOODS[mood]
    return len(progression) * chord_s


def generate_music(
    out: Path, *, seconds: float, mood: str, seed: int, ffmpeg: Path, timeout_s: float = 120.0
) -> Path:
    """Write a stereo 48 kHz WAV bed to ``out``: ``seconds`` long, or one pass of the
    progression when that is shorter. One pass loops without a seam (every chord
    swells from and back to silence), and the compose step loops its music, so
    making more would only cost time."""
    if mood not in _MOODS:
        raise ValueError(f"unknown mood {mood!r}")
    # Commas inside the expression would end the filter in the filtergraph syntax.
    expression = music_expression(mood, seconds, seed).replace(",", "\\,")
    length = min(seconds, cycle_s(mood))
    filters = "lowpass=f=2500"
    if length < cycle_s(mood):
        # Cut mid-progression: fade the ends so the cut does not click.
        fade = min(1.5, length / 4)
        filters = (
            f"afade=t=in:d={fade:.3f},afade=t=out:st={length - fade:.3f}:d={fade:.3f},{filters}"
        )
    run_ffmpeg(
        [
            "-f", "lavfi",
            "-i", f"aevalsrc={expression}|{expression}:s={SAMPLE_RATE}:d={length:.3f}",
            "-af", filters,
            "-c:a", "pcm_s16le",
            "-y", str(out),
        ],
        ffmpeg=ffmpeg,
        timeout_s=timeout_s,
    )  # fmt: skip
    return out
