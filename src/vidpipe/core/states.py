"""Every state of jobs, steps and attempts, and which transitions are legal.

The maps here are the single statement of the state machines; the store applies each
transition as a guarded ``UPDATE … WHERE state IN (allowed sources)`` and raises
``IllegalTransition`` when no row was in an allowed state.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

S = TypeVar("S", bound=StrEnum)


class JobStatus(StrEnum):
    """Public job statuses (the OpenAI Videos vocabulary plus canceled and expired)."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.IN_PROGRESS)


class StepState(StrEnum):
    PENDING = "pending"  # waits for the steps it depends on
    READY = "ready"  # due at run_at, nothing submitted yet for the current attempt
    ACTIVE = "active"  # an attempt is at the provider; polled at run_at
    CANCELING = "canceling"  # the job was canceled; the provider job must be stopped
    BLOCKED = "blocked_budget"  # no budget or credit for the next attempt: rechecked
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"  # still at the provider when its deadline passed

    @property
    def terminal(self) -> bool:
        return self in (
            StepState.SUCCEEDED,
            StepState.FAILED,
            StepState.CANCELED,
            StepState.EXPIRED,
        )


class AttemptState(StrEnum):
    SUBMITTING = "submitting"  # recorded before the provider call
    SUBMITTED = "submitted"  # the provider's job id is recorded
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


# Steps a worker may claim when due.
CLAIMABLE_STEP_STATES = (
    StepState.READY,
    StepState.ACTIVE,
    StepState.CANCELING,
    StepState.BLOCKED,
)

JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.IN_PROGRESS, JobStatus.FAILED, JobStatus.CANCELED}),
    JobStatus.IN_PROGRESS: frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED}),
    JobStatus.COMPLETED: frozenset({JobStatus.EXPIRED}),
    # A failed job may be retried: it queues again and resumes from its failed steps.
    JobStatus.FAILED: frozenset({JobStatus.EXPIRED, JobStatus.QUEUED}),
    JobStatus.CANCELED: frozenset({JobStatus.EXPIRED}),
    JobStatus.EXPIRED: frozenset(),
}

STEP_TRANSITIONS: dict[StepState, frozenset[StepState]] = {
    StepState.PENDING: frozenset({StepState.READY, StepState.CANCELED, StepState.FAILED}),
    StepState.READY: frozenset(
        {
            StepState.READY,
            StepState.ACTIVE,
            # A step vidpipe runs itself finishes in one go, from ready.
            StepState.SUCCEEDED,
            StepState.FAILED,
            StepState.CANCELED,
            StepState.BLOCKED,
        }
    ),
    StepState.BLOCKED: frozenset(
        {
            StepState.BLOCKED,
            StepState.READY,
            StepState.ACTIVE,
            StepState.FAILED,
            StepState.CANCELED,
        }
    ),
    StepState.ACTIVE: frozenset(
        {
            StepState.ACTIVE,
            StepState.READY,  # the attempt failed and a new one is scheduled
            StepState.SUCCEEDED,
            StepState.FAILED,
            StepState.CANCELING,
            StepState.EXPIRED,
        }
    ),
    StepState.CANCELING: frozenset({StepState.CANCELED}),
    StepState.SUCCEEDED: frozenset(),
    StepState.FAILED: frozenset(),
    StepState.CANCELED: frozenset(),
    StepState.EXPIRED: frozenset(),
}

# What a retry of a failed job does to its unfinished steps: they wait again (ready, or
# pending behind a step that is itself retried). Succeeded steps are never touched.
RETRYABLE_STEP_STATES = (StepState.FAILED, StepState.EXPIRED, StepState.CANCELED)

ATTEMPT_TRANSITIONS: dict[AttemptState, frozenset[AttemptState]] = {
    AttemptState.SUBMITTING: frozenset(
        {AttemptState.SUBMITTED, AttemptState.FAILED, AttemptState.CANCELED}
    ),
    AttemptState.SUBMITTED: frozenset(
        {AttemptState.SUCCEEDED, AttemptState.FAILED, AttemptState.CANCELED}
    ),
    AttemptState.SUCCEEDED: frozenset(),
    AttemptState.FAILED: frozenset(),
    AttemptState.CANCELED: frozenset(),
}


def sources_of(transitions: dict[S, frozenset[S]], target: S) -> tuple[S, ...]:
    """The states from which ``target`` may be entered."""
    return tuple(src for src, targets in transitions.items() if target in targets)
