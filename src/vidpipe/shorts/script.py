"""The script of a short, and the two scripters that need no network.

A ``Script`` is a title and ordered scenes; each scene is narration (what the voice
says and the captions show), an image prompt, the template role it plays, and
optional on-screen text, speaker (chat templates) and words to emphasise.

* ``offline_script`` writes one from a topic by filling the template's patterns
  (formulaic on purpose: no knowledge, no network, same inputs give the same
  script), sized to a target length; or cuts a user's text into scenes at sentence
  boundaries within the template's pacing.
* ``user_script`` validates a script the user wrote scene by scene.

The language-model scripter is ``vidpipe.shorts.llm.llm_script``.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from vidpipe.errors import InvalidRequest
from vidpipe.shorts.templates import MAX_SCENES, RoleSpec, Template
from vidpipe.shorts.text import count_words, keywords, pack_scenes, split_sentences

__all__ = [
    "MAX_SCENE_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_TOPIC_CHARS",
    "Script",
    "ScriptScene",
    "chat_messages",
    "check_target_seconds",
    "fit_to_template",
    "offline_script",
    "script_json_schema",
    "user_script",
]

MAX_SCENE_CHARS = 600
# The offline scripter puts the topic into sentences verbatim: a subject, not a brief.
MAX_TOPIC_CHARS = 100
# About ten minutes of narration: far beyond a short, still a bounded amount of work.
MAX_TEXT_CHARS = 12_000

_ROLE = r"^[a-z][a-z0-9_]{0,31}$"


def _has_word(value: str) -> str:
    if not any(ch.isalnum() for ch in value):
        raise ValueError("must contain at least one letter or digit")
    return value


# Text that says something: stripped (model config), with a letter or digit.
_Words = Annotated[str, AfterValidator(_has_word)]


class ScriptScene(BaseModel):
    """One scene: ``text`` is spoken and captioned; ``visual_prompt`` describes its
    image (never text in the image: captions are burned separately)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    role: Annotated[str, StringConstraints(pattern=_ROLE)]
    text: _Words = Field(min_length=1, max_length=MAX_SCENE_CHARS)
    visual_prompt: _Words = Field(min_length=1, max_length=400)
    on_screen_text: str | None = Field(default=None, max_length=80)
    speaker: str | None = Field(default=None, max_length=40)
    emphasis: list[Annotated[str, StringConstraints(min_length=1, max_length=40)]] = Field(
        default_factory=list, max_length=6
    )

    @field_validator("on_screen_text", "speaker", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        # Language models write "" where they mean nothing.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @property
    def word_count(self) -> int:
        return count_words(self.text)


class Script(BaseModel):
    """A title and 1..``MAX_SCENES`` scenes, in order."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    title: _Words = Field(min_length=1, max_length=120)
    scenes: list[ScriptScene] = Field(min_length=1, max_length=MAX_SCENES)

    @property
    def word_count(self) -> int:
        return sum(scene.word_count for scene in self.scenes)

    def estimated_seconds(self, words_per_second: float) -> float:
        """Narration length at ``words_per_second`` (the template's pacing)."""
        return self.word_count / words_per_second

    @property
    def narration(self) -> str:
        return " ".join(scene.text for scene in self.scenes)


def script_json_schema(template: Template | None = None) -> dict[str, Any]:
    """A JSON schema of ``Script`` for OpenAI structured outputs with ``strict: true``.

    Strict mode accepts a subset of JSON Schema: every object lists all its
    properties as required and sets ``additionalProperties: false``, optional values
    are a union with ``null``. Length limits are left to descriptions (several
    OpenAI-compatible servers reject or ignore ``maxLength``) and enforced when the
    answer is validated with ``Script``. With a template, ``role`` is an enum of its
    roles.
    """
    role: dict[str, Any] = {"type": "string", "description": "The template role of the scene."}
    if template is not None:
        role["enum"] = list(template.roles)
    scene = {
        "type": "object",
        "properties": {
            "role": role,
            "text": {
                "type": "string",
                "description": f"Narration spoken in the scene, 1 to {MAX_SCENE_CHARS} characters.",
            },
            "visual_prompt": {
                "type": "string",
                "description": "A concrete description of the scene's background image: "
                "subject, setting, style. No text, letters or logos in the image.",
            },
            "on_screen_text": {
                "type": ["string", "null"],
                "description": "A short headline shown on screen (at most 80 characters), or null.",
            },
            "speaker": {
                "type": ["string", "null"],
                "description": "Who says or sends this (chat templates), else null.",
            },
            "emphasis": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Up to 6 words of the text to emphasise in captions.",
            },
        },
        "required": ["role", "text", "visual_prompt", "on_screen_text", "speaker", "emphasis"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "title": {"type": "string", "description": "A catchy title, at most 120 characters."},
            "scenes": {"type": "array", "items": scene, "description": "The scenes, in order."},
        },
        "required": ["title", "scenes"],
        "additionalProperties": False,
    }


# --- Fitting a script to its template -------------------------------------------------


def _roles_fit(template: Template, roles: Sequence[str]) -> bool:
    """Whether ``roles`` follow the structure's order with each count in range."""
    position = {role: i for i, role in enumerate(template.roles)}
    if any(role not in position for role in roles):
        return False
    indexes = [position[role] for role in roles]
    if indexes != sorted(indexes):
        return False
    return all(
        spec.min_count <= roles.count(spec.role) <= spec.max_count for spec in template.structure
    )


def fit_to_template(script: Script, template: Template) -> Script:
    """``script`` within the template's scene range and roles.

    Surplus scenes are dropped from the end of the body, keeping the closing roles
    (outro) that follow the last repeating role; roles that do not follow the
    structure are reassigned by position. Raises ``InvalidRequest`` when there are
    fewer scenes than the template needs.
    """
    scenes = list(script.scenes)
    if len(scenes) < template.min_scenes:
        raise InvalidRequest(
            f"the script has {len(scenes)} scenes; template {template.name} needs at least "
            f"{template.min_scenes}",
            param="scenes",
        )
    if len(scenes) > template.max_scenes:
        repeating = [i for i, spec in enumerate(template.structure) if spec.repeats]
        tail_roles = template.structure[repeating[-1] + 1 :] if repeating else []
        tail = min(sum(spec.max_count for spec in tail_roles), template.max_scenes - 1)
        keep = template.max_scenes - tail
        scenes = scenes[:keep] + (scenes[len(scenes) - tail :] if tail else [])
    roles = [scene.role for scene in scenes]
    if not _roles_fit(template, roles):
        roles = template.assign_roles(len(scenes))
        scenes = [s.model_copy(update={"role": r}) for s, r in zip(scenes, roles, strict=True)]
    return Script(title=script.title, scenes=scenes)


def chat_messages(script: Script, upto: int | None = None) -> list[tuple[str, str]]:
    """The (speaker, message) pairs of a chat script, through scene ``upto``
    (inclusive; default all): what the chat screenshot of that scene shows."""
    last = len(script.scenes) if upto is None else upto + 1
    return [
        (scene.speaker or "", scene.on_screen_text or scene.text) for scene in script.scenes[:last]
    ]


def check_target_seconds(template: Template, target_seconds: float) -> float:
    """``target_seconds`` if the template accepts it; raises ``InvalidRequest``."""
    pacing = template.pacing
    if not (
        math.isfinite(target_seconds)
        and pacing.min_target_s <= target_seconds <= pacing.max_target_s
    ):
        raise InvalidRequest(
            f"target_seconds for template {template.name} must be within "
            f"{pacing.min_target_s:g}-{pacing.max_target_s:g}, not {target_seconds!r}",
            param="target_seconds",
        )
    return float(target_seconds)


def _invalid(exc: ValidationError, prefix: str) -> InvalidRequest:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    where = ".".join(part for part in (prefix, loc) if part) or "script"
    return InvalidRequest(f"{where}: {first['msg']}", code="invalid_script", param=where)


# --- User scripts ---------------------------------------------------------------------

_SPEAKER_PREFIX = re.compile(r"^\s*([A-Z][\w .'-]{0,30}?)\s*:\s+(\S.*)$", re.S)


def user_script(
    template: Template, scenes: Sequence[str] | Script, *, title: str | None = None
) -> Script:
    """A validated script from the user's own scenes.

    ``scenes`` is a ``Script`` (validated again, roles fitted to the structure) or one
    narration string per scene: roles are assigned by position, image prompts made
    from each scene's keywords and, for chat templates, a ``Name: message`` prefix
    becomes the speaker. The scene count is the user's (up to ``MAX_SCENES``), not
    the template's range. Raises ``InvalidRequest`` (code ``invalid_script``, the
    offending field as ``param``).
    """
    if isinstance(scenes, Script):
        try:
            script = Script.model_validate(scenes.model_dump())
        except ValidationError as exc:
            raise _invalid(exc, "script") from exc
        roles = [scene.role for scene in script.scenes]
        if all(role in template.roles for role in roles):
            return script
        fixed = template.assign_roles(len(script.scenes))
        return script.model_copy(
            update={
                "scenes": [
                    s.model_copy(update={"role": r})
                    for s, r in zip(script.scenes, fixed, strict=True)
                ]
            }
        )
    if isinstance(scenes, str):
        raise InvalidRequest("scenes must be a list of strings", param="scenes")
    texts = [str(text).strip() for text in scenes]
    if not 1 <= len(texts) <= MAX_SCENES:
        raise InvalidRequest(
            f"a script has 1 to {MAX_SCENES} scenes, not {len(texts)}", param="scenes"
        )
    roles = template.assign_roles(len(texts))
    style = template.visual.prompt_style
    context = keywords(" ".join(texts), 2)
    built: list[dict[str, Any]] = []
    for position, (text, role) in enumerate(zip(texts, roles, strict=True)):
        speaker = None
        if template.visual.renderer == "chat":
            speaker, text = _split_speaker(text, template, role, position)
        built.append(
            {
                "role": role,
                "text": text,
                "visual_prompt": _visual_prompt(text, context, style),
                "speaker": speaker,
                "emphasis": keywords(text, 1),
            }
        )
    head = title or (split_sentences(texts[0]) or [texts[0]])[0]
    try:
        return Script.model_validate({"title": _short_title(head), "scenes": built})
    except ValidationError as exc:
        raise _invalid(exc, "") from exc


def _split_speaker(text: str, template: Template, role: str, index: int) -> tuple[str, str]:
    match = _SPEAKER_PREFIX.match(text)
    if match:
        return match.group(1).strip(), match.group(2).strip()
    # No prefix: the template's senders by position, first choice of each name.
    spec = template.role_spec(role)
    speakers = spec.speakers or next(s.speakers for s in template.structure if s.speakers)
    choices = {k: v[0] for k, v in template.choices.items()}
    return speakers[index % len(speakers)].format_map(_Literal(choices)), text


def _short_title(text: str, max_words: int = 10) -> str:
    words = text.split()
    title = " ".join(words[:max_words])
    if len(words) > max_words:
        title = title.rstrip(",;:.") + "…"
    return title[:120]


def _visual_prompt(text: str, context: Sequence[str], style: str) -> str:
    """An image prompt from a scene's own telling words, topped up from the whole
    script's (``context``) when the scene has few, then the template's style."""
    words = keywords(text, 3)
    if len(words) < 2:
        words += [w for w in context if w.lower() not in {x.lower() for x in words}]
    subject = ", ".join(words[:4]) or "abstract scene"
    return "; ".join(p for p in (subject, style) if p)[:400]


class _Literal(dict[str, str]):
    # format_map values for a name nobody defined: keep the placeholder visible
    # rather than raise mid-script (templates are checked at load, so only a user's
    # stray braces reach this).
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


# --- Offline scripter -----------------------------------------------------------------

_NUMBER_TEXT = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen twenty"
)
_ORDINAL_TEXT = (
    "zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh "
    "twelfth thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth "
    "nineteenth twentieth"
)
_NUMBER_WORDS = _NUMBER_TEXT.split()
_ORDINALS = _ORDINAL_TEXT.split()


def _number_word(n: int) -> str:
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def _ordinal(n: int) -> str:
    if 0 <= n < len(_ORDINALS):
        return _ORDINALS[n]
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _rng(*parts: object) -> random.Random:
    # A stable integer seed from the inputs (not hash(), which is salted per process).
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class _Deck:
    """Entries drawn without replacement in a seeded order, reshuffled when spent,
    so neighbouring scenes do not repeat an entry while any is unused."""

    def __init__(self, entries: Sequence[str], rng: random.Random, shuffle: bool = True) -> None:
        self._entries = list(entries)
        self._rng = rng
        self._shuffle = shuffle
        self._queue: list[str] = []

    def draw(self) -> str:
        if not self._queue:
            self._queue = list(self._entries)
            if self._shuffle:
                self._rng.shuffle(self._queue)
        return self._queue.pop(0)


class _SceneValues(dict[str, str]):
    """Placeholder values of one scene: built-ins and choices given, pool entries drawn
    from the script's decks on first use (so one scene repeats its own draw)."""

    def __init__(self, base: Mapping[str, str], pools: Mapping[str, _Deck]) -> None:
        super().__init__(base)
        self._pools = pools

    def __missing__(self, key: str) -> str:
        deck = self._pools.get(key)
        if deck is None:
            raise KeyError(key)
        value = deck.draw().format_map(_Literal(self))
        self[key] = value
        return value


@dataclass
class _Draft:
    role: RoleSpec
    values: _SceneValues
    sentences: list[str]
    extras: _Deck | None
    max_words: int
    words: int = field(init=False)

    def __post_init__(self) -> None:
        self.words = count_words(" ".join(self.sentences))


def _topic_text(topic: str) -> str:
    topic = " ".join(topic.split()).strip(" .!?;:,")
    if not topic or not any(ch.isalnum() for ch in topic):
        raise InvalidRequest("topic must contain words", param="topic")
    if len(topic) > MAX_TOPIC_CHARS:
        raise InvalidRequest(f"topic is longer than {MAX_TOPIC_CHARS} characters", param="topic")
    return topic


def offline_script(
    template: Template,
    *,
    topic: str | None = None,
    text: str | None = None,
    target_seconds: float | None = None,
    seed: int = 0,
) -> Script:
    """A script without network: from ``topic`` (template patterns, sized to
    ``target_seconds``, default the template's) or from the user's ``text`` (cut into
    scenes; its length is the user's and ``target_seconds`` is ignored; a ``topic``
    given too becomes the title and steers the image prompts). Deterministic in its
    inputs.

    Raises ``InvalidRequest`` when neither is given, the topic is empty or over
    ``MAX_TOPIC_CHARS``, the text is too long for ``MAX_SCENES`` scenes, or
    ``target_seconds`` is outside the template's range.
    """
    if text is not None and text.strip():
        return _script_from_text(template, text, topic=topic)
    if topic is None:
        raise InvalidRequest("give a topic or a text", param="topic")
    target = check_target_seconds(
        template, template.pacing.default_target_s if target_seconds is None else target_seconds
    )
    return _script_from_topic(template, _topic_text(topic), target, seed)


def _script_from_topic(template: Template, topic: str, target_s: float, seed: int) -> Script:
    pacing = template.pacing
    target_words = pacing.words(target_s)
    best: tuple[float, float, list[_Draft], dict[str, str]] | None = None
    for scenes in range(template.min_scenes, template.max_scenes + 1):
        drafts, fixed = _draft(template, topic, scenes, seed)
        _pad(drafts, template, target_words)
        total = sum(d.words for d in drafts)
        ideal = pacing.words(pacing.scene_s)
        # Closest total first; among equals, scenes nearest the preferred length.
        key = (abs(total - target_words), abs(total / scenes - ideal))
        if best is None or key < best[:2]:
            best = (*key, drafts, fixed)
    assert best is not None  # the range is never empty (validated with the template)
    drafts, fixed = best[2], best[3]
    scenes_out: list[dict[str, Any]] = []
    for position, draft in enumerate(drafts):
        text = " ".join(draft.sentences)
        spec = draft.role
        lead = spec.visual.format_map(draft.values)
        speaker = None
        if spec.speakers:
            speaker = spec.speakers[position % len(spec.speakers)].format_map(draft.values)
        chat = template.visual.renderer == "chat"
        scenes_out.append(
            {
                "role": spec.role,
                "text": text,
                # The role's own image pattern, not keywords: the offline text is
                # formulaic, its pattern says more about the picture than its words.
                "visual_prompt": "; ".join(p for p in (lead, template.visual.prompt_style) if p),
                "on_screen_text": spec.on_screen.format_map(draft.values)
                if spec.on_screen
                else None,
                "speaker": speaker,
                "emphasis": [] if chat else keywords(text, 1, exclude=topic.split()),
            }
        )
    title = _capital(template.title_pattern.format_map(fixed))
    return Script.model_validate({"title": title[:120], "scenes": scenes_out})


def _counting(count: int, index: int) -> dict[str, str]:
    rank = count - index + 1
    return {
        "count": str(count),
        "count_word": _number_word(count),
        "Count_word": _capital(_number_word(count)),
        "index": str(index),
        "index_word": _number_word(index),
        "ordinal": _ordinal(index),
        "Ordinal": _capital(_ordinal(index)),
        "rank": str(rank),
        "rank_ordinal": _ordinal(rank),
    }


def _draft(
    template: Template, topic: str, scenes: int, seed: int
) -> tuple[list[_Draft], dict[str, str]]:
    """Scenes with their opening lines only, for a script of ``scenes`` scenes."""
    rng = _rng("vidpipe-shorts-v1", template.name, topic.lower(), scenes, seed)
    counts = template.role_counts(scenes)
    main = next(
        (n for spec, n in zip(template.structure, counts, strict=True) if spec.repeats),
        max(counts),
    )
    fixed: dict[str, str] = {"topic": topic, "Topic": _capital(topic), **_counting(main, 1)}
    for name, entries in template.choices.items():
        fixed[name] = rng.choice(entries).format_map(_Literal(fixed))
    pools = {name: _Deck(entries, rng) for name, entries in template.pools.items()}
    max_words = math.floor(template.pacing.max_scene_s * template.pacing.words_per_second)
    drafts: list[_Draft] = []
    for spec, count in zip(template.structure, counts, strict=True):
        lines = _Deck(spec.lines, rng, shuffle=spec.pick == "random")
        extras = _Deck(spec.extras, rng, shuffle=spec.pick == "random") if spec.extras else None
        for i in range(1, count + 1):
            # In a repeating role, count/index/rank are the role's own ("number 3 of
            # 5"); in a single scene (the hook) they speak of the main list.
            base = {**fixed, **(_counting(count, i) if spec.repeats else {})}
            # An opening line too long for a scene (a long topic in a long pattern) is
            # drawn again, with fresh pool entries; failing that, the shortest is kept.
            options: list[tuple[int, str, _SceneValues]] = []
            for _ in range(len(spec.lines) + 2 if spec.pick == "random" else 1):
                values = _SceneValues(base, pools)
                line = _capital(lines.draw().format_map(values))
                options.append((count_words(line), line, values))
                if options[-1][0] <= max_words:
                    break
            _, line, values = min(options, key=lambda option: option[0])
            drafts.append(_Draft(spec, values, [line], extras, max_words))
    return drafts, fixed


def _pad(drafts: list[_Draft], template: Template, target_words: int) -> None:
    """Add follow-up sentences: first to scenes under the minimum length, then to the
    shortest scenes while that brings the total closer to ``target_words``."""
    pacing = template.pacing
    min_words = math.ceil(pacing.min_scene_s * pacing.words_per_second)

    def take(draft: _Draft, gap: int | None) -> bool:
        """Add the role's next follow-up sentence to ``draft`` if it fits the scene and,
        when ``gap`` (words still wanted) is given, brings the total closer."""
        if draft.extras is None:
            return False
        # Decks are shared by a role's scenes: formatting with this scene's values
        # makes the drawn sentence this scene's.
        sentence = _capital(draft.extras.draw().format_map(draft.values))
        words = count_words(sentence)
        if (
            sentence in draft.sentences
            or draft.words + words > draft.max_words
            or (gap is not None and abs(gap - words) >= abs(gap))
        ):
            return False
        draft.sentences.append(sentence)
        draft.words += words
        return True

    for draft in drafts:
        tries = 0
        while draft.words < min_words and tries < 8:
            tries += 1
            take(draft, None)
    total = sum(d.words for d in drafts)
    # Rounds over the scenes, shortest first; stop when a round adds nothing.
    while total < target_words:
        added = False
        for draft in sorted(drafts, key=lambda d: (d.words, drafts.index(d))):
            if total >= target_words:
                break
            before = draft.words
            if take(draft, target_words - total):
                total += draft.words - before
                added = True
        if not added:
            break


def _script_from_text(template: Template, text: str, *, topic: str | None) -> Script:
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidRequest(
            f"text is longer than {MAX_TEXT_CHARS} characters", code="text_too_long", param="text"
        )
    pacing = template.pacing
    bounds = {
        "min_words": math.ceil(pacing.min_scene_s * pacing.words_per_second),
        "ideal_words": pacing.words(pacing.scene_s),
        "max_words": math.floor(pacing.max_scene_s * pacing.words_per_second),
        "max_chars": MAX_SCENE_CHARS,
    }
    if template.visual.renderer == "chat":
        # A chat is one message per line; only an overlong message is cut.
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        pieces: list[str] = []
        for line in lines:
            match = _SPEAKER_PREFIX.match(line)
            prefix, body = (match.group(1) + ": ", match.group(2)) if match else ("", line)
            pieces += [prefix + part for part in pack_scenes(split_sentences(body), **bounds)]
    else:
        pieces = pack_scenes(split_sentences(text), **bounds)
    if not pieces:
        raise InvalidRequest("text must contain words", param="text")
    if len(pieces) > MAX_SCENES:
        raise InvalidRequest(
            f"text makes {len(pieces)} scenes; a short has at most {MAX_SCENES}",
            code="text_too_long",
            param="text",
        )
    title = _topic_text(topic) if topic else None
    script = user_script(template, pieces, title=_capital(title) if title else None)
    if topic:
        # Steer every image prompt to the topic: a scene's own keywords may be far
        # from what the short is about.
        context = title
        script = script.model_copy(
            update={
                "scenes": [
                    s.model_copy(update={"visual_prompt": f"{context}; {s.visual_prompt}"[:400]})
                    for s in script.scenes
                ]
            }
        )
    return script
