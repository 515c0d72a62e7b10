"""The watchdog's rules: pure functions of a snapshot and the thresholds, by table."""

from __future__ import annotations

from typing import Any

import pytest

from vidpipe.obs.cluster import FailedJob, quantile
from vidpipe.obs.settings import ObsSettings
from vidpipe.obs.watchdog import (
    RULES,
    Snapshot,
    WorkerBeat,
    evaluate_rules,
    job_failed,
    job_p95,
    no_progress,
    provider_success_rate,
    queue_depth,
    stale_worker,
    success_rate,
)

NOW = 1_800_000_000.0
CFG = ObsSettings()  # defaults: 90 %, 95 %, 100 due, 900 s, 120 s, 900 s


def snap(**fields: Any) -> Snapshot:
    return Snapshot(now=NOW, window_s=3600.0, **fields)


def failed(job_id: str) -> FailedJob:
    return FailedJob(job_id, "runway/gen4_turbo", "content_policy", "refused", NOW - 60)


def test_defaults_are_the_issues() -> None:
    assert CFG.watchdog_success_rate_min == 0.90
    assert CFG.watchdog_provider_success_rate_min == 0.95
    assert CFG.watchdog_window_s == 3600
    assert set(RULES) == {
        "job_failed",
        "success_rate",
        "queue_depth",
        "job_p95",
        "provider_success_rate",
        "stale_worker",
        "no_progress",
    }


@pytest.mark.parametrize(
    ("finished", "fires"),
    [
        ({}, False),  # nothing finished
        ({"completed": 5, "failed": 4}, False),  # 9 < 10 samples
        ({"completed": 9, "failed": 1}, False),  # exactly 90 %
        ({"completed": 8, "failed": 2}, True),  # 80 %
        ({"completed": 0, "failed": 10}, True),
        ({"completed": 90, "failed": 11}, True),  # 89.1 %
        ({"completed": 10, "canceled": 50}, False),  # cancels are nobody's failure
    ],
)
def test_success_rate(finished: dict[str, int], fires: bool) -> None:
    alerts = success_rate(snap(jobs_finished=finished), CFG)
    assert bool(alerts) is fires
    if alerts:
        assert alerts[0].key == ""
        assert alerts[0].repeat_after_s == 3600.0
        assert alerts[0].severity == "critical"


@pytest.mark.parametrize(("depth", "fires"), [(0, False), (100, False), (101, True), (5000, True)])
def test_queue_depth(depth: int, fires: bool) -> None:
    alerts = queue_depth(snap(queue_depth=depth), CFG)
    assert bool(alerts) is fires
    if alerts:
        assert str(depth) in alerts[0].text


@pytest.mark.parametrize(
    ("durations", "fires"),
    [
        ([], False),
        ([2000.0] * 9, False),  # too few samples
        ([60.0] * 10, False),
        ([60.0] * 95 + [5000.0] * 5, False),  # p95 is the 95th of 100: 60 s
        ([60.0] * 94 + [5000.0] * 6, True),
        ([901.0] * 10, True),
        ([900.0] * 10, False),  # at the threshold
    ],
)
def test_job_p95(durations: list[float], fires: bool) -> None:
    assert bool(job_p95(snap(job_durations_s=durations), CFG)) is fires


@pytest.mark.parametrize(
    ("attempts", "firing"),
    [
        ({}, []),
        ({"runway": {"succeeded": 19, "failed": 1}}, []),  # 95 %
        ({"runway": {"succeeded": 18, "failed": 2}}, ["runway"]),  # 90 %
        ({"runway": {"succeeded": 5, "failed": 4}}, []),  # 9 samples
        (
            {"luma": {"failed": 10}, "runway": {"succeeded": 100}, "veo": {"succeeded": 1}},
            ["luma"],
        ),
        ({"a": {"failed": 20}, "b": {"succeeded": 1, "failed": 19}}, ["a", "b"]),
    ],
)
def test_provider_success_rate(attempts: dict[str, dict[str, int]], firing: list[str]) -> None:
    alerts = provider_success_rate(snap(provider_attempts=attempts), CFG)
    assert [a.key for a in alerts] == firing


@pytest.mark.parametrize(
    ("ages", "firing"),
    [
        ([], []),
        ([5.0, 119.0], []),
        ([5.0, 121.0], ["w1"]),
        ([3600.0, 200.0], ["w0", "w1"]),
        ([90000.0], []),  # a ghost from yesterday: not news
    ],
)
def test_stale_worker(ages: list[float], firing: list[str]) -> None:
    workers = [WorkerBeat(f"w{i}", "host", age) for i, age in enumerate(ages)]
    alerts = stale_worker(snap(workers=workers), CFG)
    assert [a.key for a in alerts] == firing
    assert all(a.repeat_after_s is None for a in alerts)  # once per worker


@pytest.mark.parametrize(
    ("due", "idle_s", "fires"),
    [
        (0, 10_000.0, False),  # nothing to do: quiet is fine
        (3, 60.0, False),
        (3, 900.0, False),
        (3, 901.0, True),
        (1, None, False),
    ],
)
def test_no_progress(due: int, idle_s: float | None, fires: bool) -> None:
    last = None if idle_s is None else NOW - idle_s
    assert bool(no_progress(snap(due_steps=due, last_progress_at=last), CFG)) is fires


def test_job_failed_once_per_job() -> None:
    alerts = job_failed(snap(failed_jobs=[failed("video_1"), failed("video_2")]), CFG)
    assert [a.key for a in alerts] == ["video_1", "video_2"]
    assert all(a.repeat_after_s is None for a in alerts)
    assert "content_policy" in alerts[0].text


def test_thresholds_come_from_settings_and_rules_can_be_disabled() -> None:
    s = snap(queue_depth=20, failed_jobs=[failed("video_1")])
    assert {a.rule for a in evaluate_rules(s, CFG)} == {"job_failed"}
    strict = ObsSettings(watchdog_queue_depth_max=10)
    assert {a.rule for a in evaluate_rules(s, strict)} == {"job_failed", "queue_depth"}
    quiet = ObsSettings(watchdog_queue_depth_max=10, watchdog_disabled_rules=["job_failed"])
    assert {a.rule for a in evaluate_rules(s, quiet)} == {"queue_depth"}
    with pytest.raises(ValueError, match="unknown watchdog rules"):
        ObsSettings(watchdog_disabled_rules=["nope"])


@pytest.mark.parametrize(
    ("values", "q", "want"),
    [
        ([], 0.95, None),
        ([3.0], 0.95, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([4.0, 1.0, 3.0, 2.0], 0.95, 4.0),
        ([float(i) for i in range(1, 101)], 0.95, 95.0),
        ([float(i) for i in range(1, 101)], 0.99, 99.0),
    ],
)
def test_quantile(values: list[float], q: float, want: float | None) -> None:
    assert quantile(values, q) == want
