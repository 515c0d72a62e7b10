"""Expiring, HMAC-SHA256-signed URLs for blobs served by vidpipe itself.

A signed URL is ``{path}?expires=<unix seconds>&sig=<hex>`` plus any other signed
parameters (``variant``, ``filename``). The signature covers the method, the path,
the expiry and every parameter, so none can be changed or added without the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlencode

from vidpipe.errors import ConfigError

__all__ = ["MIN_SECRET_BYTES", "UrlSigner", "sign", "signature", "verify"]

MIN_SECRET_BYTES = 16
# Large enough for any real expiry, small enough that int() stays cheap on garbage.
_MAX_EXPIRES_DIGITS = 12
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the URL signing secret must be at least {MIN_SECRET_BYTES} bytes "
            "(VIDPIPE_SIGNING_SECRET)",
            code="unsafe_config",
        )
    return key


def _canonical(method: str, path: str, params: Mapping[str, str]) -> bytes:
    if "\n" in path or not path.startswith("/"):
        raise ValueError(f"cannot sign path {path!r}")
    query = "&".join(
        f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in sorted(params.items())
    )
    return f"{method.upper()}\n{path}\n{query}".encode()


def signature(
    path: str,
    expires_at: int,
    secret: str | bytes,
    *,
    method: str = "GET",
    params: Mapping[str, str] | None = None,
) -> str:
    """The hex HMAC-SHA256 of (method, path, expires, params)."""
    signed = {**(params or {}), "expires": str(int(expires_at))}
    return hmac.new(_key(secret), _canonical(method, path, signed), hashlib.sha256).hexdigest()


def sign(
    path: str,
    expires_at: int,
    secret: str | bytes,
    *,
    method: str = "GET",
    variant: str | None = None,
    params: Mapping[str, str] | None = None,
) -> str:
    """``path`` with its signed query: ``/x?expires=…&sig=…`` (+ variant, params)."""
    signed = dict(params or {})
    if "expires" in signed or "sig" in signed:
        raise ValueError("'expires' and 'sig' are reserved parameter names")
    if variant is not None:
        signed["variant"] = variant
    sig = signature(path, expires_at, secret, method=method, params=signed)
    query = urlencode({**signed, "expires": str(int(expires_at)), "sig": sig})
    return f"{path}?{query}"


def verify(
    path: str,
    query: str | Mapping[str, str],
    now: float,
    secret: str | bytes,
    *,
    method: str = "GET",
) -> bool:
    """Whether ``query`` (raw, or parsed) holds a valid, unexpired signature of ``path``.

    A parameter given twice, a missing or malformed ``expires``/``sig``, a past
    expiry or any change to the path, method or parameters fails. The comparison is
    constant-time.
    """
    key = _key(secret)
    if isinstance(query, str):
        pairs = parse_qsl(query, keep_blank_values=True)
        params = dict(pairs)
        if len(params) != len(pairs):
            return False  # a repeated parameter: which one would the server read?
    else:
        params = dict(query)
    sig = params.pop("sig", None)
    expires = params.get("expires")
    if sig is None or expires is None or not _HEX_SHA256.fullmatch(sig):
        return False
    if (
        not (expires.isascii() and expires.isdigit())
        or len(expires) > _MAX_EXPIRES_DIGITS
        or int(expires) < now
    ):
        return False
    try:
        message = _canonical(method, path, params)
    except ValueError:
        return False
    expected = hmac.new(key, message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, sig.lower())


@dataclass(frozen=True)
class UrlSigner:
    """Signs URLs of the route that serves local blobs (``{base_url}{path_prefix}/{key}``).

    ``base_url`` is this server's public URL (``VIDPIPE_PUBLIC_URL``), or "" for
    relative URLs. The route passes the request's path and raw query to ``verify``.
    """

    secret: str | bytes
    base_url: str = ""
    path_prefix: str = "/v1/blobs"
    clock: Callable[[], float] = field(default=time.time)

    def __post_init__(self) -> None:
        _key(self.secret)  # refuse a weak secret at start-up, not at first use
        if self.path_prefix and not self.path_prefix.startswith("/"):
            raise ValueError("path_prefix must start with '/'")

    def path_for(self, key: str) -> str:
        return f"{self.path_prefix.rstrip('/')}/{key}"

    def url_for(self, key: str, expires_s: int, *, filename: str | None = None) -> str:
        if expires_s <= 0:
            raise ValueError("expires_s must be positive")
        expires_at = int(self.clock()) + expires_s
        params = {"filename": filename} if filename else None
        signed = sign(self.path_for(key), expires_at, self.secret, params=params)
        return f"{self.base_url.rstrip('/')}{signed}"

    def verify(self, path: str, query: str | Mapping[str, str]) -> bool:
        return verify(path, query, self.clock(), self.secret)
