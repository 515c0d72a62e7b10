"""Token buckets: one process's, and the table the servers of one ``vidpipe api`` share."""

from __future__ import annotations

import fcntl
import os
import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidpipe.api.ratelimit import LocalBuckets, RateLimited, RateLimiter, SharedBuckets

calls = st.lists(
    st.tuples(st.sampled_from(["acme", "beta", "gamma", "delta", "eps"]), st.floats(0, 3)),
    max_size=200,
)


@settings(max_examples=60, deadline=None)
@given(calls=calls)
def test_the_shared_table_answers_as_a_local_dict_does(calls: list[tuple[str, float]]) -> None:
    local, shared = LocalBuckets(), SharedBuckets(slots=64)
    now = 1000.0
    for tenant, step in calls:
        now += step
        assert shared.take(tenant, now, 2.0, 5) == pytest.approx(local.take(tenant, now, 2.0, 5))


def test_colliding_tenants_keep_their_own_buckets() -> None:
    # Two slots and three tenants: every lookup probes, none may share a bucket.
    shared = SharedBuckets(slots=4)
    for tenant in ("a", "b", "c"):
        assert [shared.take(tenant, 0.0, 1.0, 2) for _ in range(3)][:2] == [0.0, 0.0]
        assert shared.take(tenant, 0.0, 1.0, 2) == pytest.approx(1.0)


def test_a_full_table_starts_over_instead_of_refusing() -> None:
    shared = SharedBuckets(slots=2)
    for tenant in ("a", "b", "c", "d", "e"):
        assert shared.take(tenant, 0.0, 1.0, 1) == 0.0  # each new tenant gets its burst


def test_a_limiter_raises_with_the_wait() -> None:
    limiter = RateLimiter(per_s=4.0, burst=2, buckets=SharedBuckets(slots=8))
    limiter.check("t", now=10.0)
    limiter.check("t", now=10.0)
    with pytest.raises(RateLimited) as refused:
        limiter.check("t", now=10.0)
    assert refused.value.retry_after_s == pytest.approx(0.25)
    limiter.check("t", now=10.25)  # one token back after 1/4 s


def _in_children(count: int, body: object) -> list[int]:
    """Fork ``count`` children running ``body()`` -> small int; their answers."""
    pids = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            code = 255
            try:
                code = body()  # type: ignore[operator]
            finally:
                os._exit(code)
        pids.append(pid)
    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]


def test_forked_processes_draw_from_one_bucket() -> None:
    shared = SharedBuckets(slots=64)
    burst = 40

    def take_all() -> int:
        return sum(shared.take("acme", 5.0, 0.001, burst) == 0.0 for _ in range(100))

    granted = _in_children(4, take_all)
    # Without the shared table each process would be granted the whole burst.
    assert sum(granted) == burst, granted
    assert shared.take("acme", 5.0, 0.001, burst) > 0


def test_a_server_killed_inside_the_lock_does_not_stop_the_others() -> None:
    shared = SharedBuckets(slots=8)

    def die_holding_the_lock() -> int:
        fcntl.lockf(shared._lock_fd, fcntl.LOCK_EX)
        os.kill(os.getpid(), signal.SIGKILL)
        return 0

    assert _in_children(1, die_holding_the_lock) == [-signal.SIGKILL]
    assert shared.take("acme", 0.0, 1.0, 1) == 0.0  # the kernel dropped the dead one's lock
