import pytest

from vidpipe.core.retry import ErrorClass, RetryPolicy, decide, next_poll_delay_s, policy_for

POLICY = RetryPolicy(jitter=0.0)


@pytest.mark.parametrize(
    ("error_class", "nth", "retry_after", "retry", "delay"),
    [
        (ErrorClass.TRANSIENT, 1, None, True, 2.0),
        (ErrorClass.TRANSIENT, 2, None, True, 4.0),
        (ErrorClass.TRANSIENT, 3, None, True, 8.0),
        (ErrorClass.TRANSIENT, 4, None, False, 0.0),
        (ErrorClass.TRANSIENT, 1, 30.0, True, 30.0),  # Retry-After is honoured
        (ErrorClass.TRANSIENT, 3, 1.0, True, 8.0),  # ...but never shortens the backoff
        (ErrorClass.TRANSIENT, 1, 86400.0, True, 600.0),  # ...and is capped
        (ErrorClass.GENERATION, 1, None, True, 1.0),
        (ErrorClass.GENERATION, 2, None, False, 0.0),
        (ErrorClass.QUALITY, 3, None, True, 1.0),
        (ErrorClass.QUALITY, 4, None, False, 0.0),
        (ErrorClass.PERMANENT, 1, None, False, 0.0),
    ],
)
def test_decide(
    error_class: ErrorClass, nth: int, retry_after: float | None, retry: bool, delay: float
) -> None:
    decision = decide(POLICY, error_class, nth, retry_after_s=retry_after)
    assert decision.retry is retry
    assert decision.delay_s == pytest.approx(delay)


def test_jitter_stretches_within_bounds() -> None:
    policy = RetryPolicy(jitter=0.25)
    assert decide(policy, ErrorClass.TRANSIENT, 1, rand=0.0).delay_s == pytest.approx(2.0)
    assert decide(policy, ErrorClass.TRANSIENT, 1, rand=0.999).delay_s == pytest.approx(2.4995)


def test_failure_count_starts_at_one() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        decide(POLICY, ErrorClass.TRANSIENT, 0)


@pytest.mark.parametrize(
    ("typical", "elapsed", "hint", "expected"),
    [
        (10.0, 0.0, None, 5.0),  # first look near half the typical latency
        (0.0, 0.0, None, 0.25),  # never busier than 4 polls a second
        (120.0, 0.0, None, 30.0),  # never idler than 30 s
        (10.0, 4.0, None, 1.0),
        (10.0, 400.0, None, 30.0),
        (10.0, 4.0, 7.0, 7.0),  # the provider's hint slows polling down...
        (10.0, 4.0, 0.0, 1.0),  # ...never speeds it up past the backoff
        (10.0, 400.0, 5.0, 30.0),
    ],
)
def test_poll_delay(typical: float, elapsed: float, hint: float | None, expected: float) -> None:
    assert next_poll_delay_s(
        typical_latency_s=typical, elapsed_s=elapsed, hint_s=hint
    ) == pytest.approx(expected)


def test_per_provider_overrides_layer_on_the_default() -> None:
    overrides = {
        "*": {"quality_regenerations": 1},
        "runway": {"transient_delays_s": [5, 10], "jitter": None},
    }
    runway = policy_for("runway", overrides)
    assert runway.transient_delays_s == (5.0, 10.0)
    assert runway.quality_regenerations == 1
    assert runway.generation_resubmits == RetryPolicy().generation_resubmits
    assert policy_for("luma", overrides).transient_delays_s == (2.0, 4.0, 8.0)
    assert not decide(runway, ErrorClass.TRANSIENT, 3).retry
