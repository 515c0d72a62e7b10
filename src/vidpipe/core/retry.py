"""The retry policy: pure functions of the failure's class and history.

transient (network, 429, 5xx): exponential backoff with jitter, Retry-After honoured;
generation (the provider said it failed): re-submit once; quality (the output failed
validation): regenerate up to three times; permanent (bad input, auth, policy): never.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ErrorClass(StrEnum):
    TRANSIENT = "transient"
    GENERATION = "generation"
    QUALITY = "quality"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class RetryPolicy:
    transient_delays_s: tuple[float, ...] = (2.0, 4.0, 8.0)
    generation_resubmits: int = 1
    quality_regenerations: int = 3
    # Re-submits after a generation or quality failure wait this long.
    resubmit_delay_s: float = 1.0
    # Each delay is stretched by up to this fraction, so retries of many jobs that
    # failed together do not arrive together.
    jitter: float = 0.25
    max_retry_after_s: float = 600.0


def policy_for(
    provider: str, overrides: Mapping[str, Mapping[str, Any]], base: RetryPolicy | None = None
) -> RetryPolicy:
    """The policy of one provider: the base, then the "*" overrides, then its own."""
    policy = base or RetryPolicy()
    for key in ("*", provider):
        fields = {k: v for k, v in overrides.get(key, {}).items() if v is not None}
        if "transient_delays_s" in fields:
            fields["transient_delays_s"] = tuple(fields["transient_delays_s"])
        policy = dataclasses.replace(policy, **fields)
    return policy


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay_s: float = 0.0


def decide(
    policy: RetryPolicy,
    error_class: ErrorClass,
    failures_of_class: int,
    *,
    retry_after_s: float | None = None,
    rand: float = 0.0,
) -> RetryDecision:
    """Whether to try again after the ``failures_of_class``-th failure of this class.

    ``rand`` in [0, 1) feeds the jitter; callers pass ``random.random()``.
    """
    if failures_of_class < 1:
        raise ValueError("failures_of_class counts the failure being decided on: >= 1")
    if error_class is ErrorClass.PERMANENT:
        return RetryDecision(False)
    if error_class is ErrorClass.TRANSIENT:
        if failures_of_class > len(policy.transient_delays_s):
            return RetryDecision(False)
        delay = policy.transient_delays_s[failures_of_class - 1] * (1 + policy.jitter * rand)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, policy.max_retry_after_s))
        return RetryDecision(True, delay)
    budget = (
        policy.generation_resubmits
        if error_class is ErrorClass.GENERATION
        else policy.quality_regenerations
    )
    if failures_of_class > budget:
        return RetryDecision(False)
    return RetryDecision(True, policy.resubmit_delay_s * (1 + policy.jitter * rand))


def next_poll_delay_s(
    *, typical_latency_s: float, elapsed_s: float, hint_s: float | None = None
) -> float:
    """When to look at a provider job again.

    The first look comes near half the provider's typical latency; after that the
    interval grows with the time already waited (a quarter of it), between 0.25 s and
    30 s, so long jobs cost few polls and short jobs are noticed quickly. A provider's
    own hint is a floor (like Retry-After): it may slow polling down, never speed it up
    past the backoff.
    """
    delay = typical_latency_s * 0.5 if elapsed_s <= 0 else elapsed_s * 0.25
    if hint_s is not None:
        delay = max(delay, hint_s)
    return min(max(delay, 0.25), 30.0)
