"""The OpenAPI document describes the errors vidpipe really answers."""

from __future__ import annotations

from typing import Any

from vidpipe.api.openapi_errors import ENVELOPE_REF, ErrorEnvelope

from .conftest import Harness


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    ]


async def test_every_error_status_is_documented_as_the_envelope(harness: Harness) -> None:
    spec = (await harness.client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    # FastAPI's own {"detail": [...]} shape is never answered, so never documented.
    assert "HTTPValidationError" not in schemas
    assert "HTTPValidationError" not in str(spec)
    assert schemas["ErrorEnvelope"]["required"] == ["error"]
    assert set(schemas["ErrorDetail"]["required"]) == {"code", "message", "type"}
    errors = 0
    for method, path, operation in _operations(spec):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                errors += 1
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": ENVELOPE_REF}, (method, path, status)
    assert errors > 100


async def test_each_operation_lists_what_its_guards_answer(harness: Harness) -> None:
    spec = (await harness.client.get("/openapi.json")).json()
    ops = {(m, p): set(o["responses"]) for m, p, o in _operations(spec)}
    assert {"401", "429", "404", "422"} <= ops[("get", "/v1/videos/{video_id}")]
    assert {"401", "429", "400", "413", "415", "422"} <= ops[("post", "/v1/videos")]
    assert "404" not in ops[("get", "/v1/videos")]
    assert "403" in ops[("post", "/v1/tenants")]  # admin keys only
    assert "403" not in ops[("get", "/v1/videos")]
    # Provider webhooks carry no key: a bad signature is their 401, no rate limit.
    assert "429" not in ops[("post", "/v1/hooks/{provider}")]
    assert "401" in ops[("post", "/v1/hooks/{provider}")]
    assert ops[("get", "/healthz")] == {"200"}


async def test_real_error_answers_match_the_documented_envelope(harness: Harness) -> None:
    spec = (await harness.client.get("/openapi.json")).json()
    answers = [
        ("get", "/v1/videos/{video_id}", await harness.client.get("/v1/videos/vid_nope")),
        (
            "get",
            "/v1/videos/{video_id}",
            await harness.client.get("/v1/videos/vid_nope", headers=harness.headers()),
        ),
        (
            "post",
            "/v1/videos",
            await harness.client.post(
                "/v1/videos", json={"prompt": "x", "seconds": -1}, headers=harness.headers()
            ),
        ),
        (
            "post",
            "/v1/videos",
            await harness.client.post(
                "/v1/videos",
                content=b"prompt=x",
                headers={**harness.headers(), "content-type": "text/plain"},
            ),
        ),
        (
            "get",
            "/v1/videos",
            await harness.client.get("/v1/videos?limit=-5", headers=harness.headers()),
        ),
        (
            "post",
            "/v1/tenants",
            await harness.client.post("/v1/tenants", json={"name": "x"}, headers=harness.headers()),
        ),
    ]
    seen = set()
    for method, path, response in answers:
        status = str(response.status_code)
        assert response.status_code >= 400, (path, response.text)
        documented = spec["paths"][path][method]["responses"]
        assert status in documented, (method, path, status, sorted(documented))
        ErrorEnvelope.model_validate(response.json())
        seen.add(status)
    assert {"401", "404", "415", "422", "403"} <= seen
