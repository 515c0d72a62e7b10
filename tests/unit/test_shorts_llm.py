"""The LLM scripter against the fake OpenAI-compatible server: requests, answers, errors."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from vidpipe.errors import (
    InvalidRequest,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from vidpipe.shorts.llm import SCHEMA_NAME, llm_script
from vidpipe.shorts.script import Script, script_json_schema
from vidpipe.shorts.templates import get_template
from vidpipe.testing.fakes._common_rkvl import serve_on_loopback
from vidpipe.testing.fakes.llm import (
    FakeLLMFault,
    FakeLLMState,
    create_fake_llm,
    strict_schema_problems,
)

BASE_URL = "http://llm.test/v1"
KEY = "llm-test-key"
TEMPLATE = get_template("fun_facts")


@pytest.fixture
def state() -> FakeLLMState:
    return FakeLLMState(api_key=KEY)


@pytest.fixture
async def client(state: FakeLLMState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_fake_llm(state))
    async with httpx.AsyncClient(transport=transport) as http:
        yield http


async def write(client: httpx.AsyncClient, **overrides: Any) -> Script:
    args: dict[str, Any] = {
        "base_url": BASE_URL,
        "api_key": KEY,
        "model": "gpt-4o-mini",
        "template": TEMPLATE,
        "topic": "octopuses",
        "target_seconds": 40.0,
        "timeout_s": 5.0,
    }
    args.update(overrides)
    return await llm_script(client, **args)


def scene(role: str, text: str) -> dict[str, Any]:
    return {
        "role": role,
        "text": text,
        "visual_prompt": f"picture of {text}",
        "on_screen_text": None,
        "speaker": None,
        "emphasis": [],
    }


async def test_success_sends_the_strict_schema(
    client: httpx.AsyncClient, state: FakeLLMState
) -> None:
    script = await write(client, seed=7)
    assert [s.role for s in script.scenes] == ["hook", "fact", "fact", "fact", "outro"]
    assert "octopuses" in script.title
    assert len(state.requests) == 1
    body = state.requests[0]
    assert body["model"] == "gpt-4o-mini"
    assert body["seed"] == 7
    assert "temperature" not in body  # reasoning models refuse anything but their default
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": SCHEMA_NAME,
            "strict": True,
            "schema": script_json_schema(TEMPLATE),
        },
    }
    assert strict_schema_problems(body["response_format"]["json_schema"]["schema"]) == []
    system, user = body["messages"]
    assert system["role"] == "system"
    assert user["role"] == "user"
    assert "hook: exactly 1 scene" in system["content"]
    assert "fact: 3 to 8 scenes" in system["content"]
    assert "about 100 spoken words" in system["content"]
    assert "<<<\noctopuses\n>>>" in user["content"]
    assert state.headers[0]["authorization"] == f"Bearer {KEY}"


async def test_no_key_sends_no_authorization(
    client: httpx.AsyncClient, state: FakeLLMState
) -> None:
    state.api_key = None
    await write(client, api_key=None)
    assert "authorization" not in state.headers[0]


async def test_answer_is_fitted_to_the_template(
    client: httpx.AsyncClient, state: FakeLLMState
) -> None:
    state.script = {
        "title": "Octopus facts",
        "scenes": [scene("hook", "Listen.")]
        + [scene("fact", f"Fact {i}.") for i in range(15)]
        + [scene("outro", "Follow for more.")],
    }
    script = await write(client)
    assert len(script.scenes) == TEMPLATE.max_scenes
    assert script.scenes[-1].text == "Follow for more."
    assert [s.role for s in script.scenes] == TEMPLATE.assign_roles(TEMPLATE.max_scenes)


TRANSIENT = [
    (FakeLLMFault.RATE_LIMIT, "rate_limited", 7.0),
    (FakeLLMFault.UNAVAILABLE, "http_503", 7.0),
    (FakeLLMFault.SERVER_ERROR, "http_500", None),
    (FakeLLMFault.GARBAGE, "llm_unexpected_response", None),
]


@pytest.mark.parametrize(("fault", "code", "retry_after"), TRANSIENT, ids=lambda v: str(v))
async def test_transient_failures(
    client: httpx.AsyncClient,
    state: FakeLLMState,
    fault: FakeLLMFault,
    code: str,
    retry_after: float | None,
) -> None:
    state.fail_next(fault)
    with pytest.raises(TransientProviderError) as caught:
        await write(client)
    assert caught.value.code == code
    assert caught.value.retry_after_s == retry_after
    # The next try (the engine's retry) succeeds.
    assert (await write(client)).scenes


async def test_retry_after_is_the_servers(client: httpx.AsyncClient, state: FakeLLMState) -> None:
    state.retry_after_s = 12.5
    state.fail_next(FakeLLMFault.RATE_LIMIT)
    with pytest.raises(TransientProviderError) as caught:
        await write(client)
    assert caught.value.retry_after_s == 12.5


PERMANENT = [
    (FakeLLMFault.QUOTA, "llm_quota_exceeded"),
    (FakeLLMFault.BAD_REQUEST, "llm_rejected"),
    (FakeLLMFault.REFUSAL, "llm_refused"),
    (FakeLLMFault.CONTENT_FILTER, "llm_content_policy"),
]


@pytest.mark.parametrize(("fault", "code"), PERMANENT, ids=lambda v: str(v))
async def test_permanent_failures(
    client: httpx.AsyncClient, state: FakeLLMState, fault: FakeLLMFault, code: str
) -> None:
    state.fail_next(fault)
    with pytest.raises(PermanentProviderError) as caught:
        await write(client)
    assert caught.value.code == code
    assert len(state.requests) == 1  # no repair request for these


async def test_auth_and_model_errors(client: httpx.AsyncClient) -> None:
    with pytest.raises(PermanentProviderError) as caught:
        await write(client, api_key="wrong")
    assert caught.value.code == "llm_auth"
    with pytest.raises(PermanentProviderError) as caught:
        await write(client, api_key=None)
    assert caught.value.code == "llm_auth"
    with pytest.raises(PermanentProviderError) as caught:
        await write(client, model="gpt-17")
    assert caught.value.code == "llm_model_not_found"
    assert "gpt-17" in caught.value.message


@pytest.mark.parametrize(
    "fault",
    [FakeLLMFault.INVALID_JSON, FakeLLMFault.SCHEMA_VIOLATION, FakeLLMFault.TRUNCATED],
    ids=str,
)
async def test_one_bad_answer_is_repaired(
    client: httpx.AsyncClient, state: FakeLLMState, fault: FakeLLMFault
) -> None:
    state.fail_next(fault)
    script = await write(client)
    assert script.scenes
    assert len(state.requests) == 2
    repair = state.requests[1]["messages"]
    assert [m["role"] for m in repair] == ["system", "user", "assistant", "user"]
    assert "not valid" in repair[-1]["content"]
    assert repair[:2] == state.requests[0]["messages"]


@pytest.mark.parametrize(
    "fault",
    [FakeLLMFault.INVALID_JSON, FakeLLMFault.SCHEMA_VIOLATION, FakeLLMFault.TRUNCATED],
    ids=str,
)
async def test_bad_answers_twice_are_a_permanent_invalid_script(
    client: httpx.AsyncClient, state: FakeLLMState, fault: FakeLLMFault
) -> None:
    state.fail_next(fault, fault)
    with pytest.raises(PermanentProviderError) as caught:
        await write(client)
    assert caught.value.code == "llm_invalid_script"
    assert len(state.requests) == 2


async def test_repair_can_be_turned_off(client: httpx.AsyncClient, state: FakeLLMState) -> None:
    state.fail_next(FakeLLMFault.INVALID_JSON)
    with pytest.raises(PermanentProviderError, match="not JSON"):
        await write(client, repair_attempts=0)
    assert len(state.requests) == 1


async def test_too_few_scenes_is_invalid(client: httpx.AsyncClient, state: FakeLLMState) -> None:
    state.script = {"title": "Short", "scenes": [scene("hook", "Hi.")]}
    with pytest.raises(PermanentProviderError) as caught:
        await write(client)
    assert caught.value.code == "llm_invalid_script"
    assert "at least 5" in caught.value.message


async def test_bad_input_is_refused_before_any_request(
    client: httpx.AsyncClient, state: FakeLLMState
) -> None:
    with pytest.raises(InvalidRequest):
        await write(client, topic="  ")
    with pytest.raises(InvalidRequest):
        await write(client, target_seconds=1000.0)
    assert state.requests == []


async def test_timeout_is_transient() -> None:
    state = FakeLLMState(api_key=None, slow_s=1.0)
    state.fail_next(FakeLLMFault.SLOW)
    async with serve_on_loopback(create_fake_llm(state)) as url, httpx.AsyncClient() as http:
        with pytest.raises(TransientProviderError) as caught:
            await llm_script(
                http,
                base_url=f"{url}/v1/",
                api_key=None,
                model="fake-writer",
                template=TEMPLATE,
                topic="octopuses",
                timeout_s=0.2,
            )
    assert caught.value.code == "timeout"


async def test_network_failure_is_transient() -> None:
    # A port nobody listens on: bound, never listening, so the connect is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        async with httpx.AsyncClient() as http:
            with pytest.raises(ProviderError) as caught:
                await llm_script(
                    http,
                    base_url=f"http://127.0.0.1:{port}/v1",
                    api_key=None,
                    model="m",
                    template=TEMPLATE,
                    topic="octopuses",
                    timeout_s=2.0,
                )
    assert isinstance(caught.value, TransientProviderError)
    assert caught.value.code in ("network", "timeout")


async def test_the_fake_refuses_a_non_strict_schema(client: httpx.AsyncClient) -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    assert strict_schema_problems(schema)
    response = await client.post(
        f"{BASE_URL}/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "strict": True, "schema": schema},
            },
        },
    )
    assert response.status_code == 400
    assert "additionalProperties" in response.json()["error"]["message"]
