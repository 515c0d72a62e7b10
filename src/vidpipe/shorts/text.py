"""Plain-text helpers of the scripters: words, sentences, scene packing, keywords.

Pure functions, English-oriented (the stop-word list and sentence rules are), with no
language model and no network: what the offline scripter can afford.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

__all__ = [
    "STOP_WORDS",
    "count_words",
    "keywords",
    "pack_scenes",
    "split_long",
    "split_sentences",
]

# A sentence ends at . ! ? or … (optionally followed by a closing quote or bracket)
# and whitespace. Two fixed-width look-behinds, since Python's must be fixed-width.
_SENTENCE_BREAK = re.compile(r"(?:(?<=[.!?\u2026])|(?<=[.!?\u2026][\"'\u201d\u2019)\]]))\s+")
# Abbreviations whose period does not end a sentence.
_ABBREVIATION_TEXT = "mr mrs ms dr prof sr jr st vs etc e.g i.e approx no fig inc ltd co mt u.s"
_ABBREVIATIONS = frozenset(_ABBREVIATION_TEXT.split())
_CLAUSE_BREAK = re.compile(r"(?<=[,;:\u2014\u2013])\s+")
_WORD = re.compile(r"[A-Za-z][A-Za-z'\u2019-]*[A-Za-z]|[A-Za-z]")

_STOP_TEXT = """
    a about above after again against all almost also although always am among an and
    another any anyone anything are aren't around as at away back be because been
    before being below between both but by can can't cannot could couldn't did didn't
    do does doesn't doing don't done down during each either else enough even ever every
    everyone everything few first for from further get gets getting give go goes going
    gone got had hadn't has hasn't have haven't having he her here hers herself him
    himself his how however i if in into is isn't it it's its itself just know last
    least less let like little lot lots made make makes many may maybe me might mine
    more most much must my myself need never new next no nobody none nor not nothing now
    of off often oh ok okay on once one only onto or other others our ours ourselves out
    over own part people perhaps put quite rather really right said same say says see
    seem seems several shall she should shouldn't since so some someone something
    sometimes soon still such sure take tell than that that's the their theirs them
    themselves then there there's these they they're thing things think this those
    though through thus time times to today together too toward towards under until up
    upon us use used using very want was wasn't way ways we well were weren't what
    what's whatever when where whether which while who whole whom whose why will with
    within without won't would wouldn't yes yet you you'd you'll you're you've your
    yours yourself yourselves actually probably literally honestly basically pretty
    number fact facts ever here's let's two three four five six seven eight nine ten
    happened started expected tells tell told needs found find looks looked became
    keep kept comes came went seen saw asked asking wait stay follow read save share
    try comment choose remember means mean true best better worst
"""
STOP_WORDS = frozenset(_STOP_TEXT.split())
# Adverbs and participles rarely name what a picture should show.
_WEAK_ENDINGS = ("ly", "ed", "ing")


def count_words(text: str) -> int:
    """Spoken words: whitespace-separated tokens with at least one letter or digit."""
    return sum(1 for token in text.split() if any(ch.isalnum() for ch in token))


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, whitespace collapsed, abbreviations and initials kept."""
    flat = " ".join(text.split())
    if not flat:
        return []
    pieces = _SENTENCE_BREAK.split(flat)
    sentences: list[str] = []
    for piece in pieces:
        if sentences and _continues(sentences[-1], piece):
            sentences[-1] = f"{sentences[-1]} {piece}"
        else:
            sentences.append(piece)
    return sentences


def _continues(previous: str, piece: str) -> bool:
    last = previous.rsplit(" ", 1)[-1].rstrip(".").lower()
    if previous.endswith(".") and (last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())):
        return True
    # "… and then it stopped. and" is a typo, not a new sentence; "3.5" never splits.
    return piece[:1].islower()


def split_long(sentence: str, *, max_words: int, max_chars: int) -> list[str]:
    """Cut one sentence into pieces of at most ``max_words`` words and ``max_chars``
    characters: at clause breaks (, ; : dashes) when that suffices, else into
    near-equal runs of words."""
    if count_words(sentence) <= max_words and len(sentence) <= max_chars:
        return [sentence]
    clauses = _CLAUSE_BREAK.split(sentence)
    if len(clauses) > 1:
        pieces = pack_scenes(
            clauses,
            min_words=1,
            ideal_words=max_words * 2 // 3 or 1,
            max_words=max_words,
            max_chars=max_chars,
        )
        if all(count_words(p) <= max_words and len(p) <= max_chars for p in pieces):
            return pieces
    tokens = sentence.split()
    parts = max(
        math.ceil(len(tokens) / max_words), math.ceil((len(sentence) + 1) / (max_chars + 1))
    )
    out: list[str] = []
    while tokens:
        size = math.ceil(len(tokens) / parts)
        chunk, tokens = tokens[:size], tokens[size:]
        # A character-heavy chunk (long words) gives words back to the next.
        while len(chunk) > 1 and len(" ".join(chunk)) > max_chars:
            tokens.insert(0, chunk.pop())
        out.append(" ".join(chunk))
        parts = max(parts - 1, 1)
    return out


def pack_scenes(
    units: Sequence[str],
    *,
    min_words: int,
    ideal_words: int,
    max_words: int,
    max_chars: int,
) -> list[str]:
    """Join consecutive ``units`` (sentences) into scenes, in order.

    The partition is optimal for: no scene over ``max_words`` or ``max_chars`` (a
    unit over them is cut first, see ``split_long``), as few scenes under
    ``min_words`` as possible, and scene lengths as close to ``ideal_words`` as can
    be (least squares). Dynamic programming over the units: O(n^2) for n units.
    """
    pieces = [
        p for unit in units for p in split_long(unit, max_words=max_words, max_chars=max_chars)
    ]
    if not pieces:
        return []
    n = len(pieces)
    counts = [count_words(p) for p in pieces]
    lengths = [len(p) for p in pieces]
    # best[i]: least cost of packing pieces[:i]; cut[i]: where its last scene starts.
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    short_penalty = float(max_words * max_words * 4)
    for end in range(1, n + 1):
        words = chars = 0
        for start in range(end - 1, -1, -1):
            words += counts[start]
            chars += lengths[start] + (1 if start < end - 1 else 0)
            if start < end - 1 and (words > max_words or chars > max_chars):
                break
            cost = best[start] + (words - ideal_words) ** 2
            if words < min_words:
                cost += short_penalty
            if cost < best[end]:
                best[end], cut[end] = cost, start
    scenes: list[str] = []
    end = n
    while end > 0:
        start = cut[end]
        scenes.append(" ".join(pieces[start:end]))
        end = start
    return scenes[::-1]


def keywords(text: str, limit: int = 3, *, exclude: Sequence[str] = ()) -> list[str]:
    """The ``limit`` most telling words of ``text``, in order of first appearance.

    Without a tagger: words that are not stop words, scored by frequency, length and
    capitalisation inside a sentence (a likely name). Good enough for an image prompt.
    """
    skip = {w.lower() for w in exclude}
    scores: dict[str, float] = {}
    first_seen: dict[str, int] = {}
    display: dict[str, str] = {}
    sentence_start = True
    for position, match in enumerate(_WORD.finditer(text)):
        word = match.group(0).strip("'\u2019-")
        key = word.lower()
        after = text[match.end() : match.end() + 2]
        if len(key) >= 3 and key not in STOP_WORDS and key not in skip:
            score = 1.0 + min(len(key), 12) / 12
            if len(key) > 4 and key.endswith(_WEAK_ENDINGS):
                score -= 0.9
            if word[0].isupper() and not sentence_start:
                score += 1.0
            scores[key] = scores.get(key, 0.0) + score
            first_seen.setdefault(key, position)
            display.setdefault(key, word if word[0].isupper() and not sentence_start else key)
        sentence_start = after[:1] in (".", "!", "?")
    top = sorted(scores, key=lambda k: (-scores[k], first_seen[k]))[:limit]
    return [display[k] for k in sorted(top, key=lambda k: first_seen[k])]
