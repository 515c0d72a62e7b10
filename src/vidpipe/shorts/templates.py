"""Short templates as data: one JSON file per template under ``shorts/templates/``.

A template says what a kind of short is made of (its scene structure: ordered roles,
each with a count range and the text patterns the offline scripter fills), how fast
it is narrated (pacing), how its captions and visuals look, and its defaults (voice,
aspect, music). Files are validated with pydantic (unknown keys refused, placeholders
in patterns checked against the names the scripter provides) once, on first use.
"""

from __future__ import annotations

import functools
import json
import string
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from vidpipe.errors import ConfigError, InvalidRequest
from vidpipe.media.alignment import WordTiming
from vidpipe.media.captions_timed import CaptionStyle, group_words, to_ass
from vidpipe.media.compose_plan import Motion, Transition

__all__ = [
    "ASPECT_SIZES",
    "BUILTIN_PLACEHOLDERS",
    "MAX_SCENES",
    "Aspect",
    "CaptionSpec",
    "Defaults",
    "Pacing",
    "RoleSpec",
    "Template",
    "TemplateError",
    "UnknownTemplate",
    "VisualSpec",
    "frame_size",
    "get_template",
    "list_templates",
    "load_template_file",
    "load_templates",
    "parse_template",
]

Aspect = Literal["9:16", "16:9", "1:1"]
ASPECT_SIZES: Mapping[str, tuple[int, int]] = {
    "9:16": (1080, 1920),
    "16:9": (1920, 1080),
    "1:1": (1080, 1080),
}
# A short longer than this many scenes is a slideshow, and each scene costs a visual,
# a narration and a composed segment.
MAX_SCENES = 40

# Names the offline scripter fills in any pattern, besides a template's own pools and
# choices. ``index``/``ordinal`` count the scenes of one role (1-based); ``count`` is
# how many scenes that role has in the script.
BUILTIN_PLACEHOLDERS = frozenset(
    {
        "topic",
        "Topic",
        "count",
        "count_word",
        "Count_word",
        "index",
        "index_word",
        "ordinal",
        "Ordinal",
        "rank",
        "rank_ordinal",
    }
)

_NAME = r"^[a-z][a-z0-9_]{1,39}$"
_COLOUR = r"^#[0-9A-Fa-f]{6}([0-9A-Fa-f]{2})?$"
Colour = Annotated[str, StringConstraints(pattern=_COLOUR)]
Pattern = Annotated[str, StringConstraints(min_length=1, max_length=400)]
RoleName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class TemplateError(ConfigError):
    """A template file is missing, not JSON, or does not validate."""

    code = "invalid_template"


class UnknownTemplate(InvalidRequest):
    """A request named a template that does not exist; ``valid_names`` lists those that do."""

    code = "unknown_template"

    def __init__(self, name: str, valid_names: Iterable[str]) -> None:
        self.valid_names = tuple(sorted(valid_names))
        super().__init__(
            f"unknown template {name!r}; valid templates: {', '.join(self.valid_names)}",
            param="template",
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _placeholders(pattern: str) -> set[str]:
    """The field names of a ``str.format`` pattern; raises ValueError on bad syntax."""
    names: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise ValueError(f"bad pattern {pattern!r}: {exc}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field.isidentifier():
            raise ValueError(f"placeholder {{{field}}} in {pattern!r} is not a plain name")
        if spec or conversion:
            raise ValueError(f"placeholder {{{field}}} in {pattern!r} takes no format spec")
        names.add(field)
    return names


class RoleSpec(_Strict):
    """One role of the scene structure, e.g. the hook, an item of a list, the outro.

    ``lines`` are alternative opening sentences of a scene of this role (one is
    chosen: at random by the seed, or in order when ``pick`` is ``sequence``, as a
    chat's messages must be); ``extras`` are follow-up sentences added to reach the
    target length. ``visual`` is the pattern of the scene's image prompt,
    ``on_screen`` of an optional short headline, and ``speakers`` (chat templates)
    the senders, chosen by the scene's position in the whole script (so give every
    role of a two-person chat the same two names: they then alternate throughout).
    """

    role: RoleName
    min_count: int = Field(default=1, ge=0, le=MAX_SCENES)
    max_count: int = Field(default=1, ge=1, le=MAX_SCENES)
    pick: Literal["random", "sequence"] = "random"
    lines: list[Pattern] = Field(min_length=1, max_length=50)
    extras: list[Pattern] = Field(default_factory=list, max_length=50)
    visual: Pattern
    on_screen: Pattern | None = None
    speakers: list[Pattern] = Field(default_factory=list, max_length=10)
    guidance: str = Field(default="", max_length=400)

    @model_validator(mode="after")
    def _counts(self) -> RoleSpec:
        if self.min_count > self.max_count:
            raise ValueError(
                f"role {self.role}: min_count {self.min_count} > max_count {self.max_count}"
            )
        return self

    @property
    def repeats(self) -> bool:
        return self.max_count > 1 or self.min_count != self.max_count

    def patterns(self) -> list[str]:
        return [*self.lines, *self.extras, self.visual, *self.speakers] + (
            [self.on_screen] if self.on_screen else []
        )


class Pacing(_Strict):
    """Narration speed and scene lengths; the offline scripter sizes text with them."""

    words_per_second: float = Field(ge=1.0, le=5.0)
    min_scene_s: float = Field(gt=0, le=30)
    scene_s: float = Field(gt=0, le=60, description="Preferred scene length.")
    max_scene_s: float = Field(gt=0, le=60)
    default_target_s: float = Field(gt=0, le=600)
    min_target_s: float = Field(gt=0, le=600)
    max_target_s: float = Field(gt=0, le=600)

    @model_validator(mode="after")
    def _ordered(self) -> Pacing:
        if not self.min_scene_s <= self.scene_s <= self.max_scene_s:
            raise ValueError("pacing needs min_scene_s <= scene_s <= max_scene_s")
        if not self.min_target_s <= self.default_target_s <= self.max_target_s:
            raise ValueError("pacing needs min_target_s <= default_target_s <= max_target_s")
        return self

    def words(self, seconds: float) -> int:
        """Narration words that take about ``seconds`` at this pace."""
        return max(1, round(seconds * self.words_per_second))


class CaptionSpec(_Strict):
    """Caption look: the fields of ``CaptionStyle`` for a 1080-pixel-wide frame, plus
    how words are grouped into lines (``words_per_line``, ``max_chars``)."""

    enabled: bool = True
    font: str = Field(min_length=1, max_length=80)
    size_px: int = Field(ge=8, le=400)
    bold: bool = True
    text_colour: Colour
    highlight_colour: Colour
    outline_colour: Colour = "#000000"
    shadow_colour: Colour = "#00000080"
    outline_px: float = Field(default=6.0, ge=0, le=40)
    shadow_px: float = Field(default=0.0, ge=0, le=40)
    bottom_margin_pct: float = Field(ge=0, lt=100)
    max_width_pct: float = Field(gt=0, le=100)
    words_per_line: int = Field(ge=1, le=12)
    max_chars: int = Field(ge=4, le=80)
    mode: Literal["highlight", "karaoke"] = "highlight"

    @model_validator(mode="after")
    def _style_is_valid(self) -> CaptionSpec:
        # Build the real style once so that anything CaptionStyle refuses (a comma in
        # the font name, say) is refused when the template loads, not mid-render.
        try:
            self.style((1080, 1920))
        except InvalidRequest as exc:
            raise ValueError(exc.message) from exc
        return self

    def style(self, size: tuple[int, int]) -> CaptionStyle:
        """The ``CaptionStyle`` for a frame of ``size`` (width, height).

        Pixel sizes are given for a 1080-pixel short side and scale with it, so a
        16:9 or 1:1 frame gets captions of the same visual weight.
        """
        width, height = size
        scale = min(width, height) / 1080
        return CaptionStyle(
            font=self.font,
            size_px=max(8, round(self.size_px * scale)),
            bold=self.bold,
            text_colour=self.text_colour,
            highlight_colour=self.highlight_colour,
            outline_colour=self.outline_colour,
            shadow_colour=self.shadow_colour,
            outline_px=self.outline_px * scale,
            shadow_px=self.shadow_px * scale,
            width_px=width,
            height_px=height,
            bottom_margin_pct=self.bottom_margin_pct,
            max_width_pct=self.max_width_pct,
        )

    def to_ass(self, words: Sequence[WordTiming], size: tuple[int, int]) -> str:
        """The ASS captions of ``words`` in this look for a frame of ``size``: grouped
        into lines of ``words_per_line`` / ``max_chars``, drawn in ``mode``."""
        lines = group_words(words, max_words=self.words_per_line, max_chars=self.max_chars)
        return to_ass(lines, self.style(size), mode=self.mode)


class VisualSpec(_Strict):
    """How scenes look: ``procedural`` stills or ``chat`` screenshots, animated by
    ``motions`` (cycled over the scenes) and joined by ``transition``."""

    renderer: Literal["procedural", "chat"] = "procedural"
    palette: list[Colour] = Field(min_length=2, max_length=8)
    motions: list[Motion] = Field(min_length=1, max_length=8)
    transition: Transition = "fade"
    transition_s: float = Field(default=0.4, ge=0, le=2)
    prompt_style: str = Field(default="", max_length=200)


class Defaults(_Strict):
    voice: str | None = Field(default=None, max_length=80)
    aspect: Aspect = "9:16"
    music: bool = True
    music_gain_db: float = Field(default=-18.0, ge=-60, le=0)


class Template(_Strict):
    """One kind of short. See the module docstring; ``public_dict`` is its API view."""

    name: Annotated[str, StringConstraints(pattern=_NAME)]
    title: str = Field(min_length=1, max_length=80)
    description: str = Field(min_length=1, max_length=400)
    title_pattern: Pattern
    llm_guidance: str = Field(default="", max_length=1000)
    structure: list[RoleSpec] = Field(min_length=1, max_length=10)
    pools: dict[RoleName, list[Pattern]] = Field(default_factory=dict)
    choices: dict[RoleName, list[Pattern]] = Field(default_factory=dict)
    pacing: Pacing
    captions: CaptionSpec
    visual: VisualSpec
    defaults: Defaults = Field(default_factory=Defaults)

    @field_validator("pools", "choices")
    @classmethod
    def _non_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for key, entries in value.items():
            if not entries:
                raise ValueError(f"{key!r} has no entries")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Template:
        roles = [spec.role for spec in self.structure]
        if len(set(roles)) != len(roles):
            raise ValueError(f"roles must be unique, got {roles}")
        if not 1 <= self.min_scenes <= self.max_scenes <= MAX_SCENES:
            raise ValueError(
                f"scene count range {self.min_scenes}..{self.max_scenes} "
                f"must lie in 1..{MAX_SCENES}"
            )
        clash = (set(self.pools) | set(self.choices)) & BUILTIN_PLACEHOLDERS
        clash |= set(self.pools) & set(self.choices)
        if clash:
            raise ValueError(f"pool/choice names clash: {sorted(clash)}")
        # Choices are fixed once per script, pools per scene: a choice may use
        # built-ins, a pool built-ins and choices, a pattern anything. No cycles.
        self._check_names(
            [p for v in self.choices.values() for p in v], BUILTIN_PLACEHOLDERS, "choice"
        )
        self._check_names(
            [p for v in self.pools.values() for p in v],
            BUILTIN_PLACEHOLDERS | set(self.choices),
            "pool",
        )
        known = BUILTIN_PLACEHOLDERS | set(self.choices) | set(self.pools)
        self._check_names([self.title_pattern], BUILTIN_PLACEHOLDERS | set(self.choices), "title")
        for spec in self.structure:
            self._check_names(spec.patterns(), known, f"role {spec.role}")
        if self.visual.renderer == "chat" and not any(s.speakers for s in self.structure):
            raise ValueError("a chat template needs speakers on its roles")
        pacing = self.pacing
        if pacing.min_scene_s <= 2 * self.visual.transition_s:
            raise ValueError("min_scene_s must be longer than two transitions")
        # The target range must be reachable with the scene range and lengths.
        if pacing.max_target_s > self.max_scenes * pacing.max_scene_s:
            raise ValueError(
                f"max_target_s {pacing.max_target_s:g} needs more than {self.max_scenes} "
                f"scenes of at most {pacing.max_scene_s:g} s"
            )
        if pacing.min_target_s < self.min_scenes * pacing.min_scene_s:
            raise ValueError(
                f"min_target_s {pacing.min_target_s:g} is shorter than {self.min_scenes} "
                f"scenes of at least {pacing.min_scene_s:g} s"
            )
        return self

    @staticmethod
    def _check_names(patterns: Iterable[str], known: Iterable[str], where: str) -> None:
        allowed = set(known)
        for pattern in patterns:
            try:
                unknown = _placeholders(pattern) - allowed
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            if unknown:
                raise ValueError(
                    f"{where}: unknown placeholder(s) {sorted(unknown)} in {pattern!r}; "
                    f"allowed: {sorted(allowed)}"
                )

    # --- Derived ---------------------------------------------------------------------

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(spec.role for spec in self.structure)

    @property
    def min_scenes(self) -> int:
        return sum(spec.min_count for spec in self.structure)

    @property
    def max_scenes(self) -> int:
        return sum(spec.max_count for spec in self.structure)

    def role_spec(self, role: str) -> RoleSpec:
        for spec in self.structure:
            if spec.role == role:
                return spec
        raise KeyError(role)

    def role_counts(self, scenes: int) -> list[int]:
        """How many scenes of each role (in structure order) make ``scenes`` scenes.

        Every role gets its minimum, then repeating roles take the rest in turn up to
        their maximum. Beyond the template's range (a user's own script may be longer
        or shorter) the last repeating role takes the surplus, and a shortfall is
        taken from repeating roles first, then from the middle of the structure, so a
        one-scene script is its first role and a two-scene one its first and last.
        """
        if scenes < 1:
            raise InvalidRequest("a script needs at least one scene", param="scenes")
        counts = [spec.min_count for spec in self.structure]
        variable = [i for i, spec in enumerate(self.structure) if spec.repeats]
        remaining = scenes - sum(counts)
        while remaining > 0:
            grew = False
            for i in variable:
                if remaining and counts[i] < self.structure[i].max_count:
                    counts[i] += 1
                    remaining -= 1
                    grew = True
            if not grew:
                break
        if remaining > 0:
            last = variable[-1] if variable else len(counts) // 2
            counts[last] += remaining
        order = variable + [i for i in _middle_out(len(counts)) if i not in variable]
        while remaining < 0:
            for i in order:
                if counts[i] > 0:
                    counts[i] -= 1
                    remaining += 1
                    break
        return counts

    def assign_roles(self, scenes: int) -> list[str]:
        """The role of each of ``scenes`` scenes, in order (see ``role_counts``)."""
        counts = self.role_counts(scenes)
        return [spec.role for spec, n in zip(self.structure, counts, strict=True) for _ in range(n)]

    def motion_for(self, index: int) -> Motion:
        """The motion of scene ``index``: the template's sequence, cycled."""
        return self.visual.motions[index % len(self.visual.motions)]

    def caption_style(self, size: tuple[int, int]) -> CaptionStyle:
        return self.captions.style(size)

    def public_dict(self) -> dict[str, Any]:
        """What ``GET /v1/templates`` shows: everything a client chooses with, not the
        scripter's text patterns."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "structure": [
                {"role": s.role, "min_count": s.min_count, "max_count": s.max_count}
                for s in self.structure
            ],
            "scenes": {"min": self.min_scenes, "max": self.max_scenes},
            "pacing": self.pacing.model_dump(mode="json"),
            "captions": self.captions.model_dump(mode="json"),
            "visual": self.visual.model_dump(mode="json", exclude={"prompt_style"}),
            "defaults": self.defaults.model_dump(mode="json"),
        }


def _middle_out(length: int) -> list[int]:
    # Indexes from the centre outwards, so the first role (the hook) goes last and the
    # last role (the outro) just before it.
    centre = (length - 1) / 2
    return sorted(range(length), key=lambda i: (abs(i - centre), -i))


def frame_size(aspect: str) -> tuple[int, int]:
    """(width, height) of a frame of ``aspect``; raises ``InvalidRequest`` otherwise."""
    try:
        return ASPECT_SIZES[aspect]
    except KeyError:
        raise InvalidRequest(
            f"aspect must be one of {', '.join(ASPECT_SIZES)}, not {aspect!r}", param="aspect"
        ) from None


# --- Loading ---------------------------------------------------------------------------


def parse_template(data: Any, *, source: str = "<data>") -> Template:
    """Validate template data; raises ``TemplateError`` naming the source and fields."""
    try:
        return Template.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise TemplateError(f"template {source}: {problems}") from exc


def load_template_file(path: Path | Traversable) -> Template:
    """Read and validate one template file; its name must match the file name."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TemplateError(f"template {path.name}: cannot read JSON: {exc}") from exc
    template = parse_template(data, source=path.name)
    stem = path.name.removesuffix(".json")
    if template.name != stem:
        raise TemplateError(f"template {path.name}: name {template.name!r} must be {stem!r}")
    return template


def load_templates(directory: Path | Traversable) -> dict[str, Template]:
    """Every ``*.json`` template of ``directory``, by name."""
    found: dict[str, Template] = {}
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json") and entry.is_file():
            template = load_template_file(entry)
            found[template.name] = template
    if not found:
        raise TemplateError(f"no templates in {directory}")
    return found


@functools.cache
def _shipped() -> dict[str, Template]:
    # Loaded on first use, not at import (settings and files are read at start-up by
    # the entry points); the files are package data, so this works from a wheel too.
    return load_templates(resources.files("vidpipe.shorts").joinpath("templates"))


def list_templates() -> list[Template]:
    """The shipped templates, sorted by name."""
    return list(_shipped().values())


def get_template(name: str) -> Template:
    """The shipped template ``name``; raises ``UnknownTemplate`` (code
    ``unknown_template``, HTTP 422) listing the valid names."""
    templates = _shipped()
    try:
        return templates[name]
    except KeyError:
        raise UnknownTemplate(name, templates) from None
