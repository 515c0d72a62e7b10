"""Benchmark: a whole offline short, topic to validated MP4, with ``vidpipe short``.

Each run is one ``vidpipe short "<topic>" --template fun_facts --seconds 60`` in a
fresh ``VIDPIPE_HOME`` (SQLite, local storage, every default: piper voice when
installed, captions, generated music, full validation, thumbnail/poster/preview), as a
user runs it: the command builds the plan, runs an embedded worker until the job ends
and copies the MP4 out. Measured per run:

* **wall** from starting the process to its exit, and **CPU** (user + system) of the
  process and every process it waited for (ffmpeg), from ``RUSAGE_CHILDREN``;
* **per step** (from the job's events: first ``step.started`` to ``step.succeeded``)
  and the phases of the critical path: start-up (process start to job created),
  preparation (job created to the compose step's start: script, images, speech,
  captions, music), the compose step, and the tail (job completed to process exit);
* **inside the compose step**, from probes wrapped around named functions in the
  child (thin wrappers, microseconds per call): ``compose()`` itself, the full
  validation (``analyze``), the derivatives (thumbnail, poster, preview), and the rest
  (hashing, storing, database writes); with the wall time, the CPU time of the ffmpeg
  children of each (these phases run one after the other, so the per-phase CPU is
  theirs) and of the process itself, split by thread;
* the output: probed (size, duration, audio) and the stored validation verdict;
* how loaded the machine was: load average before and the highest during the run,
  and the busy cores of the whole machine over the run (others' load included).

After the runs, the components that run before compose are timed alone, one after
the other, in this process (``--no-isolated`` skips it): piper speaking every scene
of the last run's script (voice loading apart) and the music bed; then the x264 floor
for the output's length (the composer's preset and CRF on ``testsrc2``).

    python bench/short_e2e.py [--runs 3] [--seconds 60] [--template fun_facts]
        [--topic octopuses] [--no-probes] [--no-isolated] [--keep DIR]

Prints JSON and a ``BENCH_RESULT`` line.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

GOAL_WALL_S = 60.0
# The template's frame and the composer's encoder settings (ComposeSpec defaults).
WIDTH, HEIGHT, FPS, PRESET, CRF = 1080, 1920, 30, "veryfast", 20
CHILD_FLAG = "--child-probes"


# --- the child: `vidpipe short` with probes ---------------------------------------------


def _cpu() -> tuple[float, float]:
    """(this process, its waited-for children) CPU seconds, user + system."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _threads_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of each thread of this process, labelled by its Python thread."""
    names = {}
    for thread in threading.enumerate():
        if thread.native_id is not None:
            kind = type(thread).__name__
            base = thread.name.split("-")[0].split("_")[0].split(" ")[0]
            names[thread.native_id] = base if kind == "Thread" else kind
    main = threading.main_thread().native_id
    found: dict[int, tuple[str, float]] = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            tid = int(task.name)
            label = "main" if tid == main else names.get(tid, "native")
            found[tid] = (label, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return found


def _threads_delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds used between two snapshots, summed by thread label."""
    used: dict[str, float] = {}
    for tid, (label, cpu) in after.items():
        spent = cpu - before.get(tid, (label, 0.0))[1]
        used[label] = round(used.get(label, 0.0) + spent, 2)
    return {k: v for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v > 0}


class _Probes:
    """Start/end time and CPU snapshots of every call of the wrapped functions."""

    # Calls that run alone (the compose step's phases): their CPU is split by thread.
    BY_THREAD = frozenset({"compose", "validation", "derivatives"})

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def _begin(self, name: str) -> tuple[float, tuple[float, float], Any]:
        threads = _threads_cpu() if name in self.BY_THREAD else None
        return time.time(), _cpu(), threads

    def _end(self, name: str, begun: tuple[float, tuple[float, float], Any]) -> None:
        start, cpu0, threads0 = begun
        end, cpu1 = time.time(), _cpu()
        call: dict[str, Any] = {
            "name": name,
            "start": start,
            "end": end,
            "self_cpu": [cpu0[0], cpu1[0]],
            "children_cpu": [cpu0[1], cpu1[1]],
        }
        if threads0 is not None:
            live = _threads_delta(threads0, _threads_cpu())
            # Threads that ended within the call (compose's own pool) are gone from /proc.
            gone = cpu1[0] - cpu0[0] - sum(live.values())
            call["threads_cpu"] = {**live, "ended_threads": round(max(gone, 0.0), 2)}
        with self._lock:
            self.calls.append(call)

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        original = getattr(owner, attr)
        if _is_async(original):

            @functools.wraps(original)
            async def async_probe(*args: Any, **kwargs: Any) -> Any:
                begun = self._begin(name)
                try:
                    return await original(*args, **kwargs)
                finally:
                    self._end(name, begun)

            setattr(owner, attr, async_probe)
            return

        @functools.wraps(original)
        def probe(*args: Any, **kwargs: Any) -> Any:
            begun = self._begin(name)
            try:
                return original(*args, **kwargs)
            finally:
                self._end(name, begun)

        setattr(owner, attr, probe)


def _is_async(function: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(function)


def _install_probes(probes: _Probes) -> None:
    """Wrap the functions each piece of work goes through, where its caller looks
    them up (a module attribute read at call time)."""
    from vidpipe.core import delivery
    from vidpipe.media import compose, derivatives, speech
    from vidpipe.plans import handlers, runner
    from vidpipe.shorts import visuals

    probes.wrap(speech, "synthesize", "speech")
    probes.wrap(speech, "_load_piper", "piper_load")
    probes.wrap(visuals, "render_scene_image", "image")
    probes.wrap(handlers, "generate_music", "music")
    probes.wrap(compose, "compose", "compose")
    probes.wrap(delivery, "analyze", "validation")
    for name in ("make_thumbnail", "make_poster", "make_preview"):
        probes.wrap(derivatives, name, "derivatives")
    probes.wrap(delivery.Delivery, "store", "store")
    probes.wrap(runner.LocalStepRunner, "_deliver_final", "deliver_final")
    probes.wrap(runner.LocalStepRunner, "_finish", "finish")


def child_main(probe_file: Path, argv: list[str]) -> None:
    """Run the vidpipe CLI with ``argv``, probes installed; write them at exit."""
    probes = _Probes()
    started = time.time()
    if os.environ.get("BENCH_NO_PROBES") != "1":
        # functools.cache of _load_piper must be wrapped before its first call.
        _install_probes(probes)
    from vidpipe.cli.app import app

    code: int | str | None = 0
    try:
        app(args=argv, prog_name="vidpipe")
    except SystemExit as exc:
        code = exc.code
    finally:
        self_cpu, children_cpu = _cpu()
        probe_file.write_text(
            json.dumps(
                {
                    "started": started,
                    "ended": time.time(),
                    "self_cpu_s": self_cpu,
                    "children_cpu_s": children_cpu,
                    "calls": probes.calls,
                }
            )
        )
    raise SystemExit(code)


# --- the parent: runs, events, summaries --------------------------------------------------


def _events(db: Path) -> tuple[str, list[tuple[str, dict[str, Any], float]], dict[str, Any]]:
    """The job's id, its events (type, data, created_at) and its steps' outputs."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        (job_id,) = conn.execute("SELECT id FROM jobs").fetchone()
        rows = conn.execute(
            "SELECT type, data, created_at FROM events WHERE job_id = ? ORDER BY id", (job_id,)
        ).fetchall()
        outputs = {
            name: json.loads(output) if output else None
            for name, output in conn.execute(
                "SELECT name, output FROM steps WHERE job_id = ?", (job_id,)
            )
        }
        verdict = conn.execute(
            "SELECT validation FROM assets WHERE job_id = ? AND name = 'video.mp4'", (job_id,)
        ).fetchone()
    outputs["_validation"] = json.loads(verdict[0]) if verdict and verdict[0] else None
    return job_id, [(t, json.loads(d), float(c)) for t, d, c in rows], outputs


def _step_times(events: list[tuple[str, dict[str, Any], float]]) -> dict[str, dict[str, float]]:
    steps: dict[str, dict[str, float]] = {}
    for kind, data, at in events:
        name = data.get("step")
        if not name:
            continue
        if kind == "step.started":
            steps.setdefault(name, {"start": at})
        elif kind == "step.succeeded":
            steps.setdefault(name, {"start": at})["end"] = at
    return steps


def _first(events: list[tuple[str, dict[str, Any], float]], kind: str) -> float | None:
    return next((at for k, _d, at in events if k == kind), None)


def _sum_calls(calls: list[dict[str, Any]], name: str, *, cpu: bool) -> dict[str, float]:
    """Calls, summed wall time and first start to last end of the calls of ``name``.

    ``cpu``: with the CPU of this process and of its ffmpeg children from the first
    call's start to the last one's end, which is theirs only where nothing else ran
    meanwhile (the compose step's phases, whose calls may run side by side, like the
    derivatives; before compose, steps run four at a time and each other's CPU would
    be counted).
    """
    mine = [c for c in calls if c["name"] == name]
    if not mine:
        return {"calls": 0}
    found = {
        "calls": len(mine),
        "wall_s": round(sum(c["end"] - c["start"] for c in mine), 2),
        "span_s": round(max(c["end"] for c in mine) - min(c["start"] for c in mine), 2),
    }
    if cpu:
        first = min(mine, key=lambda c: c["start"])
        last = max(mine, key=lambda c: c["end"])
        found["ffmpeg_cpu_s"] = round(last["children_cpu"][1] - first["children_cpu"][0], 2)
        found["process_cpu_s"] = round(last["self_cpu"][1] - first["self_cpu"][0], 2)
    return found


def _busy_wall(calls: list[dict[str, Any]], name: str) -> float:
    """Wall time during which at least one call of ``name`` ran (overlaps merged)."""
    spans = sorted((c["start"], c["end"]) for c in calls if c["name"] == name)
    total, cursor = 0.0, float("-inf")
    for start, end in spans:
        if end > cursor:
            total += end - max(start, cursor)
            cursor = end
    return round(total, 2)


def _probe_output(path: Path) -> dict[str, Any]:
    from vidpipe.media.probe import probe

    info = probe(path)
    return {
        "duration_s": round(info.duration_s, 3),
        "width": info.video.width if info.video else None,
        "height": info.video.height if info.video else None,
        "fps": info.video.fps if info.video else None,
        "video_codec": info.video.codec if info.video else None,
        "audio_codec": info.audio.codec if info.audio else None,
        "bytes": info.size_bytes,
    }


class _LoadSampler:
    """The 1-minute load average, sampled every second while a run goes on."""

    def __init__(self) -> None:
        self.highest = os.getloadavg()[0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self.highest = max(self.highest, os.getloadavg()[0])

    def __enter__(self) -> _LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def one_run(args: argparse.Namespace, index: int, keep: Path | None) -> dict[str, Any]:
    from benchlib import HostCpu, bench_env, note, scratch_dir, wait_for_quiet

    with scratch_dir("short") as scratch:
        home = scratch / "home"
        out = scratch / "short.mp4"
        probe_file = scratch / "probes.json"
        log = scratch / "child.log"
        env = bench_env(home, None)
        if args.no_probes:
            env["BENCH_NO_PROBES"] = "1"
        argv = ["short", args.topic, "--template", args.template, "--seconds", str(args.seconds)]
        argv += ["--output", str(out)]
        busy_before = wait_for_quiet(max_wait_s=args.quiet_wait)
        load_before = os.getloadavg()
        note(f"run {index + 1}: vidpipe {' '.join(argv[:-2])} (load {load_before[0]:.2f})")
        host = HostCpu()
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        with _LoadSampler() as load, log.open("wb") as handle:
            started = time.time()
            t0 = time.monotonic()
            done = subprocess.run(
                [sys.executable, __file__, CHILD_FLAG, str(probe_file), "--", *argv],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=args.timeout,
                check=False,
            )
            wall = time.monotonic() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy = host.busy_cores()
        if done.returncode != 0:
            raise RuntimeError(
                f"vidpipe short exited {done.returncode}:\n{log.read_text()[-3000:]}"
            )
        cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        job_id, events, outputs = _events(home / "vidpipe.db")
        child = json.loads(probe_file.read_text())
        calls: list[dict[str, Any]] = child["calls"]
        steps = _step_times(events)
        created = _first(events, "video.queued") or started
        completed = _first(events, "video.completed") or time.time()
        compose = steps["compose"]
        output = _probe_output(out)
        compose_output = outputs.get("compose") or {}
        per_step = {
            name: round(span["end"] - span["start"], 2)
            for name, span in sorted(steps.items())
            if "end" in span
        }
        inner = {
            name: _sum_calls(calls, name, cpu=True)
            for name in ("compose", "validation", "derivatives", "store", "deliver_final")
        }
        # Wall with overlaps merged: the derivatives run side by side.
        busy = {n: _busy_wall(calls, n) for n in ("compose", "validation", "derivatives")}
        inner_known = sum(busy.values())
        result: dict[str, Any] = {
            "run": index + 1,
            "job_id": job_id,
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "process_cpu_s": round(child["self_cpu_s"], 2),
            "ffmpeg_cpu_s": round(child["children_cpu_s"], 2),
            "goal_met": wall <= GOAL_WALL_S,
            "phases_s": {
                "startup": round(created - started, 2),
                "prepare": round(compose["start"] - created, 2),
                "compose_step": round(compose["end"] - compose["start"], 2),
                "tail": round(started + wall - completed, 2),
            },
            "compose_step_s": {
                "compose": busy["compose"],
                "validation": busy["validation"],
                "derivatives": busy["derivatives"],
                "rest": round(compose["end"] - compose["start"] - inner_known, 2)
                if calls
                else None,
            },
            "compose_step_cpu_s": {
                name: {
                    "ffmpeg": inner[name].get("ffmpeg_cpu_s"),
                    "process": inner[name].get("process_cpu_s"),
                    "process_by_thread": next(
                        (c.get("threads_cpu") for c in calls if c["name"] == name), None
                    ),
                }
                for name in ("compose", "validation", "derivatives")
            },
            "before_compose": {
                "speech_busy_s": _busy_wall(calls, "speech"),
                "speech": _sum_calls(calls, "speech", cpu=False),
                "piper_load": _sum_calls(calls, "piper_load", cpu=False),
                "images_busy_s": _busy_wall(calls, "image"),
                "images": _sum_calls(calls, "image", cpu=False),
                "music": _sum_calls(calls, "music", cpu=False),
            },
            "per_step_s": per_step,
            "scenes": sum(1 for name in steps if name.startswith("speech_")),
            "compose_output": {
                k: compose_output.get(k)
                for k in ("duration_s", "width", "height", "segments_rendered", "segments_reused")
            },
            "music_seconds": (outputs.get("music") or {}).get("duration_s"),
            "output": output,
            "validation_ok": (outputs.get("_validation") or {}).get("ok"),
            "host_busy_cores_before": busy_before,
            "host_busy_cores": busy,
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_max_1m": round(load.highest, 2),
        }
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"run{index + 1}.mp4").write_bytes(out.read_bytes())
            (keep / f"run{index + 1}-events.json").write_text(json.dumps(events, indent=1))
            (keep / f"run{index + 1}-probes.json").write_text(json.dumps(child, indent=1))
        scene_texts = [s["text"] for s in (outputs.get("script") or {}).get("scenes", [])]
        result["_scene_texts"] = scene_texts
        return result


def isolated(scene_texts: list[str], music_seconds: float, video_s: float) -> dict[str, Any]:
    """The pieces before compose, alone and one after the other, in this process, and
    the x264 floor for the video's length (the composer's preset and CRF on
    ``testsrc2``: the least any one-encode composer costs here)."""
    from benchlib import wait_for_quiet

    from vidpipe.media import speech
    from vidpipe.media.ffmpeg import find_ffmpeg
    from vidpipe.plans.music import generate_music

    result: dict[str, Any] = {"busy_cores_before": wait_for_quiet(max_wait_s=30)}
    with tempfile.TemporaryDirectory(prefix="vidpipe-bench-short-iso-") as tmp:
        work = Path(tmp)
        engine = speech.available_engines()[0] if speech.available_engines() else None
        result["speech_engine"] = engine
        if engine == "piper":
            t0, c0 = time.monotonic(), time.process_time()
            speech._load_piper(speech.DEFAULT_PIPER_VOICE)
            result["piper_load"] = {
                "wall_s": round(time.monotonic() - t0, 2),
                "cpu_s": round(time.process_time() - c0, 2),
            }
        t0, c0 = time.monotonic(), time.process_time()
        spoken = 0.0
        for index, text in enumerate(scene_texts):
            spoken += speech.synthesize(text, out_path=work / f"s{index}.wav").duration_s
        result["speech_all_scenes"] = {
            "scenes": len(scene_texts),
            "audio_s": round(spoken, 2),
            "wall_s": round(time.monotonic() - t0, 2),
            "cpu_s": round(time.process_time() - c0, 2),
        }
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        generate_music(
            work / "music.wav", seconds=music_seconds, mood="calm", seed=0, ffmpeg=find_ffmpeg()
        )
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        result["music"] = {
            "seconds": music_seconds,
            "wall_s": round(time.monotonic() - t0, 2),
            "ffmpeg_cpu_s": round(
                (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime), 2
            ),
        }
    result["busy_cores_before_floor"] = wait_for_quiet(max_wait_s=30)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(
        [
            str(find_ffmpeg()), "-hide_banner", "-nostdin", "-loglevel", "error",
            "-f", "lavfi", "-i", f"testsrc2=s={WIDTH}x{HEIGHT}:r={FPS}:d={video_s:.3f}",
            "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF), "-pix_fmt", "yuv420p",
            "-f", "null", "-",
        ],
        check=True,
    )  # fmt: skip
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["x264_floor"] = {
        "seconds": round(video_s, 2),
        "wall_s": round(time.monotonic() - t0, 2),
        "cpu_s": round((kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime), 2),
    }
    return result


def _median(runs: list[dict[str, Any]], *path: str) -> float | None:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            values.append(float(value))
    return round(statistics.median(values), 2) if values else None


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == CHILD_FLAG:
        rest = sys.argv[3:]
        child_main(Path(sys.argv[2]), rest[1:] if rest[:1] == ["--"] else rest)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--template", default="fun_facts")
    parser.add_argument("--topic", default="octopuses")
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--quiet-wait", type=float, default=30.0)
    parser.add_argument(
        "--no-probes", action="store_true", help="plain vidpipe short (no split of compose)"
    )
    parser.add_argument("--no-isolated", action="store_true")
    parser.add_argument("--keep", type=Path, help="copy outputs, events and probes here")
    args = parser.parse_args()
    # Not imported by the child (the measured `vidpipe short`): asyncpg costs 0.1-0.2 s.
    from benchlib import emit, exit_on_sigterm, machine

    exit_on_sigterm()

    from vidpipe.media.ffmpeg import find_ffmpeg

    ffmpeg = find_ffmpeg()
    version = subprocess.run(
        [str(ffmpeg), "-version"], capture_output=True, text=True, check=False
    ).stdout.split("\n", 1)[0]
    runs = [one_run(args, i, args.keep) for i in range(args.runs)]
    texts = runs[-1].pop("_scene_texts")
    for run in runs:
        run.pop("_scene_texts", None)
    result: dict[str, Any] = {
        "benchmark": "short_e2e",
        "machine": machine(),
        "ffmpeg": version,
        "template": args.template,
        "target_seconds": args.seconds,
        "probes": not args.no_probes,
        "goal_wall_s": GOAL_WALL_S,
        "runs": runs,
        "median": {
            "wall_s": _median(runs, "wall_s"),
            "cpu_s": _median(runs, "cpu_s"),
            "output_duration_s": _median(runs, "output", "duration_s"),
            "startup_s": _median(runs, "phases_s", "startup"),
            "prepare_s": _median(runs, "phases_s", "prepare"),
            "compose_step_s": _median(runs, "phases_s", "compose_step"),
            "compose_s": _median(runs, "compose_step_s", "compose"),
            "validation_s": _median(runs, "compose_step_s", "validation"),
            "derivatives_s": _median(runs, "compose_step_s", "derivatives"),
            "tail_s": _median(runs, "phases_s", "tail"),
        },
    }
    if not args.no_isolated and texts:
        music_s = float(runs[-1].get("music_seconds") or args.seconds * 1.5 + 10)
        video_s = float(result["median"]["output_duration_s"] or args.seconds)
        result["isolated"] = isolated(texts, music_s, video_s)
    result["goal_met"] = all(r["goal_met"] for r in runs)
    print(json.dumps(result, indent=2))
    emit(
        {
            "benchmark": "short_e2e",
            "wall_s": result["median"]["wall_s"],
            "cpu_s": result["median"]["cpu_s"],
            "output_duration_s": result["median"]["output_duration_s"],
            "goal_met": result["goal_met"],
        }
    )


if __name__ == "__main__":
    main()
