"""The faceless-short composer: scenes, narration, music and captions into one MP4.

Design: every output frame is encoded exactly once, and every piece is checkpointed.

The final timeline is cut into pieces that each depend on as little as possible:

* a **scene segment** per scene: one ffmpeg run decodes the scene's visual once,
  fits it to the frame (crop to the aspect, one scale; an image is scaled once and
  then repeated), applies the motion at output size, and writes the scene's *body*
  (the frames no transition touches) encoded with the final H.264 parameters and
  with the captions of that stretch burned in, plus its first and last
  ``transition`` frames as raw video for the transitions;
* a **transition piece** per scene boundary: the raw tail of one scene and head of
  the next, joined with ``xfade``, captions burned in, encoded the same way (a few
  frames; made from the raw frames, so no source is decoded twice);
* the **audio**: narration placed at the scene starts, music looped under it and
  ducked by the narration (``sidechaincompress``), mixed once to a WAV while
  ``ebur128`` measures it, then given the measured loudness gain and a peak limiter
  and encoded to AAC; all of it while the segments render;
* the **final pass** joins the pieces with the concat demuxer and the AAC, both
  *without re-encoding* (the pieces share every encoder parameter), and writes the
  MP4 with ``+faststart``: a remux.

The obvious alternative, rendering each scene to an intermediate and then one
final pass with ``xfade`` + ``ass`` over the whole video, encodes every frame twice
(and decodes it once more): at least twice the cost of the encoder alone. Here the
overhead over the pure encode is the decoding and scaling of the sources, the motion
and caption filters, one extra key frame per piece and one short ffmpeg run per
transition. The price: the raw transition frames are kept with the checkpoints
(2 x ``transition`` frames per boundary, ~75 MB at 1080x1920 for 0.4 s), and a
caption edit re-renders the pieces whose time window it touches.

Motion is made at output size: a still is scaled once to the frame plus the zoom
margin and then moved by ``zoompan`` (zoom) or a moving ``crop`` (pan); a clip is
cropped to the aspect and scaled once per frame, by ``zoompan`` when it moves.
``zoompan`` places its window on whole source pixels, so a slow zoom advances in
steps of at most one pixel.

Checkpointing: a piece is written into a temporary directory and renamed into
``work_dir/segments/<key>`` when complete (rename is atomic), where ``key`` hashes
everything the piece's pixels depend on (the visual's content, motion, frame counts,
size, encoder settings, the caption events that fall in its time window). A later
run, or a worker that replaces a killed one, finds finished pieces by key and
reuses them; a killed run leaves only a ``.tmp-`` directory that is never read.
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
from typing import Literal

from vidpipe.errors import InvalidRequest, MediaError
from vidpipe.media.analysis import loudness_from_metadata, parse_metadata_print
from vidpipe.media.compose_plan import (
    BODY_FILE,
    CAPTIONS_FILE,
    HEAD_FILE,
    LOUDNESS_FILE,
    TAIL_FILE,
    TRANSITION_FILE,
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
    build_transition_args,
    concat_list,
    loudness_gain_db,
    plan_timeline,
    segment_key,
    transition_key,
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
    """The composed file and what the checkpoints saved.

    ``segments_*`` count scene segments (the expensive pieces); the short transition
    pieces between scenes are counted apart, in ``transitions_*``.
    """

    path: Path
    duration_s: float
    segments_reused: int
    segments_rendered: int
    transitions_reused: int = 0
    transitions_rendered: int = 0


# --- Running -----------------------------------------------------------------------------


@dataclass
class _Piece:
    """A checkpointed unit: a scene segment or a transition, its key and its files."""

    kind: Literal["segment", "transition"]
    index: int
    key: str
    files: tuple[str, ...]
    # Share of the work, for progress (about the frames it encodes).
    weight: float
    # Keys of the segments whose raw frames a transition is made from.
    depends_on: tuple[str, ...] = ()
    reused: bool = False


@dataclass(frozen=True)
class _Task:
    name: str
    weight: float
    run: Callable[[], None]
    depends_on: tuple[str, ...] = ()
    # Short work (a transition, the audio): may run beside the ``max_parallel`` others.
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
    Up to ``max_parallel`` ffmpeg processes run at once, and beside them one short
    one (a transition or the audio); ``timeout_s`` bounds each. Each encoder gets
    its share of the CPUs (``encoder_threads``).
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
            piece.reused = _is_complete(segments_dir / piece.key, piece.files)
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
                piece.depends_on,
                light=piece.kind == "transition",
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
    segments = [p for p in pieces if p.kind == "segment"]
    transitions = [p for p in pieces if p.kind == "transition"]
    return ComposeResult(
        path=out_path,
        duration_s=timeline.duration_s,
        segments_reused=sum(p.reused for p in segments),
        segments_rendered=sum(not p.reused for p in segments),
        transitions_reused=sum(p.reused for p in transitions),
        transitions_rendered=sum(not p.reused for p in transitions),
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
    pieces: list[_Piece] = []
    keys: list[str] = []
    for index, scene in enumerate(spec.scenes):
        place = timeline.placements[index]
        key = segment_key(
            spec, timeline, index, visual_sha256=_file_sha256(scene.visual), captions=captions
        )
        files = [BODY_FILE]
        if place.lead_in:
            files.append(HEAD_FILE)
        if place.lead_out:
            files.append(TAIL_FILE)
        pieces.append(_Piece("segment", index, key, tuple(files), weight=float(place.frames)))
        keys.append(key)
    for index in range(len(spec.scenes) - 1 if timeline.transition_frames else 0):
        key = transition_key(
            spec,
            timeline,
            index,
            tail_segment=keys[index],
            head_segment=keys[index + 1],
            captions=captions,
        )
        pieces.append(
            _Piece(
                "transition",
                index,
                key,
                (TRANSITION_FILE,),
                # Few frames, but a whole ffmpeg start and a key frame: weigh them more.
                weight=timeline.transition_frames * 2.0 + spec.fps / 2,
                depends_on=(keys[index], keys[index + 1]),
            )
        )
    return pieces


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
    """Run tasks on up to ``max_parallel`` threads, each once its dependencies finished,
    plus one light task beside them.

    Light tasks (transitions, the audio) go first once ready, and one may run beyond
    the limit (more on slots no segment uses): a transition then runs while the next
    segments render instead of all of them waiting for the last segment, at the end,
    when one of the two cores idles. A light task never keeps a segment waiting.
    A dependency that is not among ``tasks`` counts as finished (a reused piece).
    The first failure is raised once the tasks already running have stopped (their
    results are complete checkpoints, useful to the next attempt).
    """
    pending = sorted(tasks, key=lambda task: not task.light)  # stable: light ones first
    unfinished = {task.name for task in tasks}
    with ThreadPoolExecutor(max_workers=max_parallel + 1, thread_name_prefix="compose") as pool:
        running: dict[Future[None], _Task] = {}
        while pending or running:
            for task in [t for t in pending if unfinished.isdisjoint(t.depends_on)]:
                light = sum(t.light for t in running.values())
                heavy = len(running) - light
                if task.light:
                    # One beside the others, more only on slots no segment uses.
                    if light and len(running) >= max_parallel:
                        continue
                elif heavy >= max_parallel:
                    continue
                pending.remove(task)
                running[pool.submit(task.run)] = task
            if not running:
                raise MediaError("compose: a piece waits for pieces that cannot finish")
            completed, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in completed:
                task = running.pop(future)
                if future.exception() is not None:
                    pending.clear()
                    wait(running)
                    future.result()
                unfinished.discard(task.name)
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
    """Render a piece into a temporary directory, then rename it into place.

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
        if piece.kind == "segment":
            args = build_segment_args(spec, timeline, piece.index, tmp, encoder_threads=threads)
        else:
            tail_key, head_key = piece.depends_on
            args = build_transition_args(
                spec,
                timeline,
                piece.index,
                tail=segments_dir / tail_key / TAIL_FILE,
                head=segments_dir / head_key / HEAD_FILE,
                out=tmp / TRANSITION_FILE,
                encoder_threads=threads,
            )
        # Relative names inside the filtergraph (the captions) resolve here.
        run_ffmpeg(args, ffmpeg=ffmpeg, timeout_s=timeout_s, cwd=tmp)
        (tmp / CAPTIONS_FILE).unlink(missing_ok=True)
        missing = [name for name in piece.files if not (tmp / name).is_file()]
        if missing:
            raise MediaError(f"ffmpeg did not write {', '.join(missing)}", code="ffmpeg_failed")
        for name in piece.files:
            _fsync(tmp / name)
        try:
            tmp.rename(final)
        except OSError:
            # Another worker committed the same piece first: same key, same content.
            if not _is_complete(final, piece.files):
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
    """Join the pieces and the finished audio into ``out_path``, atomically."""
    segments = {p.index: p for p in pieces if p.kind == "segment"}
    transitions = {p.index: p for p in pieces if p.kind == "transition"}
    order: list[tuple[Path, float]] = []
    for index, place in enumerate(timeline.placements):
        body = segments_dir / segments[index].key / BODY_FILE
        order.append((body, timeline.seconds(place.body_frames)))
        if index in transitions:
            piece = segments_dir / transitions[index].key / TRANSITION_FILE
            order.append((piece, timeline.seconds(timeline.transition_frames)))
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


def _is_complete(directory: Path, files: Sequence[str]) -> bool:
    return all((directory / name).is_file() for name in files)


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
