"""The client's one exception root and its typed subclasses.

Every error the server answers with (``{"error": {"code", "message", "param", "type"}}``)
becomes an :class:`APIError` subclass chosen by the HTTP status; transport failures become
:class:`APIConnectionError`, raised from the httpx exception.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from vidpipe.client._models import Video


class VidpipeClientError(Exception):
    """Root of every error the vidpipe client raises."""


class APIConnectionError(VidpipeClientError):
    """The server could not be reached, or the connection broke (after any retries)."""


class APIError(VidpipeClientError):
    """The server answered with an error status; ``code`` is vidpipe's stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        *,
        type: str | None = None,
        headers: httpx.Headers | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.type = type
        self.headers = headers if headers is not None else httpx.Headers()


class InvalidRequest(APIError):
    """400, 413, 415 or 422: the request was refused and nothing was created."""


class AuthenticationError(APIError):
    """401: no API key, or an unknown or revoked one."""


class PermissionDenied(APIError):
    """403: the key is valid but may not do this (e.g. an admin-only route)."""


class NotFound(APIError):
    """404: no such video (or another tenant's), or no such route."""


class Conflict(APIError):
    """409: the video is not in a state that allows this (not ready, not cancelable, not
    retryable)."""


class BudgetExceeded(APIError):
    """402: a budget or the prepaid credit has no room for this video."""


class RateLimited(APIError):
    """429: a usage limit was reached; ``retry_after_s`` is the server's hint, if any."""

    def __init__(self, *args: Any, retry_after_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after_s = retry_after_s


class ServerError(APIError):
    """5xx: the server failed (after any retries)."""


class VideoFailed(VidpipeClientError):
    """``wait`` saw the video end without completing (failed, canceled or expired)."""

    def __init__(self, video: Video) -> None:
        reason = f"{video.error.code}: {video.error.message}" if video.error else video.status
        super().__init__(f"video {video.id} ended {video.status} ({reason})")
        self.video = video
        self.status = video.status
        self.code = video.error.code if video.error else None


class WaitTimeout(VidpipeClientError, TimeoutError):
    """``wait`` gave up before the video reached a terminal status."""

    def __init__(self, video: Video, timeout_s: float) -> None:
        super().__init__(
            f"video {video.id} still {video.status} ({video.progress}%) after {timeout_s:g} s"
        )
        self.video = video
        self.timeout_s = timeout_s


class PlanError(VidpipeClientError, ValueError):
    """A :class:`~vidpipe.client.Plan` was built wrongly (found before anything is sent)."""


class WebhookVerificationError(VidpipeClientError):
    """A webhook delivery's signature, timestamp or body did not check out."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    402: BudgetExceeded,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
}


def error_class(status: int) -> type[APIError]:
    """The exception class for an error status."""
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, APIError)
