"""Reading request bodies with limits, as JSON or as multipart forms."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from vidpipe.errors import InvalidRequest, VidpipeError

_BRACKET = re.compile(r"^([^\[\]]+)\[([^\[\]]*)\]$")


class BodyTooLarge(VidpipeError):
    code = "request_too_large"
    http_status = 413


class UnsupportedMediaType(VidpipeError):
    code = "unsupported_media_type"
    http_status = 415


class ClientDisconnected(VidpipeError):
    """The client went away before its request's body arrived: nothing was done."""

    code = "client_disconnected"
    http_status = 400


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body over {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # A client's own doing (a timeout, a closed connection), not a server error.
        raise ClientDisconnected("the client disconnected before sending the whole body") from None
    return b"".join(chunks)


async def read_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a dict: JSON, or a multipart / urlencoded form (as the OpenAI SDK sends).

    Form keys in bracket notation (``metadata[team]=a``) become nested dicts.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        raw = await read_limited(request, limit)
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidRequest(
                f"the body is not valid JSON: {exc}", code="invalid_json", http_status=400
            ) from None
        if not isinstance(data, dict):
            raise InvalidRequest("the JSON body must be an object", code="invalid_body")
        return data
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"request body over {limit} bytes")
        try:
            async with request.form(max_files=4, max_fields=64, max_part_size=limit) as form:
                return _form_to_dict(form.multi_items())
        except VidpipeError:
            raise
        except Exception as exc:  # the multipart parser's own errors
            raise InvalidRequest(
                f"malformed form body: {exc}", code="invalid_form", http_status=400
            ) from None
    raise UnsupportedMediaType(
        f"content type {content_type or '(none)'} is not accepted; "
        "send application/json or multipart/form-data"
    )


def _form_to_dict(items: list[tuple[str, str | UploadFile]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in items:
        if isinstance(value, UploadFile):
            raise InvalidRequest(
                f"file uploads ({key}) are not supported on this endpoint yet",
                code="unsupported_parameter",
                param=key,
            )
        match = _BRACKET.match(key)
        if match and match.group(2) == "":
            # key[]=a&key[]=b: a list (how the OpenAI SDK sends list fields in forms).
            listed = result.setdefault(match.group(1), [])
            if isinstance(listed, list):
                listed.append(value)
        elif match:
            nested = result.setdefault(match.group(1), {})
            if isinstance(nested, dict):
                nested[match.group(2)] = value
        else:
            result[key] = value
    return result
