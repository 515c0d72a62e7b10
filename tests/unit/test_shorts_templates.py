"""Short templates: every shipped file validates, bad data is refused clearly, lookups."""

from __future__ import annotations

import copy
import importlib
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from vidpipe.errors import InvalidRequest
from vidpipe.media.alignment import WordTiming
from vidpipe.media.captions_timed import CaptionStyle
from vidpipe.shorts.templates import (
    ASPECT_SIZES,
    Template,
    TemplateError,
    UnknownTemplate,
    frame_size,
    get_template,
    list_templates,
    load_template_file,
    load_templates,
    parse_template,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = ROOT / "src" / "vidpipe" / "shorts" / "templates"
REQUIRED = {
    "story",
    "explainer",
    "top_n",
    "quote",
    "text_chat",
    "news_brief",
    "product_promo",
    "motivational",
    "fun_facts",
    "would_you_rather",
}


def raw(name: str = "fun_facts") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((TEMPLATE_DIR / f"{name}.json").read_text())
    return data


def test_every_shipped_template_loads_and_the_required_ones_exist() -> None:
    templates = list_templates()
    names = [t.name for t in templates]
    assert names == sorted(names)
    assert set(names) >= REQUIRED
    assert len(templates) >= 10
    files = sorted(p.stem for p in TEMPLATE_DIR.glob("*.json"))
    assert names == files


def test_templates_load_once() -> None:
    assert list_templates()[0] is list_templates()[0]
    assert get_template("quote") is get_template("quote")


@pytest.mark.parametrize("template", list_templates(), ids=lambda t: t.name)
def test_each_template_is_usable(template: Template) -> None:
    assert 1 <= template.min_scenes <= template.max_scenes
    pacing = template.pacing
    assert pacing.min_target_s <= pacing.default_target_s <= pacing.max_target_s
    for aspect, size in ASPECT_SIZES.items():
        style = template.caption_style(size)
        assert isinstance(style, CaptionStyle)
        assert (style.width_px, style.height_px) == size
        assert frame_size(aspect) == size
    assert len(template.visual.palette) >= 2
    assert template.defaults.aspect in ASPECT_SIZES
    public = template.public_dict()
    json.dumps(public)  # serialisable as is
    text = json.dumps(public)
    # The scripter's patterns stay private; the structure's shape is public.
    assert "lines" not in text
    assert "extras" not in text
    assert "pools" not in text
    assert [r["role"] for r in public["structure"]] == list(template.roles)
    assert public["scenes"] == {"min": template.min_scenes, "max": template.max_scenes}


def test_unknown_template_names_the_valid_ones() -> None:
    with pytest.raises(UnknownTemplate) as caught:
        get_template("tiktok_dance")
    error = caught.value
    assert isinstance(error, InvalidRequest)
    assert error.code == "unknown_template"
    assert error.http_status == 422
    assert error.param == "template"
    assert "fun_facts" in error.valid_names
    assert "fun_facts" in error.message
    assert "tiktok_dance" in error.message


def _set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    target: Any = data
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    last = keys[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return data


BAD = [
    ("extra key", "surprise", True, "surprise"),
    ("unknown placeholder", "structure.1.lines.0", "Fact {index}: {nonsense}", "nonsense"),
    ("format spec", "structure.1.lines.0", "Fact {index:>3}", "format spec"),
    ("broken braces", "structure.1.lines.0", "Fact {index", "role fact: bad pattern"),
    ("counts reversed", "structure.1.min_count", 9, "min_count"),
    ("bad colour", "captions.text_colour", "white", "text_colour"),
    ("bad palette colour", "visual.palette.0", "#12345", "palette"),
    ("unknown motion", "visual.motions.0", "spin", "motions"),
    ("unknown transition", "visual.transition", "wipe", "transition"),
    ("comma in font", "captions.font", "DejaVu, Sans", "font"),
    ("pacing unordered", "pacing.scene_s", 20.0, "scene_s"),
    ("target unreachable", "pacing.max_target_s", 600.0, "max_target_s"),
    ("bad aspect", "defaults.aspect", "4:3", "aspect"),
    ("bad name", "name", "Fun Facts", "name"),
    ("duplicate role", "structure.2.role", "hook", "unique"),
    ("empty lines", "structure.0.lines", [], "lines"),
]


@pytest.mark.parametrize(("case", "path", "value", "mentions"), BAD, ids=[b[0] for b in BAD])
def test_bad_template_data_is_refused_with_a_clear_error(
    case: str, path: str, value: Any, mentions: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template(_set(raw(), path, value), source="bad.json")
    assert caught.value.code == "invalid_template"
    assert "bad.json" in caught.value.message
    assert mentions in caught.value.message


def test_a_pool_may_not_use_another_pool() -> None:
    data = raw()
    data["pools"]["reaction"] = ["see {followup}"]
    with pytest.raises(TemplateError, match="followup"):
        parse_template(data)


def test_file_errors(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(TemplateError, match=r"broken\.json: cannot read JSON"):
        load_template_file(tmp_path / "broken.json")
    (tmp_path / "broken.json").unlink()
    (tmp_path / "other.json").write_text(json.dumps(raw("quote")))
    with pytest.raises(TemplateError, match="must be 'other'"):
        load_template_file(tmp_path / "other.json")
    (tmp_path / "other.json").unlink()
    with pytest.raises(TemplateError, match="no templates"):
        load_templates(tmp_path)
    (tmp_path / "quote.json").write_text(json.dumps(raw("quote")))
    assert list(load_templates(tmp_path)) == ["quote"]


def test_templates_ship_as_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "shorts/templates/*.json" in config["tool"]["setuptools"]["package-data"]["vidpipe"]


ROLE_CASES = [
    (1, ["hook"]),
    (2, ["hook", "outro"]),
    (3, ["hook", "fact", "outro"]),
    (5, ["hook", "fact", "fact", "fact", "outro"]),
    (10, ["hook", *["fact"] * 8, "outro"]),
    (13, ["hook", *["fact"] * 11, "outro"]),  # a user's script may exceed the range
]


@pytest.mark.parametrize(("scenes", "roles"), ROLE_CASES)
def test_assign_roles(scenes: int, roles: list[str]) -> None:
    assert get_template("fun_facts").assign_roles(scenes) == roles


def test_assign_roles_with_optional_and_several_repeating_roles() -> None:
    promo = get_template("product_promo")  # problem, product, feature 2-4, proof 0-1, cta
    assert promo.assign_roles(5) == ["problem", "product", "feature", "feature", "cta"]
    assert promo.assign_roles(6) == ["problem", "product", "feature", "feature", "feature", "cta"]
    assert promo.assign_roles(8)[-2:] == ["proof", "cta"]
    with pytest.raises(InvalidRequest):
        promo.assign_roles(0)


def test_motion_cycles_and_caption_style_scales() -> None:
    template = get_template("fun_facts")
    motions = template.visual.motions
    assert [template.motion_for(i) for i in range(len(motions) + 1)] == [*motions, motions[0]]
    tall = template.caption_style((1080, 1920))
    small = template.caption_style((540, 960))
    assert small.size_px == round(tall.size_px / 2)
    assert tall.bottom_margin_pct == template.captions.bottom_margin_pct


def test_frame_size_refuses_unknown_aspects() -> None:
    with pytest.raises(InvalidRequest) as caught:
        frame_size("4:3")
    assert caught.value.param == "aspect"


def test_captions_to_ass_use_the_template_look() -> None:
    words = [
        WordTiming(w, i * 0.4, i * 0.4 + 0.3)
        for i, w in enumerate(["one", "two", "three", "four", "five"])
    ]
    spec = get_template("fun_facts").captions  # 3 words a line, highlight mode
    ass = spec.to_ass(words, (1080, 1920))
    assert "PlayResY: 1920" in ass
    assert f"Caption,{spec.font},{spec.size_px}," in ass
    dialogues = [line for line in ass.splitlines() if line.startswith("Dialogue:")]
    assert len(dialogues) == 5  # one event per word in highlight mode
    assert dialogues[0].endswith("two three")
    karaoke = get_template("quote").captions.to_ass(words, (1080, 1080))
    assert "\\k" in karaoke


@pytest.mark.parametrize(
    "module",
    [
        "vidpipe.shorts.templates",
        "vidpipe.shorts.script",
        "vidpipe.shorts.text",
        "vidpipe.shorts.llm",
        "vidpipe.shorts.visuals",
        "vidpipe.testing.fakes.llm",
    ],
)
def test_public_api_is_declared(module: str) -> None:
    loaded = importlib.import_module(module)
    assert all(hasattr(loaded, name) for name in loaded.__all__)
