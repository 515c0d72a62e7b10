"""Plan structure and references, pure."""

from __future__ import annotations

from typing import Any

import pytest

from vidpipe.plans import kinds as k
from vidpipe.plans.handlers import scene_durations
from vidpipe.plans.spec import (
    PlanError,
    PlanStep,
    check_structure,
    iter_refs,
    parse_ref,
    resolve,
    topological_order,
)


def step(name: str, *refs: str, after: tuple[str, ...] = (), kind: str = "merge") -> PlanStep:
    return PlanStep(name, kind, {"clips": [{"$ref": r} for r in refs]}, after)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("script", ("script", ())),
        ("script.scenes.2.text", ("script", ("scenes", 2, "text"))),
        ("a.0", ("a", (0,))),
    ],
)
def test_parse_ref(text: str, expected: tuple[str, tuple[Any, ...]]) -> None:
    assert parse_ref(text) == expected


@pytest.mark.parametrize("text", ["", "a..b", "a."])
def test_bad_refs(text: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_ref(text)
    assert info.value.code == "invalid_reference"


def test_a_ref_object_has_no_other_keys() -> None:
    with pytest.raises(PlanError):
        list(iter_refs({"$ref": "a", "extra": 1}))


def test_dependencies_come_from_refs_and_after_without_repeats() -> None:
    s = PlanStep(
        "c",
        "compose",
        {
            "scenes": [
                {"visual": {"$ref": "a"}, "narration": {"$ref": "b.x"}},
                {"visual": {"$ref": "a"}},
            ]
        },
        ("d",),
    )
    assert s.depends_on() == ("a", "b", "d")


def test_topological_order_is_stable_and_respects_dependencies() -> None:
    plan = [step("m", "b", "a"), step("a", kind="clip"), step("b", "a")]
    order = topological_order(plan)
    assert order.index("a") < order.index("b") < order.index("m")


def test_cycles_are_named() -> None:
    plan = [step("a", "c"), step("b", "a"), step("c", "b")]
    with pytest.raises(PlanError) as info:
        check_structure(plan, k.KINDS)
    assert info.value.code == "plan_cycle"
    assert "a -> c -> b -> a" in info.value.message


def test_self_reference_is_a_cycle() -> None:
    with pytest.raises(PlanError) as info:
        check_structure([step("a", "a")], k.KINDS)
    assert info.value.code == "plan_cycle"


def test_resolve_replaces_refs_deeply_and_leaves_values() -> None:
    outputs = {"script": {"scenes": [{"text": "one"}, {"text": "two"}]}, "img": {"key": "k"}}
    params = {"text": {"$ref": "script.scenes.1.text"}, "list": [{"$ref": "img"}, 3], "n": 1}
    assert resolve(params, outputs) == {"text": "two", "list": [{"key": "k"}, 3], "n": 1}


@pytest.mark.parametrize("ref", ["missing", "script.scenes.5.text", "script.nothing"])
def test_resolve_fails_on_what_is_not_there(ref: str) -> None:
    with pytest.raises(PlanError) as info:
        resolve({"x": {"$ref": ref}}, {"script": {"scenes": [{"text": "a"}]}})
    assert info.value.code == "dangling_reference"


def test_check_params_allows_refs_for_values_and_requires_them_for_files() -> None:
    k.check_params("speech", {"text": {"$ref": "s.scenes.0.text"}}, "p")
    with pytest.raises(PlanError):
        k.check_params("compose", {"scenes": [{"visual": {"key": "tenants/t/jobs/j/x"}}]}, "p")
    with pytest.raises(PlanError):
        k.check_params("speech", {"text": ""}, "p")
    with pytest.raises(PlanError):
        k.check_params("image", {"prompt": "x", "size": "101x100"}, "p")


def test_scene_durations_leave_room_for_the_transition() -> None:
    durations = scene_durations([2.0, None, 0.1], pad_s=0.1, min_s=1.5, transition_s=0.4)
    # Narration + a pause at least the transition + 0.1 s, a default without narration,
    # and never below the minimum.
    assert durations == [2.5, 4.0, 1.5]


def test_a_script_is_fitted_to_the_plans_scene_count() -> None:
    from vidpipe.plans.handlers import fit_scene_count
    from vidpipe.shorts.script import Script

    def scene(text: str, role: str = "fact") -> dict[str, Any]:
        return {
            "role": role,
            "text": text,
            "visual_prompt": "an owl",
            "on_screen_text": None,
            "speaker": None,
            "emphasis": [],
        }

    script = Script.model_validate(
        {
            "title": "Owls",
            "scenes": [
                scene("Owls are birds.", "hook"),
                scene("They hunt at night. Their hearing is superb. They fly silently."),
                scene("Follow for more.", "outro"),
            ],
        }
    )
    longer = fit_scene_count(script, 5)
    assert len(longer.scenes) == 5
    assert (
        " ".join(s.text for s in longer.scenes).split()
        == " ".join(s.text for s in script.scenes).split()
    )
    shorter = fit_scene_count(script, 2)
    assert [s.role for s in shorter.scenes] == ["hook", "outro"]
