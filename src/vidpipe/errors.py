"""The one exception root of vidpipe and its typed subclasses.

Each error carries a stable machine-readable ``code`` and the HTTP status the API
answers with, so the API maps every error in one place.
"""

from __future__ import annotations


class VidpipeError(Exception):
    """Root of every error vidpipe raises on purpose."""

    code: str = "internal_error"
    http_status: int = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status
        self.param = param


class InvalidRequest(VidpipeError):
    """The caller sent something we refuse; nothing was created or charged."""

    code = "invalid_request"
    http_status = 422


class NotFound(VidpipeError):
    code = "not_found"
    http_status = 404


class Unauthorized(VidpipeError):
    code = "unauthorized"
    http_status = 401


class Forbidden(VidpipeError):
    code = "forbidden"
    http_status = 403


class Conflict(VidpipeError):
    code = "conflict"
    http_status = 409


class IllegalTransition(VidpipeError):
    """A state change was asked of a row that was not in a state that allows it."""

    code = "illegal_transition"
    http_status = 409


class LeaseLost(VidpipeError):
    """A worker tried to write a step it no longer holds the lease of."""

    code = "lease_lost"


class ConfigError(VidpipeError):
    code = "config_error"


class MediaError(VidpipeError):
    """ffmpeg or probing failed on a file."""

    code = "media_error"


class ProviderError(VidpipeError):
    """Base of errors an adapter raises; the retry policy classifies by subclass."""

    code = "provider_error"
    http_status = 502

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after_s: float | None = None,
        provider_job_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s
        self.provider_job_id = provider_job_id


class TransientProviderError(ProviderError):
    """Network trouble, timeouts, 429, 5xx: worth retrying after a pause."""

    code = "provider_transient"


class PermanentProviderError(ProviderError):
    """Bad input, auth, policy: retrying will not help."""

    code = "provider_permanent"


class ProvenanceError(VidpipeError):
    """A valid output could not be watermarked or C2PA-signed as configured.

    The installation's to fix (key, certificate, time-stamp authority, watermark
    image), not the provider's: the output itself was fine.
    """

    code = "provenance_failed"
