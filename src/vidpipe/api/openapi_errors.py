"""The OpenAPI document tells the truth about errors.

FastAPI documents only what it knows: a 422 in its own ``{"detail": [...]}`` shape
(vidpipe answers every error with the envelope of ``api/errors.py`` instead) and the
statuses a route declares by hand. A client generated from that document would
mis-parse every error. Here the document is rewritten once, when first asked for:
every error status of every operation points at the one envelope schema, and each
operation lists the statuses its dependencies can answer (401 and 429 where a key is
needed, 403 where an admin key is, 404 where the path names a resource).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from vidpipe.api.auth import principal, require_admin

ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable reason, e.g. `invalid_seconds`.")
    message: str = Field(description="What went wrong, for people.")
    param: str | None = Field(default=None, description="The parameter at fault, if one.")
    type: str = Field(description="The class of error, e.g. `invalid_request_error`.")


class ErrorEnvelope(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


_AUTH = {
    401: "Missing, unknown, expired or revoked API key.",
    429: "Too many requests for this tenant: retry after `Retry-After` seconds.",
}
_ADMIN = {403: "This needs an admin key."}
_NOT_FOUND = {404: "No such resource for this tenant."}


def document_errors(app: FastAPI, routers: list[APIRouter]) -> None:
    """Make ``app.openapi`` answer the rewritten document (built once, then cached).

    ``routers``: those included in ``app`` without a prefix of their own, whose
    routes' paths are the document's.
    """
    routes = [route for router in routers for route in router.routes if isinstance(route, APIRoute)]

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            rewrite_errors(schema, routes)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def rewrite_errors(schema: dict[str, Any], routes: list[APIRoute]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    envelope = ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(envelope.pop("$defs", {}))
    components["ErrorEnvelope"] = envelope
    for route in routes:
        if not route.include_in_schema:
            continue
        calls = set(_dependency_calls(route.dependant))
        added: dict[int, str] = {}
        if principal in calls or require_admin in calls:
            added |= _AUTH
        if require_admin in calls:
            added |= _ADMIN
        if "{" in route.path_format:
            added |= _NOT_FOUND
        for method in route.methods or ():
            operation = schema["paths"].get(route.path_format, {}).get(method.lower())
            if operation is not None:
                _rewrite_operation(operation, added)
    # FastAPI's own validation error shapes are never answered: drop them.
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def _rewrite_operation(operation: dict[str, Any], added: dict[int, str]) -> None:
    responses = operation.setdefault("responses", {})
    for status, description in added.items():
        responses.setdefault(str(status), {"description": description})
    if "422" in responses and responses["422"].get("description") == "Validation Error":
        responses["422"]["description"] = "Invalid request: a parameter or the body."
    for status, response in responses.items():
        if status.isdigit() and int(status) >= 400:
            response["content"] = {"application/json": {"schema": {"$ref": ENVELOPE_REF}}}


def _dependency_calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _dependency_calls(sub)
