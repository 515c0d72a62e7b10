"""Run every benchmark and print a markdown table (``make bench``).

Each benchmark runs in its own process, one after the other (they would disturb each
other on 2 cores), and prints a ``BENCH_RESULT {json}`` line; this script collects
those lines, writes them to bench/out/run_all-results.json and prints the table.

    python bench/run_all.py [--runs 2] [--only post_videos,pickup_latency]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from benchlib import BENCH_DIR, REPO, RESULT_PREFIX, machine, note


@dataclass(frozen=True)
class Case:
    name: str
    script: str
    db: str
    args: tuple[str, ...] = ()


CASES = (
    Case("post_videos", "post_videos.py", "sqlite"),
    Case("post_videos", "post_videos.py", "sqlite", ("--processes", "2")),
    Case("post_videos", "post_videos.py", "postgres"),
    Case("post_videos", "post_videos.py", "postgres", ("--processes", "2")),
    Case("orchestration", "orchestration.py", "sqlite"),
    Case("orchestration", "orchestration.py", "postgres"),
    Case("pickup_latency", "pickup_latency.py", "postgres"),
    Case("pickup_latency", "pickup_latency.py", "sqlite"),
    Case("sql_census", "sql_census.py", "sqlite"),
    Case("sql_census", "sql_census.py", "postgres"),
)
CASE_TIMEOUT_S = 900.0


def run_case(case: Case) -> dict[str, Any]:
    cmd = [sys.executable, str(BENCH_DIR / case.script), "--db", case.db, *case.args]
    note(f"running {' '.join(cmd[1:])}")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=CASE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the benchmark cleans up after itself
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        return {"bench": case.name, "db": case.db, "error": f"timeout {CASE_TIMEOUT_S:.0f} s"}
    lines = [x for x in stdout.splitlines() if x.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(stderr[-3000:])
        return {"bench": case.name, "db": case.db, "error": f"exit {proc.returncode}"}
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


def headline(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"FAILED ({result['error']})"
    name = result["bench"]
    if name == "post_videos":
        return (
            f"{result['requests_per_s']:.0f} req/s, p50 {result['p50_ms']:.1f} ms, "
            f"p99 {result['p99_ms']:.1f} ms, {result['errors']} errors "
            f"({result['api_cpu_ms_per_request']:.2f} ms API CPU/req, {result['loadgen']}, "
            f"{result.get('api_processes', 1)} API process(es))"
        )
    if name == "orchestration":
        return (
            f"{result['jobs_per_s']:.0f} jobs/s, {result['cpu_ms_per_job']:.1f} ms CPU/job "
            f"({result['completed']}/{result['jobs']} completed)"
        )
    if name == "pickup_latency":
        return (
            f"p50 {result['p50_ms']:.1f} / p95 {result['p95_ms']:.1f} / "
            f"p99 {result['p99_ms']:.1f} ms (idle poll {result['idle_poll_s']:g} s)"
        )
    if name == "sql_census":
        parts = []
        for label, key in (("per POST", "per_post"), ("per job (worker)", "per_job_worker")):
            c = result[key]
            threads = (
                f", {c['dbapi_thread_calls']:g} aiosqlite calls" if result["db"] == "sqlite" else ""
            )
            parts.append(
                f"{label}: {c['transactions']:g} txns, {c['statements']:g} statements"
                f"{threads}, {c['new_connections']:g} new connections"
            )
        return "; ".join(parts)
    return json.dumps(result)


def met(result: dict[str, Any]) -> str:
    value = result.get("goal_met")
    return "—" if value is None else ("yes" if value else "**no**")


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted src changes' if dirty else ''}"


def table(runs: list[list[dict[str, Any]]]) -> str:
    header = ["benchmark", "db", "goal"]
    header += [f"run {i + 1}" for i in range(len(runs))] + ["goal met", "others' load (cores)"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, first in enumerate(runs[0]):
        results = [run[index] for run in runs]
        busy = ", ".join(str(r.get("host_busy_cores_before", "—")) for r in results)
        cells = [first["bench"], first["db"], str(first.get("goal") or "—")]
        cells += [headline(r) for r in results]
        cells += [" / ".join(met(r) for r in results), busy]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="run everything this many times")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    args = parser.parse_args()
    only = {x for x in args.only.split(",") if x}
    cases = [c for c in CASES if not only or c.name in only]
    runs = [[run_case(case) for case in cases] for _ in range(args.runs)]
    facts = machine()
    out = BENCH_DIR / "out"
    out.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    (out / "run_all-results.json").write_text(
        json.dumps({"date": stamp, "git": git_state(), "machine": facts, "runs": runs}, indent=2)
    )
    print(
        f"vidpipe benchmarks, {stamp}, git {git_state()}: {facts['nproc']} cores "
        f"({facts['cpu_model']}), Python {facts['python']}\n"
    )
    print(table(runs))
    print(
        "\n`others' load` is how busy the machine was (in cores) just before each measured "
        "phase, from /proc/stat; above ~0.3 the figures are disturbed."
    )


if __name__ == "__main__":
    main()
