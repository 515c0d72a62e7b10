import pytest

from vidpipe.core.states import (
    ATTEMPT_TRANSITIONS,
    JOB_TRANSITIONS,
    STEP_TRANSITIONS,
    JobStatus,
    StepState,
    sources_of,
)


def test_every_state_has_a_row() -> None:
    assert set(JOB_TRANSITIONS) == set(JobStatus)
    assert set(STEP_TRANSITIONS) == set(StepState)
    assert all(targets <= set(JobStatus) for targets in JOB_TRANSITIONS.values())


@pytest.mark.parametrize("status", [s for s in JobStatus if s.terminal])
def test_terminal_jobs_only_expire_or_a_failed_one_is_retried(status: JobStatus) -> None:
    allowed = {JobStatus.EXPIRED}
    if status is JobStatus.FAILED:
        allowed.add(JobStatus.QUEUED)  # POST /v1/videos/{id}/retry
    assert JOB_TRANSITIONS[status] <= allowed


@pytest.mark.parametrize("state", [s for s in StepState if s.terminal])
def test_terminal_steps_never_move(state: StepState) -> None:
    assert STEP_TRANSITIONS[state] == frozenset()


@pytest.mark.parametrize(
    ("target", "sources"),
    [
        (JobStatus.COMPLETED, {JobStatus.IN_PROGRESS}),
        (JobStatus.CANCELED, {JobStatus.QUEUED, JobStatus.IN_PROGRESS}),
        (
            JobStatus.EXPIRED,
            {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED},
        ),
        (JobStatus.QUEUED, {JobStatus.FAILED}),  # only a retry goes back to queued
    ],
)
def test_sources_of_jobs(target: JobStatus, sources: set[JobStatus]) -> None:
    assert set(sources_of(JOB_TRANSITIONS, target)) == sources


def test_attempts_are_final_once_finished() -> None:
    finished = [s for s, targets in ATTEMPT_TRANSITIONS.items() if not targets]
    assert {s.value for s in finished} == {"succeeded", "failed", "canceled"}
