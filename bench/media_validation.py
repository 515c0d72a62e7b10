"""Benchmark: metadata probe and full validation of a 60 s 1080x1920 H.264 + AAC clip.

Measures, in one run and interleaved so background load hits both alike:

* ``probe`` (PyAV, headers only): cold first call and warm median. Goal: <= 50 ms.
* the floor: a plain ``ffmpeg -i file -f null -`` (decode everything, do nothing).
* the full validation: ``analyze`` (box order, probe, the one ffmpeg pass with
  blackdetect + freezedetect + ebur128 + silencedetect) + ``validate_full``.
  Goal: <= 1/10 of the video's duration (6 s) on 2 cores; reported as a ratio to the
  floor as well. Also with deblocking kept (``skip_loop_filter=False``), to show what
  skipping it saves.

The clip is generated once into bench/out/ (gitignored). Prints JSON.

    python bench/media_validation.py [--runs 5] [--regenerate]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidpipe.media.analysis import Detection, analyze
from vidpipe.media.ffmpeg import ffmpeg_argv, find_ffmpeg, run_ffmpeg
from vidpipe.media.policy import ValidationPolicy
from vidpipe.media.probe import probe
from vidpipe.media.validate import Expectation, validate_full

OUT_DIR = Path(__file__).resolve().parent / "out"
CLIP = OUT_DIR / "validation-60s-1080x1920.mp4"
SECONDS = 60
WIDTH, HEIGHT, FPS = 1080, 1920, 30


def make_clip(ffmpeg: Path) -> None:
    """A moving pattern with beeps over low noise: about 8 Mb/s, like a generated clip."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    args = [
        "-f", "lavfi", "-i", f"testsrc2=s={WIDTH}x{HEIGHT}:r={FPS}:d={SECONDS}",
        "-f", "lavfi", "-i", f"sine=f=440:b=4:r=48000:d={SECONDS}",
        "-f", "lavfi", "-i", f"anoisesrc=r=48000:a=0.02:d={SECONDS}",
        "-filter_complex", "[1:a][2:a]amix=inputs=2:normalize=0,aformat=channel_layouts=stereo[a]",
        "-map", "0:v", "-map", "[a]",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(CLIP),
    ]  # fmt: skip
    run_ffmpeg(args, ffmpeg=ffmpeg, timeout_s=900)


def floor_decode(ffmpeg: Path) -> None:
    """The plain decode every full check must at least cost."""
    argv = ffmpeg_argv(ffmpeg, ["-i", str(CLIP), "-f", "null", "-"])
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class Runs:
    """Wall time and the CPU time (user + system) of the ffmpeg children of each run.

    CPU time is what the work costs whatever else the machine is doing; on a shared
    machine the wall time of the same work varies with the neighbours' load.
    """

    def __init__(self) -> None:
        self.wall_s: list[float] = []
        self.cpu_s: list[float] = []

    def run(self, fn: Callable[[], object]) -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.wall_s.append(timed(fn))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_s.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)

    def summary(self) -> dict[str, Any]:
        return {
            "wall_median": round(statistics.median(self.wall_s), 3),
            "wall_min": round(min(self.wall_s), 3),
            "wall_max": round(max(self.wall_s), 3),
            "cpu_median": round(statistics.median(self.cpu_s), 3),
            "wall_runs": [round(s, 3) for s in self.wall_s],
        }


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.partition(":")[2].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--regenerate", action="store_true")
    options = parser.parse_args()
    ffmpeg = find_ffmpeg()
    if options.regenerate or not CLIP.exists():
        make_clip(ffmpeg)
    expected = Expectation(width=WIDTH, height=HEIGHT, seconds=SECONDS)
    load_before = os.getloadavg()

    cold_probe_ms = timed(lambda: probe(CLIP)) * 1000
    probe_ms = [timed(lambda: probe(CLIP)) * 1000 for _ in range(50)]

    floor = Runs()
    full = Runs()
    deblocked = Runs()
    outcome: dict[str, Any] = {}

    def full_validation() -> None:
        result = analyze(CLIP, want_audio=True, ffmpeg=ffmpeg)
        verdict = validate_full(result, expected, ValidationPolicy())
        outcome.update(report=verdict.to_dict(), analysis=result.to_dict())

    def with_deblocking() -> None:
        detection = Detection(skip_loop_filter=False)
        analyze(CLIP, want_audio=True, ffmpeg=ffmpeg, detection=detection)

    # Interleaved, so a burst of load from elsewhere hits every variant alike.
    for _ in range(options.runs):
        floor.run(lambda: floor_decode(ffmpeg))
        full.run(full_validation)
        deblocked.run(with_deblocking)
    report, analysis = outcome["report"], outcome["analysis"]

    info = probe(CLIP)
    full_median = statistics.median(full.wall_s)
    full_best = min(full.wall_s)
    print(
        json.dumps(
            {
                "benchmark": "media_validation",
                "machine": {
                    "nproc": os.cpu_count(),
                    "cpu": cpu_model(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                },
                "clip": {
                    "path": str(CLIP),
                    "seconds": info.duration_s,
                    "size": f"{info.video.width}x{info.video.height}" if info.video else None,
                    "fps": info.video.fps if info.video else None,
                    "bytes": info.size_bytes,
                    "bit_rate": info.bit_rate,
                },
                "probe_ms": {
                    "cold": round(cold_probe_ms, 2),
                    "median": round(statistics.median(probe_ms), 2),
                    "max": round(max(probe_ms), 2),
                    "goal": 50,
                },
                "floor_decode_s": floor.summary(),
                "full_validation_s": full.summary(),
                "full_validation_with_deblocking_s": deblocked.summary(),
                "ratio_full_to_floor": {
                    "wall_median": round(full_median / statistics.median(floor.wall_s), 2),
                    "wall_min": round(full_best / min(floor.wall_s), 2),
                    "cpu_median": round(
                        statistics.median(full.cpu_s) / statistics.median(floor.cpu_s), 2
                    ),
                },
                "full_share_of_duration": {
                    "wall_median": round(full_median / info.duration_s, 3),
                    "wall_min": round(full_best / info.duration_s, 3),
                },
                "goal_full_s": info.duration_s / 10,
                "meets_goals": {
                    "probe": statistics.median(probe_ms) <= 50,
                    "full_median": full_median <= info.duration_s / 10,
                    "full_min": full_best <= info.duration_s / 10,
                },
                "report": {"ok": report.get("ok"), "reason": report.get("reason")},
                "measured": {
                    "decoded_frames": analysis.get("decoded_frames"),
                    "loudness": analysis.get("loudness"),
                    "black": analysis.get("black"),
                    "frozen": analysis.get("frozen"),
                    "silence": analysis.get("silence"),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
