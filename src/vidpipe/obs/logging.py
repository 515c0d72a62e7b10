"""Structured logs: every record, from vidpipe or a library, as JSON or for people.

vidpipe code keeps logging through the standard library (``logging.getLogger``);
structlog renders every record and adds what is bound to the current context
(``job_id``, ``step_id``, ``attempt``, ``provider``, ``trace_id``, …: see
:mod:`vidpipe.obs.step`). Context is a ``contextvars`` binding, so each asyncio task (a
step action) carries its own.

Secrets never reach the output: the configured secrets themselves (every ``SecretStr``
setting) are replaced wherever they appear, values under secret-sounding keys are
replaced, and every string is scrubbed of bearer tokens, vidpipe API keys, ``whsec_``
secrets, URL passwords and credentials in query strings; all of it after exceptions
are formatted (a traceback may quote a URL or a header).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

import structlog
from opentelemetry import trace
from pydantic import BaseModel, SecretStr, ValidationError
from structlog.typing import EventDict, Processor, WrappedLogger

from vidpipe.obs.settings import ObsSettings, obs_settings

REDACTED = "[redacted]"

# Keys whose string values are secrets, wherever they appear in a record.
_SECRET_KEY = re.compile(
    r"(?i)(^|[_-])(authorization|api[_-]?key|apikey|secret|password|passwd|token|"
    r"access[_-]?key|credentials?|cookie)$"
)
_SCRUBS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization header values, however they were quoted.
    (re.compile(r"(?i)\b(bearer|basic|token)(\s+|=)[\w.~+/=:-]{6,}"), rf"\1\2{REDACTED}"),
    # vidpipe API keys: vp_<8-character prefix>_<secret> (the prefix alone is no secret).
    (re.compile(r"\b(vp_[A-Za-z0-9]{8})_[A-Za-z0-9_-]{6,}"), rf"\1_{REDACTED}"),
    # Standard Webhooks secrets (ours and providers').
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]+"), f"whsec_{REDACTED}"),
    # Credentials in query strings (API keys, signed URLs of our own and of S3).
    (
        re.compile(
            r"(?i)([?&](?:key|api_key|apikey|token|access_token|sig|signature|"
            r"x-amz-signature|x-amz-credential|x-amz-security-token)=)[^&\s\"'<>]+"
        ),
        rf"\1{REDACTED}",
    ),
    # user:password@ in URLs (database and proxy URLs).
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@/\s]+@"), rf"\1{REDACTED}@"),
)


# The configured secrets themselves (provider keys, signing secrets), replaced wherever
# they appear, whatever their shape: see remember_secrets().
_known_secrets: set[str] = set()


def remember_secrets(settings: BaseModel) -> None:
    """Never log the values of ``settings``' SecretStr fields, wherever they appear."""
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr) and len(value.get_secret_value()) >= 6:
            _known_secrets.add(value.get_secret_value())


def scrub(text: str) -> str:
    """``text`` without anything that looks like a credential."""
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _SCRUBS:
        text = pattern.sub(replacement, text)
    return text


def _clean(key: str, value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return REDACTED if key and _SECRET_KEY.search(key) else scrub(value)
    if depth < 4 and isinstance(value, Mapping):
        return {k: _clean(str(k), v, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, list | tuple):
        return [_clean("", v, depth + 1) for v in value]
    return value


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: secrets out of every value (after exceptions are formatted)."""
    return {k: _clean(k, v) for k, v in event_dict.items()}


def add_trace_ids(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """The current OpenTelemetry span's ids, unless the context already bound them."""
    if "trace_id" not in event_dict:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            event_dict["trace_id"] = format(ctx.trace_id, "032x")
            event_dict["span_id"] = format(ctx.span_id, "016x")
    return event_dict


_FIRST = ("timestamp", "level", "logger", "message")


def _lead_with_essentials(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """When, how bad, who and what first; the context after."""
    first = {k: event_dict[k] for k in _FIRST if k in event_dict}
    return first | {k: v for k, v in event_dict.items() if k not in first}


def _renderer(fmt: str, stream: TextIO) -> list[Processor]:
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    if fmt == "json":
        return [
            structlog.processors.EventRenamer("message"),
            _lead_with_essentials,
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    return [structlog.dev.ConsoleRenderer(colors=stream.isatty())]


def setup(settings: ObsSettings | None = None, *, stream: TextIO | None = None) -> None:
    """Route every log record of this process through structlog to ``stream`` (stderr).

    ``VIDPIPE_LOG_FORMAT`` (auto, json, console) and ``VIDPIPE_LOG_LEVEL`` choose the
    rendering and the least severity. Safe to call again (tests, re-configuration).
    """
    if settings is None:
        try:
            settings = obs_settings()
        except ValidationError as exc:
            raise SystemExit(f"invalid settings: {exc}") from None
    stream = stream or sys.stderr
    _remember_configured_secrets()
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact,
            *_renderer(settings.log_format, stream),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.set_name("vidpipe")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "vidpipe" or _is_basic(h)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)


def _remember_configured_secrets() -> None:
    from vidpipe.config import Settings

    try:
        remember_secrets(Settings())
    except Exception:  # invalid settings are reported by the command that reads them
        return


def _is_basic(handler: logging.Handler) -> bool:
    """A plain stderr handler such as logging.basicConfig installs."""
    return type(handler) is logging.StreamHandler and getattr(handler, "stream", None) in (
        sys.stderr,
        sys.stdout,
    )


def bind(**values: Any) -> None:
    """Add ``values`` to every log record of the current context (task) from now on."""
    structlog.contextvars.bind_contextvars(**values)


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """``values`` on every log record inside the block, the previous binding after it."""
    with structlog.contextvars.bound_contextvars(**values):
        yield
