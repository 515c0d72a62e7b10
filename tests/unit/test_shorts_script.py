"""Scripts: the model and its strict schema, the offline scripter, user scripts, text."""

from __future__ import annotations

import itertools
import math
import re

import pytest

from vidpipe.errors import InvalidRequest
from vidpipe.shorts.script import (
    MAX_SCENE_CHARS,
    Script,
    ScriptScene,
    chat_messages,
    fit_to_template,
    offline_script,
    script_json_schema,
    user_script,
)
from vidpipe.shorts.templates import MAX_SCENES, Template, get_template, list_templates
from vidpipe.shorts.text import count_words, keywords, pack_scenes, split_long, split_sentences
from vidpipe.testing.fakes.llm import strict_schema_problems

TOPICS = ("octopuses", "the Roman Empire", "budget travel in Japan")


def scene(role: str = "fact", text: str = "Octopuses have three hearts.") -> dict[str, object]:
    return {
        "role": role,
        "text": text,
        "visual_prompt": "an octopus",
        "on_screen_text": None,
        "speaker": None,
        "emphasis": [],
    }


def max_words(template: Template) -> int:
    return math.floor(template.pacing.max_scene_s * template.pacing.words_per_second)


def roles_follow_structure(template: Template, roles: list[str]) -> bool:
    order = [template.roles.index(r) for r in roles]
    counts_ok = all(
        spec.min_count <= roles.count(spec.role) <= spec.max_count for spec in template.structure
    )
    return order == sorted(order) and counts_ok


# --- Model and schema -----------------------------------------------------------------


def test_schema_is_strict_mode_compatible_and_matches_the_model() -> None:
    for template in (None, get_template("fun_facts")):
        schema = script_json_schema(template)
        assert strict_schema_problems(schema) == []
        assert set(schema["properties"]) == set(Script.model_fields)
        item = schema["properties"]["scenes"]["items"]
        assert set(item["properties"]) == set(ScriptScene.model_fields)
        assert item["required"] == list(item["properties"])
    enum = script_json_schema(get_template("fun_facts"))["properties"]["scenes"]["items"]
    assert enum["properties"]["role"]["enum"] == ["hook", "fact", "outro"]


def test_script_validation() -> None:
    script = Script.model_validate(
        {"title": "  Octopuses  ", "scenes": [scene(), {**scene(), "on_screen_text": "  "}]}
    )
    assert script.title == "Octopuses"
    assert script.scenes[1].on_screen_text is None  # blank means none
    assert script.word_count == 8
    assert script.estimated_seconds(2.0) == 4.0
    bad = [
        {"title": "x", "scenes": []},
        {"title": "x", "scenes": [scene(text="")]},
        {"title": "x", "scenes": [scene(text="...")]},
        {"title": "x", "scenes": [scene(text="a" * (MAX_SCENE_CHARS + 1))]},
        {"title": "x", "scenes": [scene(role="Hook!")]},
        {"title": "x", "scenes": [{**scene(), "mood": "happy"}]},
        {"title": "x", "scenes": [scene()] * (MAX_SCENES + 1)},
    ]
    for data in bad:
        with pytest.raises(ValueError, match="validation error"):
            Script.model_validate(data)


# --- Offline from a topic -------------------------------------------------------------


@pytest.mark.parametrize("template", list_templates(), ids=lambda t: t.name)
def test_offline_script_is_deterministic(template: Template) -> None:
    first = offline_script(template, topic="octopuses", target_seconds=None, seed=3)
    again = offline_script(template, topic="octopuses", seed=3)
    assert first == again
    assert first != offline_script(template, topic="sleep", seed=3)


def test_seeds_vary_the_script() -> None:
    template = get_template("fun_facts")
    scripts = {offline_script(template, topic="octopuses", seed=s).narration for s in range(5)}
    assert len(scripts) > 1


@pytest.mark.parametrize("template", list_templates(), ids=lambda t: t.name)
def test_offline_script_honours_target_length_and_structure(template: Template) -> None:
    pacing = template.pacing
    targets = (pacing.min_target_s, pacing.default_target_s, pacing.max_target_s)
    for target in targets:
        for topic in TOPICS:
            script = offline_script(template, topic=topic, target_seconds=target, seed=1)
            seconds = script.estimated_seconds(pacing.words_per_second)
            assert abs(seconds - target) <= 0.2 * target, (topic, target, seconds)
            roles = [s.role for s in script.scenes]
            assert roles_follow_structure(template, roles), roles
            assert all(s.word_count <= max_words(template) for s in script.scenes)
            assert all(
                "{" not in s.text and "}" not in s.text and s.visual_prompt for s in script.scenes
            )
            assert "{" not in script.title


def test_offline_script_fills_the_patterns() -> None:
    script = offline_script(get_template("top_n"), topic="pizza toppings", seed=0)
    items = [s for s in script.scenes if s.role == "item"]
    # A countdown: the first item is number N, the last number 1.
    assert [s.on_screen_text for s in items] == [f"#{n}" for n in range(len(items), 0, -1)]
    assert str(len(items)) in script.title
    assert "pizza toppings" in script.scenes[0].text
    chat = offline_script(get_template("text_chat"), topic="octopuses", seed=0)
    speakers = [s.speaker for s in chat.scenes]
    assert all(speakers)
    assert len(set(speakers)) == 2
    # The two senders alternate through the whole thread.
    assert all(a != b for a, b in itertools.pairwise(speakers))
    assert chat_messages(chat, upto=1) == [
        (chat.scenes[0].speaker, chat.scenes[0].text),
        (chat.scenes[1].speaker, chat.scenes[1].text),
    ]


def test_offline_script_refuses_bad_input() -> None:
    template = get_template("fun_facts")
    with pytest.raises(InvalidRequest) as caught:
        offline_script(template, topic=None, text=None)
    assert caught.value.param == "topic"
    with pytest.raises(InvalidRequest) as caught:
        offline_script(template, topic="octopuses", target_seconds=3600)
    assert caught.value.param == "target_seconds"
    with pytest.raises(InvalidRequest):
        offline_script(template, topic="octopuses", target_seconds=math.nan)
    with pytest.raises(InvalidRequest):
        offline_script(template, topic=" ?! ")
    with pytest.raises(InvalidRequest):
        offline_script(template, topic="x" * 301)


# --- Offline from the user's text -----------------------------------------------------

ARTICLE = (
    "Black holes are regions of space where gravity is so strong that nothing escapes, not "
    "even light. They form when massive stars collapse at the end of their lives. Dr. Smith, "
    "an astronomer at the U.S. observatory, says most galaxies have one at the centre. The "
    "one in our Milky Way is called Sagittarius A*. It weighs about four million suns! Yet it "
    "is remarkably quiet. Scientists photographed its shadow in 2022 using the Event Horizon "
    "Telescope, a network of radio dishes spanning the whole planet, coordinated with atomic "
    "clocks and hard drives flown across continents because the data was too big for the "
    "internet. Nobody knows exactly what happens inside. Some physicists think information is "
    "preserved on the surface; others disagree. The debate has lasted fifty years. It is not "
    "over yet."
)


@pytest.mark.parametrize("name", ["explainer", "fun_facts", "story", "news_brief"])
def test_text_is_split_into_scenes_within_pacing(name: str) -> None:
    template = get_template(name)
    pacing = template.pacing
    script = offline_script(template, text=ARTICLE)
    lengths = [s.word_count for s in script.scenes]
    assert max(lengths) <= max_words(template)
    min_words = math.ceil(pacing.min_scene_s * pacing.words_per_second)
    assert sum(n < min_words for n in lengths) <= 1, lengths
    # Every word kept, in order; scenes end at sentence or clause boundaries.
    assert " ".join(s.text for s in script.scenes).split() == ARTICLE.split()
    assert all(re.search(r"[.!?,;]$", s.text) for s in script.scenes)
    assert script.scenes[0].role == template.roles[0]
    assert all(s.visual_prompt for s in script.scenes)
    assert offline_script(template, text=ARTICLE) == script
    assert script.title.startswith("Black holes are regions")


def test_text_with_topic_steers_title_and_prompts() -> None:
    script = offline_script(get_template("explainer"), text=ARTICLE, topic="black holes")
    assert script.title == "Black holes"
    assert all(s.visual_prompt.startswith("black holes; ") for s in script.scenes)


def test_chat_text_is_one_message_per_line() -> None:
    text = "Mia: are you awake?\nJake: no\nMia: look at this octopus\n\nJake: why"
    script = offline_script(get_template("text_chat"), text=text)
    assert [(s.speaker, s.text) for s in script.scenes] == [
        ("Mia", "are you awake?"),
        ("Jake", "no"),
        ("Mia", "look at this octopus"),
        ("Jake", "why"),
    ]


def test_text_too_long_for_a_short() -> None:
    with pytest.raises(InvalidRequest) as caught:
        offline_script(get_template("fun_facts"), text="Word after word. " * 800)
    assert caught.value.code == "text_too_long"


# --- User scripts ---------------------------------------------------------------------


def test_user_script_from_strings() -> None:
    template = get_template("fun_facts")
    script = user_script(template, ["Octopuses have three hearts.", "Their blood is blue.", "Bye!"])
    assert [s.role for s in script.scenes] == ["hook", "fact", "outro"]
    assert script.title == "Octopuses have three hearts."
    assert "octopuses" in script.scenes[0].visual_prompt.lower()
    chat = user_script(get_template("text_chat"), ["Mia: hi", "hello", "Mia: ok"])
    assert [s.speaker for s in chat.scenes][0::2] == ["Mia", "Mia"]
    assert chat.scenes[1].speaker
    assert chat.scenes[1].text == "hello"


def test_user_script_errors_name_the_scene() -> None:
    template = get_template("fun_facts")
    with pytest.raises(InvalidRequest) as caught:
        user_script(template, ["fine", "x" * 700])
    assert caught.value.code == "invalid_script"
    assert caught.value.param == "scenes.1.text"
    with pytest.raises(InvalidRequest):
        user_script(template, [])
    with pytest.raises(InvalidRequest):
        user_script(template, ["ok"] * (MAX_SCENES + 1))


def test_user_script_from_a_script_fixes_unknown_roles() -> None:
    template = get_template("fun_facts")
    mine = Script.model_validate(
        {"title": "Mine", "scenes": [scene("intro"), scene("middle"), scene("end")]}
    )
    assert [s.role for s in user_script(template, mine).scenes] == ["hook", "fact", "outro"]
    good = Script.model_validate({"title": "Mine", "scenes": [scene("hook"), scene("fact")]})
    assert user_script(template, good) == good


def test_fit_to_template_trims_and_keeps_the_outro() -> None:
    template = get_template("fun_facts")  # hook, fact 3-8, outro: 5-10 scenes
    long = Script.model_validate(
        {
            "title": "t",
            "scenes": [scene("hook")]
            + [scene("fact", f"Fact {i}.") for i in range(12)]
            + [scene("outro", "Follow.")],
        }
    )
    fitted = fit_to_template(long, template)
    assert len(fitted.scenes) == template.max_scenes
    assert fitted.scenes[-1].text == "Follow."
    assert fitted.scenes[-2].text == "Fact 7."
    shuffled = Script.model_validate(
        {"title": "t", "scenes": [scene("outro"), *[scene("fact")] * 3, scene("hook")]}
    )
    assert [s.role for s in fit_to_template(shuffled, template).scenes] == template.assign_roles(5)
    with pytest.raises(InvalidRequest):
        fit_to_template(Script.model_validate({"title": "t", "scenes": [scene()]}), template)


# --- Text helpers ---------------------------------------------------------------------

SENTENCES = [
    ("One. Two! Three?", ["One.", "Two!", "Three?"]),
    ("Dr. Who met Mr. Smith. Then left.", ["Dr. Who met Mr. Smith.", "Then left."]),
    ('He said "stop." Then ran.', ['He said "stop."', "Then ran."]),
    ("Pi is 3.14 roughly. Yes.", ["Pi is 3.14 roughly.", "Yes."]),
    ("J. R. R. Tolkien wrote books. Many.", ["J. R. R. Tolkien wrote books.", "Many."]),
    ("no end", ["no end"]),
    ("   ", []),
]


@pytest.mark.parametrize(("text", "expected"), SENTENCES)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_split_long_and_pack() -> None:
    long = "word " * 50
    pieces = split_long(long.strip(), max_words=12, max_chars=600)
    assert all(count_words(p) <= 12 for p in pieces)
    assert " ".join(pieces).split() == long.split()
    assert max(count_words(p) for p in pieces) - min(count_words(p) for p in pieces) <= 1
    assert split_long("a" * 30, max_words=5, max_chars=10) == ["a" * 30]  # one word stays
    units = ["One two three.", "Four five.", "Six seven eight nine.", "Ten."]
    assert pack_scenes(units, min_words=3, ideal_words=5, max_words=6, max_chars=600) == [
        "One two three. Four five.",
        "Six seven eight nine. Ten.",
    ]


def test_keywords_prefer_names_and_nouns() -> None:
    words = keywords("Yesterday the telescope in Chile quickly photographed a distant galaxy.", 3)
    assert "Chile" in words
    assert "telescope" in words
    assert "quickly" not in words
    assert keywords("the and of", 3) == []
