"""A fake OpenAI-compatible chat completions API (``POST /v1/chat/completions``).

Answers like OpenAI's: a ``chat.completion`` object whose
``choices[0].message`` has ``content`` (a JSON string under structured outputs) and
``refusal``; errors as ``{"error": {"message", "type", "param", "code"}}``. It checks
what OpenAI checks of a strict ``json_schema`` response format (every object closed
with ``additionalProperties: false`` and listing all its properties as required) and
answers 400 otherwise. Tests hold the ``FakeLLMState``: they queue faults
(``state.faults``), set the script content to answer with, and read the recorded
requests.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = [
    "FakeLLMFault",
    "FakeLLMState",
    "create_fake_llm",
    "default_script",
    "strict_schema_problems",
]

_SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class FakeLLMFault(StrEnum):
    """What the next request gets instead of a good answer."""

    RATE_LIMIT = "rate_limit"  # 429 + Retry-After
    QUOTA = "quota"  # 429 insufficient_quota (OpenAI's exhausted credit)
    SERVER_ERROR = "server_error"  # 500
    UNAVAILABLE = "unavailable"  # 503 + Retry-After
    BAD_REQUEST = "bad_request"  # 400 invalid_request_error
    INVALID_JSON = "invalid_json"  # 200, content that is not JSON
    SCHEMA_VIOLATION = "schema_violation"  # 200, JSON that is not a script
    TRUNCATED = "truncated"  # 200, finish_reason "length", JSON cut short
    REFUSAL = "refusal"  # 200, message.refusal set, content null
    CONTENT_FILTER = "content_filter"  # 200, finish_reason "content_filter"
    GARBAGE = "garbage"  # 200, a body that is not a chat completion
    SLOW = "slow"  # answers after ``slow_s`` seconds


@dataclass
class FakeLLMState:
    """Knobs and records of one fake. ``api_key`` None accepts any or no key."""

    api_key: str | None = "llm-test-key"
    models: tuple[str, ...] = ("gpt-4o-mini", "fake-writer")
    # The script to answer with (a dict, serialised as the message content); None
    # makes one from the schema's role enum and the topic.
    script: dict[str, Any] | None = None
    faults: list[FakeLLMFault] = field(default_factory=list)
    retry_after_s: float = 7.0
    slow_s: float = 2.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def fail_next(self, *faults: FakeLLMFault) -> None:
        self.faults.extend(faults)

    def take_fault(self) -> FakeLLMFault | None:
        return self.faults.pop(0) if self.faults else None


def strict_schema_problems(schema: Any, path: str = "schema") -> list[str]:
    """Why OpenAI would refuse ``schema`` under ``strict: true`` (empty: it would not)."""
    problems: list[str] = []
    if not isinstance(schema, dict):
        return problems
    types = schema.get("type")
    type_set = set(types) if isinstance(types, list) else {types}
    if "object" in type_set:
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            problems.append(f"{path}: an object needs 'properties'")
            properties = {}
        if schema.get("additionalProperties") is not False:
            problems.append(f"{path}: 'additionalProperties' is required to be false")
        required = schema.get("required")
        if not isinstance(required, list) or set(required) != set(properties):
            problems.append(f"{path}: 'required' must list every key in 'properties'")
        for key, sub in properties.items():
            problems += strict_schema_problems(sub, f"{path}.properties.{key}")
    if "array" in type_set:
        problems += strict_schema_problems(schema.get("items"), f"{path}.items")
    for key in ("anyOf", "$defs", "definitions"):
        value = schema.get(key)
        subs: Iterator[tuple[str, Any]] = iter(())
        if isinstance(value, list):
            subs = ((str(i), s) for i, s in enumerate(value))
        elif isinstance(value, dict):
            subs = iter(value.items())
        for name, sub in subs:
            problems += strict_schema_problems(sub, f"{path}.{key}.{name}")
    return problems


def _error(
    status: int,
    message: str,
    *,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validate(body: Any, models: tuple[str, ...]) -> Response | None:
    if not isinstance(body, dict):
        return _error(400, "We could not parse the JSON body of your request.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _error(400, "you must provide a model parameter", param="model")
    if model not in models:
        return _error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(400, "'messages' must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ("system", "developer", "user", "assistant")
            or not isinstance(message.get("content"), str)
        ):
            return _error(400, f"Invalid message at messages[{i}]", param=f"messages[{i}]")
    response_format = body.get("response_format")
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        return _error(400, "Invalid response_format.type", param="response_format.type")
    if kind != "json_schema":
        return None
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or not _SCHEMA_NAME.match(str(spec.get("name", ""))):
        return _error(400, "response_format.json_schema.name is invalid", param="response_format")
    if spec.get("strict") is True:
        problems = strict_schema_problems(spec.get("schema"))
        if problems:
            return _error(
                400,
                f"Invalid schema for response_format '{spec['name']}': {problems[0]}",
                param="response_format",
                code="invalid_json_schema",
            )
    return None


def _roles(body: dict[str, Any]) -> list[str]:
    try:
        scene = body["response_format"]["json_schema"]["schema"]["properties"]["scenes"]
        enum = scene["items"]["properties"]["role"]["enum"]
    except (KeyError, TypeError):
        return ["scene"]
    return [str(role) for role in enum] or ["scene"]


def _topic(body: dict[str, Any]) -> str:
    users = [m["content"] for m in body["messages"] if m.get("role") == "user"]
    match = re.search(r"<<<\n(.*?)\n>>>", users[0] if users else "", re.S)
    return match.group(1).strip() if match else "the topic"


def default_script(body: dict[str, Any]) -> dict[str, Any]:
    """A plausible script for the request: first role, the middle ones three times
    each, last role; sentences about the topic found between ``<<<`` and ``>>>``."""
    roles = _roles(body)
    topic = _topic(body)
    order = roles[:1] + [r for r in roles[1:-1] for _ in range(3)] + roles[1:][-1:]
    scenes = [
        {
            "role": role,
            "text": f"Here is part {i + 1} of a short about {topic}, told in a few words.",
            "visual_prompt": f"a colourful illustration of {topic}, scene {i + 1}",
            "on_screen_text": None,
            "speaker": None,
            "emphasis": [topic.split()[0]] if topic.split() else [],
        }
        for i, role in enumerate(order)
    ]
    return {"title": f"All about {topic}", "scenes": scenes}


def create_fake_llm(state: FakeLLMState) -> Starlette:
    """The fake as an ASGI app; ``/v1/chat/completions`` and ``/v1/models``."""

    def completion(
        body: dict[str, Any],
        content: str | None,
        *,
        finish_reason: str = "stop",
        refusal: str | None = None,
    ) -> Response:
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": content,
                            "refusal": refusal,
                        },
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {"prompt_tokens": 420, "completion_tokens": 230, "total_tokens": 650},
                "system_fingerprint": "fp_fake",
            }
        )

    async def chat_completions(request: Request) -> Response:
        expected = f"Bearer {state.api_key}"
        if state.api_key is not None and request.headers.get("authorization") != expected:
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        state.requests.append(body)
        state.headers.append(dict(request.headers))
        fault = state.take_fault()
        retry = {"retry-after": f"{state.retry_after_s:g}"}
        if fault is FakeLLMFault.RATE_LIMIT:
            return _error(
                429,
                "Rate limit reached for requests per min.",
                kind="requests",
                code="rate_limit_exceeded",
                headers=retry,
            )
        if fault is FakeLLMFault.QUOTA:
            return _error(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                kind="insufficient_quota",
                code="insufficient_quota",
            )
        if fault is FakeLLMFault.SERVER_ERROR:
            return _error(
                500, "The server had an error while processing your request.", kind="server_error"
            )
        if fault is FakeLLMFault.UNAVAILABLE:
            return _error(
                503, "The engine is currently overloaded.", kind="server_error", headers=retry
            )
        if fault is FakeLLMFault.BAD_REQUEST:
            return _error(400, "Invalid value for 'temperature'.", param="temperature")
        if fault is FakeLLMFault.GARBAGE:
            return Response("<html>502 Bad Gateway</html>", media_type="text/html")
        problem = _validate(body, state.models)
        if problem is not None:
            return problem
        if fault is FakeLLMFault.SLOW:
            await asyncio.sleep(state.slow_s)
        script = state.script if state.script is not None else default_script(body)
        content = json.dumps(script)
        if fault is FakeLLMFault.INVALID_JSON:
            return completion(body, "Sure! Here is your script: " + content[:40])
        if fault is FakeLLMFault.SCHEMA_VIOLATION:
            return completion(body, json.dumps({"title": script["title"], "scene_list": []}))
        if fault is FakeLLMFault.TRUNCATED:
            return completion(body, content[: len(content) // 2], finish_reason="length")
        if fault is FakeLLMFault.REFUSAL:
            return completion(body, None, refusal="I'm sorry, I can't help with that request.")
        if fault is FakeLLMFault.CONTENT_FILTER:
            return completion(body, None, finish_reason="content_filter")
        return completion(body, content)

    async def models(request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "owned_by": "fake"} for m in state.models],
            }
        )

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )
