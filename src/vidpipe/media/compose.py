"""The faceless-short composer: scenes, narration, music and captions into one MP4.

Design: every output frame is encoded exactly once, and every piece is checkpointed.

The final timeline is cut into one piece per scene, each depending on as little as
possible:

* a **scene segment** per scene: one ffmpeg run decodes the scene's visual once,
  fits it to the frame (crop to the aspect, one scale; an image is scaled once and
  then repeated), applies the motion at output size, and writes the scene's *body*
  (the frames no transition touches) followed by the *transition* into the next
  scene: the next scene's first ``transition`` frames are made in the same run from
  its own visual (a clip is read only that far), crossed with this scene's last
  ones by ``xfade``, captions burned in, all encoded once with the final H.264
  parameters. The scene's own first ``transition`` frames are the previous
  segment's;
* the **audio**: narration placed at the scene starts, music looped under it and
  ducked by the narration (``sidechaincompress``), mixed once to a WAV while
  ``ebur128`` measures it, then given the measured loudness gain and a peak limiter
  and encoded to AAC; all of it while the segments render;
* the **final pass** joins the segments with the concat demuxer and the AAC, both
  *without re-encoding* (the segments share every encoder parameter), and writes the
  MP4 with ``+faststart``: a remux.

The obvious alternative, rendering each scene to an intermediate and then one
final pass with ``xfade`` + ``ass`` over the whole video, encodes every frame twice
(and decodes it once more): at least twice the cost of the encoder alone. Here the
overhead over the pure encode is the decoding and scaling of the sources, the motion
and caption filters, one extra key frame per scene, and the next scene's first
``transition`` frames made twice (here and in its own segment, where they are
dropped). An earlier design made each transition a separate piece from raw frames
the segments wrote: five more ffmpeg runs, encoder starts and key frames in a
six-scene short, and ~75 MB of raw frames per boundary on disk; measured on the
benchmark short (60 s, 1080x1920, 2 CPUs), folding them into the segments took
~10 % off the CPU and ~12 % off the wall time. The price: a segment depends on the
next scene too, so changing a scene's picture makes the segment before it again.

Motion is made at output size: a still is scaled once to the frame plus the zoom
margin and then moved by ``zoompan`` (zoom) or a moving ``crop`` (pan); a clip is
cropped to the aspect and scaled once per frame, by ``zoompan`` when it moves.
``zoompan`` places its window on whole source pixels, so a slow zoom advances in
steps of at most one pixel.

Checkpointing: a segment is written into a temporary directory and renamed into
``work_dir/segments/<key>`` when complete (rename is atomic), where ``key`` hashes
everything the segment's pixels depend on (the visuals' content, motion, frame
counts, the transition, size, encoder settings, the caption events that fall in its
time window). A later run, or a worker that replaces a killed one, finds finished
segments by key and reuses them; a killed run leaves only a ``.tmp-`` directory that
is never read.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from vidpipe.errors import InvalidRequest, MediaError
from vidpipe.media.analysis import loudness_from_metadata, parse_metadata_print
from vidpipe.media.compose_plan import (
    CAPTIONS_FILE,
    LOUDNESS_FILE,
    SEGMENT_FILE,
    ComposeSpec,
    Motion,
    Scene,
    ScenePlacement,
    Timeline,
    Transition,
    VisualKind,
    build_audio_args,
    build_audio_finish_args,
    build_final_args,
    build_segment_args,
    concat_list,
    loudness_gain_db,
    plan_timeline,
    segment_key,
)
from vidpipe.media.ffmpeg import run_ffmpeg

__all__ = [
    "ComposeResult",
    "ComposeSpec",
    "Motion",
    "Scene",
    "ScenePlacement",
    "Timeline",
    "Transition",
    "VisualKind",
    "compose",
    "plan_timeline",
]

_SEGMENTS_DIR = "segments"
_TMP_PREFIX = ".tmp-"
_MIX = "mix.wav"
_AUDIO = "audio.m4a"  # the finished mix (loudness gain, limiter, AAC)
# A temporary directory this old belongs to a run that died; it is swept.
_STALE_TMP_S = 6 * 3600.0


@dataclass(frozen=True)
class ComposeResult:
    """The composed file and what the checkpoints saved (scene segments, each a
    scene's body and its transition into the next)."""

    path: Path
    duration_s: float
    segments_reused: int
    segments_rendered: int


# --- Running -----------------------------------------------------------------------------


@dataclass
class _Piece:
    """A checkpointed unit: a scene's segment, its key and its file."""

    index: int
    key: str
    # Share of the work, for progress and for the order of the run: the frames it
    # encodes, times how dear their making is (``_cost``).
    weight: float
    reused: bool = False


@dataclass(frozen=True)
class _Task:
    name: str
    weight: float
    run: Callable[[], None]
    # Light work (the audio): runs beside the ``max_parallel`` others.
    light: bool = False


def compose(
    spec: ComposeSpec,
    out_path: Path,
    *,
    work_dir: Path,
    ffmpeg: Path,
    progress: Callable[[float], None] | None = None,
    max_parallel: int = 2,
    timeout_s: float = 1800.0,
) -> ComposeResult:
    """Compose ``spec`` into an H.264 + AAC MP4 (faststart) at ``out_path``.

    Finished pieces in ``work_dir/segments`` are reused (see the module docstring);
    everything else goes to a per-run directory under ``work_dir`` that is removed at
    the end. ``out_path`` appears atomically, complete or not at all. ``progress``
    is called from the calling thread with the share done (0-1, never decreasing).
    Up to ``max_parallel`` ffmpeg processes run at once, and beside them the audio's;
    ``timeout_s`` bounds each. Each encoder gets its share of the CPUs
    (``encoder_threads``).
    Raises ``InvalidRequest`` for an impossible timeline or a missing input file and
    ``MediaError`` when ffmpeg fails.
    """
    timeline = plan_timeline(spec)
    _check_inputs(spec)
    # Absolute paths: ffmpeg runs in other working directories.
    work_dir = work_dir.resolve()
    out_path = out_path.resolve()
    segments_dir = work_dir / _SEGMENTS_DIR
    segments_dir.mkdir(parents=True, exist_ok=True)
    _sweep_stale(segments_dir)
    run_dir = work_dir / f"run-{uuid.uuid4().hex[:12]}"
    run_dir.mkdir()
    captions: str | None = None
    if spec.captions_ass is not None:
        captions = spec.captions_ass.read_text(encoding="utf-8-sig")
        shutil.copyfile(spec.captions_ass, run_dir / CAPTIONS_FILE)
    try:
        pieces = _plan_pieces(spec, timeline, captions)
        threads = encoder_threads(max_parallel)
        for piece in pieces:
            piece.reused = _is_complete(segments_dir / piece.key)
        # One task per key: two identical scenes share one segment.
        to_render = {piece.key: piece for piece in pieces if not piece.reused}
        tasks = [
            _Task(
                piece.key,
                piece.weight,
                functools.partial(
                    _render_piece,
                    piece,
                    spec,
                    timeline,
                    segments_dir,
                    run_dir,
                    ffmpeg,
                    timeout_s,
                    threads,
                ),
            )
            for piece in to_render.values()
        ]
        audio_args = build_audio_args(spec, timeline, out=run_dir / _MIX)
        if audio_args is not None:
            # Independent of the video: mixed, measured and finished while segments render.
            tasks.insert(
                0,
                _Task(
                    "audio",
                    timeline.total_frames / 50,
                    functools.partial(
                        _make_audio, audio_args, spec, run_dir, ffmpeg=ffmpeg, timeout_s=timeout_s
                    ),
                    light=True,
                ),
            )
        reused_weight = sum(p.weight for p in pieces if p.reused)
        total_weight = reused_weight + sum(t.weight for t in tasks) or 1.0
        _run_tasks(
            tasks,
            max_parallel=max(1, max_parallel),
            report=None if progress is None else _Progress(progress, total_weight, reused_weight),
        )
        _join(
            spec,
            timeline,
            pieces,
            segments_dir=segments_dir,
            run_dir=run_dir,
            audio=run_dir / _AUDIO if audio_args is not None else None,
            out_path=out_path,
            ffmpeg=ffmpeg,
            timeout_s=timeout_s,
        )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    if progress is not None:
        progress(1.0)
    return ComposeResult(
        path=out_path,
        duration_s=timeline.duration_s,
        segments_reused=sum(p.reused for p in pieces),
        segments_rendered=sum(not p.reused for p in pieces),
    )


def encoder_threads(max_parallel: int) -> int:
    """x264 threads per piece: this process's CPUs shared by the pieces that run at once.

    x264 left to itself starts 1.5 threads per CPU in every encoder, so two segments
    side by side on 2 CPUs ran ~6 encoding threads on 2 cores: measured with the
    benchmark short (60 s, 1080x1920, 2 CPUs), 10 % more CPU and 6 % more wall time
    than one thread each. The filters and the decoder run on their own threads
    beside the encoder either way.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, max_parallel))


def _check_inputs(spec: ComposeSpec) -> None:
    files = [("scenes", s.visual) for s in spec.scenes]
    files += [("scenes", s.narration) for s in spec.scenes if s.narration is not None]
    if spec.music is not None:
        files.append(("music", spec.music))
    if spec.captions_ass is not None:
        files.append(("captions_ass", spec.captions_ass))
    for param, path in files:
        if not path.is_file():
            raise InvalidRequest(f"input file not found: {path}", param=param)


def _plan_pieces(spec: ComposeSpec, timeline: Timeline, captions: str | None) -> list[_Piece]:
    digests = [_file_sha256(scene.visual) for scene in spec.scenes]
    pieces: list[_Piece] = []
    for index, scene in enumerate(spec.scenes):
        place = timeline.placements[index]
        key = segment_key(
            spec,
            timeline,
            index,
            visual_sha256=digests[index],
            captions=captions,
            next_visual_sha256=digests[index + 1] if place.lead_out else None,
        )
        pieces.append(_Piece(index, key, weight=place.segment_frames * _cost(scene)))
    return pieces


def _cost(scene: Scene) -> float:
    """How dear a scene's frames are to make, relative to a still's: a clip's are each
    decoded and scaled, a zooming still's each scaled; a still or a panned one is a
    crop of one picture. The encoder's share, the largest, depends on the content,
    which is not known beforehand; this only orders the work (the dearest first, so
    that no long segment starts last while a core idles)."""
    if scene.kind == "video":
        return 1.5
    return 1.25 if scene.motion in ("zoom_in", "zoom_out") else 1.0


class _Progress:
    """Turns finished work into a never-decreasing share, leaving room for the join."""

    def __init__(self, callback: Callable[[float], None], total: float, done: float) -> None:
        self._callback = callback
        self._total = total
        self._done = done
        self._callback(self._share())

    def add(self, weight: float) -> None:
        self._done += weight
        self._callback(self._share())

    def _share(self) -> float:
        return min(0.97, 0.97 * self._done / self._total)


def _run_tasks(tasks: Sequence[_Task], *, max_parallel: int, report: _Progress | None) -> None:
    """Run tasks on up to ``max_parallel`` threads, plus one light task beside them.

    Light tasks (the audio) start first; the others in order of weight, the heaviest
    first: the work then ends with short segments on both cores rather than with one
    long segment on one core while the other idles.
    The first failure is raised once the tasks already running have stopped (their
    results are complete checkpoints, useful to the next attempt).
    """
    pending = sorted(tasks, key=lambda task: (not task.light, -task.weight))
    with ThreadPoolExecutor(max_workers=max_parallel + 1, thread_name_prefix="compose") as pool:
        running: dict[Future[None], _Task] = {}
        while pending or running:
            for task in list(pending):
                heavy = sum(not t.light for t in running.values())
                if not task.light and heavy >= max_parallel:
                    break
                pending.remove(task)
                running[pool.submit(task.run)] = task
            completed, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in completed:
                task = running.pop(future)
                if future.exception() is not None:
                    pending.clear()
                    wait(running)
                    future.result()
                if report is not None:
                    report.add(task.weight)


def _render_piece(
    piece: _Piece,
    spec: ComposeSpec,
    timeline: Timeline,
    segments_dir: Path,
    run_dir: Path,
    ffmpeg: Path,
    timeout_s: float,
    threads: int,
) -> None:
    """Render a segment into a temporary directory, then rename it into place.

    The rename is the commit: a run killed before it leaves a ``.tmp-`` directory
    that no run ever reads. Files are flushed to disk before the rename, so a
    checkpoint that exists is complete even after a machine crash.
    """
    final = segments_dir / piece.key
    tmp = segments_dir / f"{_TMP_PREFIX}{piece.key}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        if (run_dir / CAPTIONS_FILE).exists():
            shutil.copyfile(run_dir / CAPTIONS_FILE, tmp / CAPTIONS_FILE)
        args = build_segment_args(spec, timeline, piece.index, tmp, encoder_threads=threads)
        # Relative names inside the filtergraph (the captions) resolve here.
        run_ffmpeg(args, ffmpeg=ffmpeg, timeout_s=timeout_s, cwd=tmp)
        (tmp / CAPTIONS_FILE).unlink(missing_ok=True)
        if not _is_complete(tmp):
            raise MediaError(f"ffmpeg did not write {SEGMENT_FILE}", code="ffmpeg_failed")
        _fsync(tmp / SEGMENT_FILE)
        try:
            tmp.rename(final)
        except OSError:
            # Another worker committed the same piece first: same key, same content.
            if not _is_complete(final):
                raise
        else:
            _fsync(segments_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _make_audio(
    args: list[str], spec: ComposeSpec, run_dir: Path, *, ffmpeg: Path, timeout_s: float
) -> None:
    """Mix the audio to ``run_dir``'s WAV, measuring it, then finish it to its AAC.

    Two passes, as the gain depends on the whole mix's loudness; both run beside the
    video, so the final pass is a remux (encoding a minute of AAC there was ~1.6 s
    at the very end, when nothing else runs).
    """
    run_ffmpeg(args, ffmpeg=ffmpeg, timeout_s=timeout_s, cwd=run_dir)
    measured = loudness_from_metadata(
        parse_metadata_print((run_dir / LOUDNESS_FILE).read_text(encoding="utf-8"))
    )
    gain_db = loudness_gain_db(measured.integrated_lufs if measured else None, spec.target_lufs)
    finish = build_audio_finish_args(mix=run_dir / _MIX, gain_db=gain_db, out=run_dir / _AUDIO)
    run_ffmpeg(finish, ffmpeg=ffmpeg, timeout_s=timeout_s, cwd=run_dir)


def _join(
    spec: ComposeSpec,
    timeline: Timeline,
    pieces: Sequence[_Piece],
    *,
    segments_dir: Path,
    run_dir: Path,
    audio: Path | None,
    out_path: Path,
    ffmpeg: Path,
    timeout_s: float,
) -> None:
    """Join the segments and the finished audio into ``out_path``, atomically."""
    order = [
        (segments_dir / piece.key / SEGMENT_FILE, timeline.seconds(place.segment_frames))
        for piece, place in zip(pieces, timeline.placements, strict=True)
    ]
    concat_file = run_dir / "pieces.ffconcat"
    concat_file.write_text(concat_list(order), encoding="utf-8")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        args = build_final_args(spec, timeline, concat_file=concat_file, audio=audio, out=partial)
        run_ffmpeg(args, ffmpeg=ffmpeg, timeout_s=timeout_s, cwd=run_dir)
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)


def _is_complete(directory: Path) -> bool:
    return (directory / SEGMENT_FILE).is_file()


def _sweep_stale(segments_dir: Path) -> None:
    """Remove temporary directories left by runs that died long ago."""
    cutoff = time.time() - _STALE_TMP_S
    for entry in segments_dir.glob(f"{_TMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # in the cache key only: a changed file is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
