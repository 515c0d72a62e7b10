"""What the executor tells observability: one-line hooks, each safe to call anywhere.

:func:`observed_action` wraps ``StepExecutor.run``: for the length of one step action it
binds the job, step, attempt, provider and trace ids to every log record, runs the
action inside a span of the job's trace, and times it. The other hooks record what
only the executor sees as it happens: stages (the events it writes), provider job
times, validation failures, the time to completed of the jobs it completes.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar

from vidpipe.obs import metrics, tracing
from vidpipe.obs.logging import bind, bound
from vidpipe.store.records import Attempt, Job, Step

log = logging.getLogger("vidpipe.jobs")

# The action a claimed step's state leads to (a poll may turn into a delivery).
ACTIONS = {
    "ready": "submit",
    "active": "poll",
    "canceling": "cancel",
    "blocked_budget": "admit",
}
_action: ContextVar[str] = ContextVar("vidpipe_step_action", default="")

# Attributes of a LogRecord that ``extra`` may not set.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

E = TypeVar("E")


def observed_action(
    run: Callable[[E, Step], Awaitable[None]],
) -> Callable[[E, Step], Awaitable[None]]:
    """Decorates ``StepExecutor.run``: log context, a span, and the action's duration."""

    @functools.wraps(run)
    async def wrapper(self: E, step: Step) -> None:
        action = ACTIONS.get(step.state, step.state)
        token = _action.set(action)
        started = time.perf_counter()
        try:
            with (
                tracing.job_span(
                    step.job_id,
                    f"step.{action}",
                    {
                        "vidpipe.job_id": step.job_id,
                        "vidpipe.step_id": step.id,
                        "vidpipe.provider": step.provider,
                        "vidpipe.model": step.model,
                    },
                ) as (trace_id, span_id),
                bound(
                    job_id=step.job_id,
                    step_id=step.id,
                    step=step.name,
                    attempt=step.attempt_count,
                    provider=step.provider,
                    model=step.model,
                    trace_id=trace_id,
                    span_id=span_id,
                ),
            ):
                outcome = "error"
                try:
                    await run(self, step)
                    outcome = "ok"
                finally:
                    _observe(step.provider, _action.get() or action, outcome, started)
        finally:
            _action.reset(token)

    return wrapper


def _observe(provider: str, action: str, outcome: str, started: float) -> None:
    elapsed = time.perf_counter() - started
    metrics.observe_step_action(provider, action, outcome, elapsed)
    log.debug(
        "step action %s took %.3f s",
        action,
        elapsed,
        extra={"action": action, "outcome": outcome, "duration_s": round(elapsed, 4)},
    )


def set_action(action: str) -> None:
    """Name what the current step action turned into (a poll that delivers: "deliver")."""
    _action.set(action)


def stage(event_type: str, data: Mapping[str, Any]) -> None:
    """A job event the executor records: one log line, with the step's context."""
    if "attempt" in data:
        bind(attempt=data["attempt"])
    level = logging.INFO
    if event_type == "video.progress":
        level = logging.DEBUG
    elif event_type in ("video.failed", "step.blocked_budget", "step.fallback"):
        level = logging.WARNING
    extra = {k: v for k, v in data.items() if k not in _RESERVED}
    log.log(level, event_type, extra={"event_type": event_type, **extra})


def attempt_ended(step: Step, attempt: Attempt, outcome: str, now: float) -> None:
    """A provider attempt got its final answer (failed, expired): its provider time."""
    metrics.observe_provider_job(step.provider, step.model, outcome, attempt.submitted_at, now)


def delivered(step: Step, attempt: Attempt, now: float, completed: Job | None) -> None:
    """A step's output was stored: the provider's time, and the job's when this very
    delivery ``completed`` it (the job as its transaction left it, not read back)."""
    metrics.observe_provider_job(step.provider, step.model, "succeeded", attempt.submitted_at, now)
    if completed is None:
        return
    metrics.observe_job_completed(step.provider, completed.created_at, now)
    log.info(
        "job completed in %.1f s",
        now - completed.created_at,
        extra={"duration_s": round(now - completed.created_at, 3)},
    )


def validation_failed(provider: str, code: str, report: Mapping[str, Any] | None) -> None:
    """An output was rejected by validation: count each failed check."""
    metrics.count_validation_failure(provider, code, report)
