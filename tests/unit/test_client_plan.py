"""vidpipe.client.Plan: what a built plan serializes to, and the mistakes it refuses."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from vidpipe.client import Client, InvalidRequest, Plan, PlanError, Ref, VidpipeClientError
from vidpipe.client._plan import job_body


def test_the_documented_plan_serializes_to_refs() -> None:
    plan = Plan(title="a lighthouse", metadata={"order": "7"}, max_cost_usd=2.5)
    script = plan.step("script", "script", template="fun_facts", scenes=["Lighthouses blink."])
    img = plan.step("img", "image", prompt=script["scenes"][0]["visual_prompt"])
    voice = plan.step("voice", "speech", text=script.ref("scenes.0.text"))
    final = plan.step(
        "final",
        "compose",
        scenes=[{"visual": img, "narration": voice}],
        after=[script],
        weight=5,
    )
    plan.output = final
    plan.derivatives.append("hls")

    assert plan.to_dict() == {
        "title": "a lighthouse",
        "metadata": {"order": "7"},
        "max_cost_usd": 2.5,
        "derivatives": ["hls"],
        "output": "final",
        "steps": [
            {
                "name": "script",
                "kind": "script",
                "params": {"template": "fun_facts", "scenes": ["Lighthouses blink."]},
            },
            {
                "name": "img",
                "kind": "image",
                "params": {"prompt": {"$ref": "script.scenes.0.visual_prompt"}},
            },
            {
                "name": "voice",
                "kind": "speech",
                "params": {"text": {"$ref": "script.scenes.0.text"}},
            },
            {
                "name": "final",
                "kind": "compose",
                "params": {"scenes": [{"visual": {"$ref": "img"}, "narration": {"$ref": "voice"}}]},
                "after": ["script"],
                "weight": 5,
            },
        ],
    }
    # Plain JSON: what httpx will send.
    json.dumps(plan.to_dict())
    assert script["scenes"][0] == script.ref("scenes.0") == script.ref("scenes").ref("0")
    assert script["scenes"][0].target == "script.scenes.0"
    assert img.to_dict() == {"$ref": "img"}


def test_the_plan_is_a_snapshot_not_a_view() -> None:
    plan = Plan()
    clips: list[Any] = [{"prompt": "a boat"}]
    plan.step("m", "merge", clips=clips)
    clips.append("later")
    clips[0]["prompt"] = "changed"
    body = plan.to_dict()
    assert body == {
        "steps": [{"name": "m", "kind": "merge", "params": {"clips": [{"prompt": "a boat"}]}}]
    }
    body["steps"][0]["params"]["clips"].clear()
    assert plan.to_dict()["steps"][0]["params"]["clips"] == [{"prompt": "a boat"}]


def test_params_may_be_given_as_a_mapping() -> None:
    # For params named like step()'s own arguments: name (music), kind (media), after.
    plan = Plan()
    plan.step("bed", "music", {"source": "library", "name": "bed.wav"}, seconds=2)
    plan.step("pic", "media", kind="image", url="https://example.com/a.png")
    steps = plan.to_dict()["steps"]
    assert steps[0]["params"] == {"source": "library", "name": "bed.wav", "seconds": 2}
    assert steps[1]["params"] == {"kind": "image", "url": "https://example.com/a.png"}


def test_a_ready_mapping_is_sent_with_its_refs_encoded() -> None:
    plan = Plan()
    one = plan.step("one", "clip", prompt="a boat", model="instant/test")
    body = {"steps": [{"name": "m", "kind": "merge", "params": {"clips": (one,)}}]}
    assert job_body(body) == {
        "steps": [{"name": "m", "kind": "merge", "params": {"clips": [{"$ref": "one"}]}}]
    }
    assert job_body(plan) == plan.to_dict()


def _other_ref() -> Ref:
    return Plan().step("elsewhere", "image", prompt="x")


MISTAKES: list[tuple[str, Callable[[Plan, Ref], object], str]] = [
    ("duplicate name", lambda p, r: p.step("img", "image", prompt="y"), "already has a step"),
    (
        "ref of another plan in params",
        lambda p, r: p.step("m", "merge", clips=[{"nested": [_other_ref()]}]),
        "another Plan",
    ),
    (
        "ref of another plan in after",
        lambda p, r: p.step("m", "merge", clips=[r], after=[_other_ref()]),
        "another Plan",
    ),
    ("after a value, not a step", lambda p, r: p.step("m", "merge", after=[r["a"]]), "whole step"),
    ("param given twice", lambda p, r: p.step("m", "image", {"prompt": "a"}, prompt="b"), "twice"),
    ("empty path", lambda p, r: r.ref(""), "non-empty"),
    ("empty path part", lambda p, r: r.ref("scenes..text"), "non-empty"),
    ("negative index", lambda p, r: r[-1], "0 or more"),
    ("dotted key", lambda p, r: r["a.b"], "without '.'"),
    ("empty key", lambda p, r: r[""], "without '.'"),
    ("bool index", lambda p, r: r[True], "str keys and int indexes"),
]


@pytest.mark.parametrize(
    ("mistake", "make", "message"), MISTAKES, ids=[case[0] for case in MISTAKES]
)
def test_obvious_mistakes_are_refused_at_once(
    mistake: str, make: Callable[[Plan, Ref], object], message: str
) -> None:
    plan = Plan()
    img = plan.step("img", "image", prompt="a lighthouse")
    with pytest.raises(PlanError, match=message):
        make(plan, img)
    # The refused step was not added.
    assert [s["name"] for s in plan.to_dict()["steps"]] == ["img"]


def test_the_output_is_a_whole_step_of_this_plan() -> None:
    plan = Plan()
    img = plan.step("img", "image", prompt="a lighthouse")
    assert "output" not in plan.to_dict()
    for given in (img, "img"):
        plan.output = given
        assert plan.to_dict()["output"] == "img"
    for wrong, message in ((img["size"], "whole step"), (_other_ref(), "another Plan")):
        plan.output = wrong
        with pytest.raises(PlanError, match=message):
            plan.to_dict()


def test_an_empty_plan_and_iterating_a_ref() -> None:
    with pytest.raises(PlanError, match="at least one step"):
        Plan().to_dict()
    ref = Plan().step("img", "image", prompt="x")
    # Indexable but not iterable (else list(ref) would never end).
    with pytest.raises(TypeError, match="not iterable"):
        list(ref)
    assert issubclass(PlanError, VidpipeClientError)
    assert issubclass(PlanError, ValueError)


def test_creates_carry_one_idempotency_key_across_retries() -> None:
    """The blocking client's plan calls on the wire (a tiny fake server)."""
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return httpx.Response(503, json={"error": {"code": "busy", "message": "later"}})
        return httpx.Response(422, json={"error": {"code": "plan_cycle", "message": "a -> a"}})

    plan = Plan(title="t")
    plan.step("img", "image", prompt="x")
    with Client(
        "http://vidpipe.test", "k", transport=httpx.MockTransport(server), retry_backoff_s=0.001
    ) as client:
        with pytest.raises(InvalidRequest) as caught:
            client.create_job(plan)
        assert (caught.value.status, caught.value.code) == (422, "plan_cycle")
        first, second = seen
        assert (first.method, first.url.path) == ("POST", "/v1/jobs")
        assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
        assert json.loads(first.content) == plan.to_dict()

        seen.clear()
        with pytest.raises(InvalidRequest):
            client.create_short(topic="octopuses", scenes=("one", "two"), idempotency_key="k-1")
        assert seen[0].url.path == "/v1/shorts"
        assert seen[0].headers["Idempotency-Key"] == "k-1"
        # Unset fields are left to the server's defaults.
        assert json.loads(seen[0].content) == {"topic": "octopuses", "scenes": ["one", "two"]}
