"""One error envelope for every failure: ``{"error": {"code", "message", "param", "type"}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vidpipe.api.ratelimit import retry_after_header
from vidpipe.errors import VidpipeError

log = logging.getLogger("vidpipe.api")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_response(
    status: int,
    code: str,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {
        "error": {
            "code": code,
            "message": message,
            "param": param,
            "type": _TYPES.get(status, "api_error"),
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VidpipeError)
    async def _vidpipe(_request: Request, exc: VidpipeError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        if exc.http_status in (429, 503):
            headers = retry_after_header(exc) or None
        if exc.http_status == 409:
            # Our conflicts are final answers; SDKs that retry 409 (lock timeouts
            # elsewhere) are told not to.
            headers = {"x-should-retry": "false"}
        if exc.http_status >= 500:
            log.error("request failed: %s (%s)", exc.message, exc.code)
        return error_response(exc.http_status, exc.code, exc.message, exc.param, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(part) for part in first.get("loc", ()) if part not in ("query", "path", "body")]
        param = loc[0] if loc else None
        return error_response(
            422,
            f"invalid_{param}" if param else "invalid_request",
            f"{param}: {first.get('msg')}" if param else str(first.get("msg")),
            param,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(
            exc.status_code,
            codes.get(exc.status_code, f"http_{exc.status_code}"),
            str(exc.detail),
            headers=dict(exc.headers) if exc.headers else None,
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "internal error; see the server log")
