"""Standard Webhooks signatures: ``webhook-id``, ``webhook-timestamp``,
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``), with
``whsec_`` secrets. Several signatures may be sent at once (a secret rotation)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence

PREFIX = "whsec_"
TOLERANCE_S = 300


class SignatureError(ValueError):
    pass


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(PREFIX):
        raise SignatureError("a webhook secret starts with whsec_")
    try:
        return base64.b64decode(secret[len(PREFIX) :], validate=True)
    except ValueError as exc:
        raise SignatureError("the webhook secret is not valid base64") from exc


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers, signed with every given secret (old and new in a rotation)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets_),
        "content-type": "application/json",
    }


def verify(secret: str, headers_: Mapping[str, str], body: bytes, now: float) -> str:
    """Check a delivery from vidpipe; returns its webhook-id, else raises SignatureError.

    ``headers_`` may have any case. Refuses timestamps more than 5 minutes off (replays).
    """
    lower = {k.lower(): v for k, v in headers_.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError as exc:
        raise SignatureError("webhook-timestamp is not a number") from exc
    if abs(now - timestamp) > TOLERANCE_S:
        raise SignatureError("webhook-timestamp is too old or in the future")
    expected = sign(secret, msg_id, timestamp, body)
    for candidate in signatures.split():
        if hmac.compare_digest(candidate, expected):
            return msg_id
    raise SignatureError("no signature matches")
