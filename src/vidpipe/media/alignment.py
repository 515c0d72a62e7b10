"""Word timings: when each word of a narration is spoken.

Two sources, best first:

* ``timings_from_phonemes``: the TTS engine reports how many samples each phoneme
  took (Piper does); the text's words, phonemized one by one, are matched to that
  stream by edit distance, so the engine's own word merges ("in the" spoken as one
  unit) and expansions ("2024" as four words) do not shift later words. Accuracy is
  the engine's: a word boundary is within one phoneme (about 10-60 ms) of the audio.
* ``timings_from_audio``: for engines that give nothing (espeak-ng here, OpenAI
  speech), an energy-based voice activity detector finds the pauses, the pauses are
  matched to the word boundaries the text predicts (favouring sentence and clause
  ends), and the words between two matched pauses share that stretch of speech in
  proportion to their estimated syllables. Boundaries at a detected pause are exact
  to one 10 ms frame; inside a run of connected speech the error is that of the
  syllable estimate, typically 100-250 ms on a normal speaking rate and worse on
  numbers, acronyms and words the estimate miscounts.

Every result is monotonic (each word starts at or after the previous one ends) and
inside ``[0, duration]``.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "WordTiming",
    "estimate_syllables",
    "speech_segments",
    "split_words",
    "timings_from_audio",
    "timings_from_characters",
    "timings_from_phonemes",
]

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class WordTiming:
    """One word of the text (with the punctuation attached to it) and when it is spoken."""

    word: str
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


# --- Words -------------------------------------------------------------------------

_VOWEL_GROUPS = re.compile(r"[aeiouy]+")
_SENTENCE_END = (".", "!", "?", "…")
# Closing quotes and brackets may follow the punctuation that ends a sentence.
_CLOSING = "\"')]\u201d\u2019"
_CLAUSE_END = (",", ";", ":", "\u2014", "\u2013")  # em and en dash


def split_words(text: str) -> tuple[str, ...]:
    """The words of ``text`` as captions show them: split on whitespace, punctuation kept.

    A token with no letter or digit (a lone dash, an ellipsis) is glued to the word
    before it (or after it, at the start), since it is not spoken on its own.
    """
    words: list[str] = []
    pending = ""
    for token in text.split():
        if not any(ch.isalnum() for ch in token):
            if words:
                words[-1] = f"{words[-1]} {token}"
            else:
                pending = f"{pending}{token} "
            continue
        words.append(pending + token)
        pending = ""
    if pending and not words:
        return ()
    return tuple(words)


def estimate_syllables(word: str) -> int:
    """A rough syllable count for English: vowel groups, a silent final e, digits.

    Only the relative weight of words matters to ``timings_from_audio``, so this is
    kept simple; it is at least 1 for any word with a letter or digit.
    """
    lowered = word.lower()
    digits = sum(ch.isdigit() for ch in lowered)
    letters = "".join(ch for ch in lowered if ch.isalpha())
    count = len(_VOWEL_GROUPS.findall(letters))
    if letters.endswith("e") and not letters.endswith(("le", "ee")) and count > 1:
        count -= 1
    # A spoken number takes about one and a half syllables per digit ("2024": "twenty
    # twenty-four"); a bare letter or acronym about one syllable per letter.
    count += (3 * digits + 1) // 2
    if letters and count == 0:
        count = len(letters) if letters.isupper() or len(letters) <= 3 else 1
    return max(count, 1 if (letters or digits) else 0)


def _pause_bonus(word: str) -> float:
    """How strongly a pause is expected after ``word``, from its trailing punctuation."""
    stripped = word.rstrip(_CLOSING)
    if stripped.endswith(_SENTENCE_END):
        return 1.0
    if stripped.endswith(_CLAUSE_END):
        return 0.6
    return 0.0


# --- From the engine's phoneme durations ---------------------------------------------

# Word gaps, primary and secondary stress marks, piper's start/end/pad symbols.
_NOT_A_PHONEME = {" ", "\u02c8", "\u02cc", "^", "$", "_", "\u200d"}


def _is_phoneme(symbol: str) -> bool:
    return (
        bool(symbol)
        and symbol not in _NOT_A_PHONEME
        and not all(unicodedata.category(ch).startswith(("P", "Z", "C")) for ch in symbol)
    )


def timings_from_phonemes(
    words: Sequence[str],
    word_phonemes: Sequence[Sequence[str]],
    stream: Sequence[tuple[str, float, float]],
    *,
    duration_s: float,
) -> tuple[WordTiming, ...]:
    """Word timings from an engine's phoneme stream.

    ``word_phonemes[i]`` are the phonemes of ``words[i]`` said alone; ``stream`` is
    what the engine said, as ``(phoneme, start_s, end_s)`` in order (spaces, stress
    marks and punctuation may be included: they are skipped). Words that match no
    phoneme of the stream are placed in the gap between their neighbours.
    """
    if len(words) != len(word_phonemes):
        raise ValueError("words and word_phonemes differ in length")
    if not words:
        return ()
    labels: list[int] = []
    text_symbols: list[str] = []
    for index, phonemes in enumerate(word_phonemes):
        for symbol in phonemes:
            if _is_phoneme(symbol):
                text_symbols.append(symbol)
                labels.append(index)
    spoken = [(s, a, b) for s, a, b in stream if _is_phoneme(s)]
    pairs = _edit_alignment(text_symbols, [s for s, _, _ in spoken])

    starts: list[float | None] = [None] * len(words)
    ends: list[float | None] = [None] * len(words)
    for text_index, stream_index in pairs:
        word = labels[text_index]
        _, start_s, end_s = spoken[stream_index]
        current_start, current_end = starts[word], ends[word]
        starts[word] = start_s if current_start is None else min(current_start, start_s)
        ends[word] = end_s if current_end is None else max(current_end, end_s)
    return _fill_and_clamp(words, starts, ends, duration_s)


def _edit_alignment(a: Sequence[str], b: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs (i, j) of a least-cost edit alignment of ``a`` onto ``b``
    (matches and substitutions; insertions and deletions pair with nothing).

    Rows are computed with numpy (the in-row insertion chain is a running minimum),
    so a few thousand phonemes align in milliseconds; the backtrace is linear.
    """
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return []
    symbols = {s: k for k, s in enumerate(dict.fromkeys([*a, *b]))}
    b_codes = np.array([symbols[s] for s in b], dtype=np.int64)
    cost = np.zeros((n + 1, m + 1), dtype=np.int32)
    cost[0, :] = np.arange(m + 1)
    columns = np.arange(m + 1, dtype=np.int32)
    for i in range(1, n + 1):
        substitute = (b_codes != symbols[a[i - 1]]).astype(np.int32)
        row = np.empty(m + 1, dtype=np.int32)
        row[0] = i
        row[1:] = np.minimum(cost[i - 1, 1:] + 1, cost[i - 1, :-1] + substitute)
        # row[j] = min(row[j], row[j-1] + 1) along the row: a running min of row - j.
        cost[i] = np.minimum.accumulate(row - columns) + columns
    pairs: list[tuple[int, int]] = []
    i, j = n, m
    while i > 0 and j > 0:
        diagonal = cost[i - 1, j - 1] + (0 if a[i - 1] == b[j - 1] else 1)
        if cost[i, j] == diagonal:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    pairs.reverse()
    return pairs


def _fill_and_clamp(
    words: Sequence[str],
    starts: Sequence[float | None],
    ends: Sequence[float | None],
    duration_s: float,
) -> tuple[WordTiming, ...]:
    """Place unmatched words between their neighbours, then make the result monotonic
    and inside ``[0, duration_s]``."""
    n = len(words)
    result: list[WordTiming] = []
    previous_end = 0.0
    i = 0
    while i < n:
        start, end = starts[i], ends[i]
        if start is not None and end is not None:
            start = min(max(start, previous_end), duration_s)
            end = min(max(end, start), duration_s)
            result.append(WordTiming(words[i], start, end))
            previous_end = end
            i += 1
            continue
        # A run of unmatched words shares the gap up to the next matched word.
        j = i
        while j < n and (starts[j] is None or ends[j] is None):
            j += 1
        next_start = starts[j] if j < n else None
        gap_end = (
            duration_s if next_start is None else min(max(next_start, previous_end), duration_s)
        )
        step = (gap_end - previous_end) / (j - i)
        for k in range(i, j):
            begin = previous_end + step * (k - i)
            result.append(WordTiming(words[k], begin, begin + step))
        previous_end = gap_end
        i = j
    return tuple(result)


# --- From characters (engines that time each character) ------------------------------


def timings_from_characters(
    text: str,
    char_starts_s: Sequence[float],
    char_ends_s: Sequence[float],
    *,
    duration_s: float,
) -> tuple[WordTiming, ...]:
    """Word timings from one start and end time per character of ``text``.

    Each word of ``split_words(text)`` spans from its first to its last character.
    """
    if len(char_starts_s) != len(text) or len(char_ends_s) != len(text):
        raise ValueError("need one start and one end time per character of text")
    words = split_words(text)
    starts: list[float | None] = []
    ends: list[float | None] = []
    cursor = 0
    for word in words:
        # A glued-on punctuation token ("word —") has a space inside: time its ends.
        first = text.index(word.split()[0], cursor)
        last_token = word.split()[-1]
        last = text.index(last_token, first) + len(last_token) - 1
        starts.append(char_starts_s[first])
        ends.append(char_ends_s[last])
        cursor = last + 1
    return _fill_and_clamp(words, starts, ends, duration_s)


# --- From the audio alone ------------------------------------------------------------

_FRAME_S = 0.02
_HOP_S = 0.01


def speech_segments(
    samples: FloatArray,
    sample_rate: int,
    *,
    min_silence_s: float = 0.1,
    min_speech_s: float = 0.04,
    floor_db: float = -35.0,
) -> tuple[tuple[float, float], ...]:
    """The stretches of ``samples`` (mono, floats in [-1, 1]) that hold speech, in seconds.

    A 20 ms frame is speech when its RMS is within ``floor_db`` of the loud frames'
    level (the 95th percentile, so a click does not set it). Silences shorter than
    ``min_silence_s`` are bridged, since stop consonants close the mouth for up to
    about 100 ms inside a word (espeak-ng's pause at a comma is about 120 ms); blips
    shorter than ``min_speech_s`` are dropped.
    """
    if samples.ndim != 1:
        raise ValueError("speech_segments wants mono samples")
    frame = max(1, round(_FRAME_S * sample_rate))
    hop = max(1, round(_HOP_S * sample_rate))
    if len(samples) < frame:
        return ()
    count = 1 + (len(samples) - frame) // hop
    squares = np.concatenate(([0.0], np.cumsum(samples.astype(np.float64) ** 2)))
    offsets = np.arange(count) * hop
    rms = np.sqrt((squares[offsets + frame] - squares[offsets]) / frame)
    level_db = 20 * np.log10(np.maximum(rms, 1e-9))
    reference_db = float(np.percentile(level_db, 95))
    if reference_db < -80:
        return ()
    voiced = level_db > reference_db + floor_db

    runs = _runs(voiced)
    segments: list[list[float]] = []
    for first, last in runs:
        start_s = first * hop / sample_rate
        end_s = min((last * hop + frame) / sample_rate, len(samples) / sample_rate)
        if segments and start_s - segments[-1][1] < min_silence_s:
            segments[-1][1] = end_s
        else:
            segments.append([start_s, end_s])
    return tuple((a, b) for a, b in segments if b - a >= min_speech_s)


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(first, last) indices of each run of True in ``mask``."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.diff(padded)
    firsts = np.flatnonzero(edges == 1)
    lasts = np.flatnonzero(edges == -1) - 1
    return [(int(a), int(b)) for a, b in zip(firsts, lasts, strict=True)]


def timings_from_audio(
    words: Sequence[str], samples: FloatArray, sample_rate: int
) -> tuple[WordTiming, ...]:
    """Word timings estimated from the waveform alone (see the module docstring)."""
    duration_s = len(samples) / sample_rate
    if not words:
        return ()
    segments = speech_segments(samples, sample_rate)
    if not segments:
        segments = ((0.0, duration_s),)
    weights = [estimate_syllables(w) + 0.5 for w in words]
    anchors = _match_pauses(words, weights, segments)

    result: list[WordTiming] = []
    # Spans between matched pauses: words [w0, w1) over segments [s0, s1).
    bounds = [(0, 0), *((k + 1, g + 1) for g, k in anchors), (len(words), len(segments))]
    for (w0, s0), (w1, s1) in itertools.pairwise(bounds):
        result.extend(_spread(words[w0:w1], weights[w0:w1], segments[s0:s1]))
    return _fill_and_clamp(
        [t.word for t in result], [t.start_s for t in result], [t.end_s for t in result], duration_s
    )


def _match_pauses(
    words: Sequence[str], weights: Sequence[float], segments: Sequence[tuple[float, float]]
) -> list[tuple[int, int]]:
    """Pairs (gap g, word k): the pause after segment g falls after word k.

    A monotonic matching that maximises a score rewarding pauses near where the
    text's weights put a word boundary, more so after punctuation and for long
    pauses; a pause matched to nothing is taken as inside a word.
    """
    gaps = len(segments) - 1
    boundaries = len(words) - 1
    if gaps <= 0 or boundaries <= 0:
        return []
    speech = np.array([b - a for a, b in segments])
    total_speech = float(speech.sum())
    gap_at = np.cumsum(speech)[:-1]  # speech time elapsed at each gap
    gap_len = np.array([segments[g + 1][0] - segments[g][1] for g in range(gaps)])
    cumulative = np.cumsum(weights)
    boundary_at = cumulative[:-1] / cumulative[-1] * total_speech
    tolerance = max(0.35, 1.5 * total_speech / len(words))
    bonus = np.array([_pause_bonus(w) for w in words[:-1]])

    score = (
        1.0
        + bonus[None, :]
        + np.minimum(gap_len / 0.3, 1.0)[:, None] * 0.5
        - np.abs(gap_at[:, None] - boundary_at[None, :]) / tolerance
    )
    # Longest-path over the (gap, boundary) grid, taking only positive scores.
    best = np.zeros((gaps + 1, boundaries + 1))
    for g in range(1, gaps + 1):
        for k in range(1, boundaries + 1):
            take = best[g - 1, k - 1] + max(score[g - 1, k - 1], 0.0)
            best[g, k] = max(best[g - 1, k], best[g, k - 1], take)
    matches: list[tuple[int, int]] = []
    g, k = gaps, boundaries
    while g > 0 and k > 0:
        if best[g, k] == best[g - 1, k]:
            g -= 1
        elif best[g, k] == best[g, k - 1]:
            k -= 1
        else:
            if score[g - 1, k - 1] > 0:
                matches.append((g - 1, k - 1))
            g, k = g - 1, k - 1
    matches.reverse()
    return matches


def _spread(
    words: Sequence[str], weights: Sequence[float], segments: Sequence[tuple[float, float]]
) -> list[WordTiming]:
    """Share the speech time of ``segments`` among ``words`` by weight; a boundary that
    falls on the edge of a segment ends the word there and starts the next after the
    pause."""
    if not words:
        return []
    lengths = [b - a for a, b in segments]
    total = sum(lengths)
    total_weight = sum(weights)

    def real_time(speech_time: float, *, after_pause: bool) -> float:
        elapsed = 0.0
        for (a, _), length in zip(segments, lengths, strict=True):
            if speech_time < elapsed + length or (
                not after_pause and speech_time <= elapsed + length
            ):
                return a + (speech_time - elapsed)
            elapsed += length
        return segments[-1][1]

    timings: list[WordTiming] = []
    done = 0.0
    for word, weight in zip(words, weights, strict=True):
        begin = done / total_weight * total
        done += weight
        finish = done / total_weight * total
        timings.append(
            WordTiming(
                word, real_time(begin, after_pause=True), real_time(finish, after_pause=False)
            )
        )
    return timings
