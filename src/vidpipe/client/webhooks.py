"""Checking the webhooks vidpipe sends (Standard Webhooks signatures).

A receiver passes the request's headers and raw body with the endpoint's ``whsec_``
secret::

    event = vidpipe.client.webhooks.verify(secret, request.headers, await request.body())
    if event["type"] == "video.completed": ...
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from vidpipe.client._errors import WebhookVerificationError
from vidpipe.notify import signing

__all__ = ["TOLERANCE_S", "WebhookVerificationError", "verify"]

TOLERANCE_S = signing.TOLERANCE_S


def verify(
    secret: str, headers: Mapping[str, str], body: bytes | str, *, now: float | None = None
) -> dict[str, Any]:
    """The event of a delivery whose signature matches ``secret``.

    ``headers`` may use any case; ``body`` must be the bytes as received. Raises
    :class:`WebhookVerificationError` for a missing or wrong signature, a timestamp more
    than five minutes from ``now`` (default: the current time), or a body that is not a
    JSON object. The event has ``type`` (``video.completed`` …), ``timestamp`` and
    ``data`` (the video object).
    """
    raw = body.encode() if isinstance(body, str) else body
    try:
        signing.verify(secret, headers, raw, time.time() if now is None else now)
    except signing.SignatureError as exc:
        raise WebhookVerificationError(str(exc)) from exc
    try:
        event = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WebhookVerificationError("the signed body is not JSON") from exc
    if not isinstance(event, dict):
        raise WebhookVerificationError("the signed body is not a JSON object")
    return event
