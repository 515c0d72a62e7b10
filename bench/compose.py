"""Benchmark: composing a 60 s 1080x1920 short, against the encoder floor and MoviePy.

One run measures, on the same inputs and the same x264 preset/CRF:

* **floor**: ffmpeg encoding 60 s of 1080x1920 30 fps ``testsrc2`` with libx264
  ``veryfast`` CRF 20 into the null muxer: the least any composer that encodes the
  result once can cost;
* **compose (cold)**: ``vidpipe.media.compose.compose`` of the 6-scene short
  (images and clips, zoom/pan motion, fades, ~150 burned word captions, narration +
  looped music ducked under it, loudness-normalized) with an empty checkpoint dir;
* **compose (resume)**: the same with every segment already checkpointed (what a
  worker that replaces a killed one pays at best);
* **moviepy**: the same composition written with MoviePy, the engine of the popular
  open-source generators (run in its own virtualenv, bench/out/moviepy-venv, because
  MoviePy pins an older Pillow than vidpipe's). Bounded: it renders the first
  ``--moviepy-seconds`` seconds (default 20) and the 60 s figure is extrapolated
  linearly; ``--moviepy-seconds 60`` renders it all.

floor and compose run ``--runs`` times, interleaved, so that load from neighbours
hits both alike; wall time and the CPU time of the ffmpeg children are recorded.
The compose output is validated with ``analyze`` + ``validate_full``.

Inputs are generated once into bench/out/compose/ (gitignored). Prints JSON and a
``BENCH_RESULT`` line.

    python bench/compose.py [--runs 3] [--moviepy-seconds 20] [--regenerate]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out" / "compose"
INPUTS = OUT_DIR / "inputs"
MOVIEPY_VENV = BENCH_DIR / "out" / "moviepy-venv"
MOVIEPY_VERSION = "2.2.1"
WIDTH, HEIGHT, FPS, SECONDS = 1080, 1920, 30, 60
PRESET, CRF = "veryfast", 20
TRANSITION_S = 0.4
MUSIC_GAIN_DB = -18.0
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")

# (visual, kind, seconds, motion). 5 x 10.4 + 10 = 62 s, minus 5 transitions of
# 0.4 s = 60 s.
SCENES: tuple[tuple[str, str, float, str], ...] = (
    ("img0.png", "image", 10.4, "zoom_in"),
    ("clip1.mp4", "video", 10.4, "none"),
    ("img2.png", "image", 10.4, "pan_right"),
    ("clip3.mp4", "video", 10.4, "zoom_in"),
    ("img4.png", "image", 10.4, "zoom_out"),
    ("clip5.mp4", "video", 10.0, "pan_left"),
)
_SCRIPT = (
    "the quiet ocean hides a city of light where every creature makes its own glow "
    "and no two signals are the same scientists call it bioluminescence and it is the "
    "most common language on earth spoken in the dark by fish squid and tiny plankton "
    "some use it to hunt others to hide and a few to find a partner across the black "
    "water the anglerfish dangles a lantern the firefly squid paints the surf blue and "
    "the vampire squid throws a cloud of sparks to escape what hunts it now engineers "
    "borrow these tricks for medicine for lighting and for reading the health of the "
    "sea itself so next time you see a wave glow at night remember that you are "
    "watching a conversation older than trees and far stranger than any story we tell "
    "and it goes on right now beneath the surface of every ocean on our small blue planet"
)
WORDS = tuple(_SCRIPT.split(" "))


# --- inputs ----------------------------------------------------------------------------


def generate_inputs(ffmpeg: Path) -> None:
    """Stills, clips, narration, music and captions (ffmpeg sources; run once)."""
    from vidpipe.media.ffmpeg import run_ffmpeg

    INPUTS.mkdir(parents=True, exist_ok=True)

    def ff(*args: str) -> None:
        run_ffmpeg(list(args), ffmpeg=ffmpeg, timeout_s=1200)

    # Stills as image generators deliver them: a portrait 1152x2048, a landscape
    # 1920x1080 (cropped to 9:16 by the composer), a portrait 1080x1920.
    draw_landscape(INPUTS / "img0.png", 1152, 2048)
    ff("-f", "lavfi", "-i", "mandelbrot=s=1920x1080:start_x=-0.16:start_y=1.04:start_scale=0.05",
       "-frames:v", "1", str(INPUTS / "img2.png"))  # fmt: skip
    ff("-f", "lavfi", "-i", "gradients=s=1080x1920:n=5:type=spiral:seed=7",
       "-vf", "noise=alls=10:allf=u,format=rgb24",
       "-frames:v", "1", str(INPUTS / "img4.png"))  # fmt: skip
    # Clips as video generators deliver them: 720x1280 24 fps, 1920x1080 30 fps,
    # 1080x1920 30 fps, H.264, about as long as their scenes.
    ff("-f", "lavfi",
       "-i", "mandelbrot=s=720x1280:rate=24:start_scale=0.5:end_scale=0.05:end_pts=300",
       "-t", "10.5", "-c:v", "libx264", "-preset", "fast", "-crf", "18", "-pix_fmt", "yuv420p",
       str(INPUTS / "clip1.mp4"))  # fmt: skip
    ff("-f", "lavfi", "-i", "testsrc2=s=1920x1080:r=30:d=10.5",
       "-c:v", "libx264", "-preset", "fast", "-crf", "18", "-pix_fmt", "yuv420p",
       str(INPUTS / "clip3.mp4"))  # fmt: skip
    ff("-f", "lavfi", "-i", "gradients=s=1080x1920:r=30:n=4:speed=0.03:type=circular:seed=3",
       "-t", "10.5",
       "-c:v", "libx264", "-preset", "fast", "-crf", "18", "-pix_fmt", "yuv420p",
       str(INPUTS / "clip5.mp4"))  # fmt: skip
    # Narration per scene: band-passed noise and a voiced tone, chopped into syllables
    # (about 4 per second) and phrases, one second shorter than the scene.
    for index, (_, _, seconds, _) in enumerate(SCENES):
        length = seconds - 1.0
        ff("-f", "lavfi", "-i", f"anoisesrc=c=pink:a=0.3:r=48000:d={length}:seed={index + 1}",
           "-f", "lavfi", "-i", f"sine=f={140 + 20 * index}:r=48000:d={length}",
           "-filter_complex",
           "[0:a]bandpass=f=1200:width_type=h:w=1800[n];[1:a]volume=0.4[s];"
           "[n][s]amix=inputs=2:normalize=0,"
           "volume='(0.55+0.45*sin(2*PI*4.3*t))*gt(sin(2*PI*0.45*t+1),-0.7)':eval=frame,"
           "volume=-6dB",
           "-c:a", "pcm_s16le", str(INPUTS / f"narration{index}.wav"))  # fmt: skip
    # Music: a 24 s loop (a soft chord over a pulse), looped by the composer.
    ff("-f", "lavfi", "-i", "sine=f=220:r=48000:d=24",
       "-f", "lavfi", "-i", "sine=f=277:r=48000:d=24",
       "-f", "lavfi", "-i", "sine=f=330:r=48000:d=24",
       "-filter_complex",
       "[0:a][1:a][2:a]amix=inputs=3,volume='0.6+0.4*sin(2*PI*2*t)':eval=frame",
       "-c:a", "pcm_s16le", str(INPUTS / "music.wav"))  # fmt: skip
    write_captions()


def write_captions() -> None:
    """~150 word-by-word captions over each scene's narration (ASS + JSON for MoviePy).

    One caption per word, in ``captions_timed``'s default style (bottom-centred, 20 %
    above the bottom, within 80 % of the width: the 9:16 safe zone).
    """
    from vidpipe.media.alignment import WordTiming
    from vidpipe.media.captions_timed import CaptionStyle, group_words, to_ass

    timings: list[WordTiming] = []
    cursor = 0
    start = 0.0
    per_scene = [len(WORDS) // len(SCENES)] * len(SCENES)
    per_scene[-1] += len(WORDS) - sum(per_scene)
    for (_, _, seconds, _), count in zip(SCENES, per_scene, strict=True):
        # Spread over the narration: from 0.2 s in to 1.2 s before the scene ends.
        step = (seconds - 1.4) / count
        begin = start + 0.2
        timings += [
            WordTiming(word, begin + i * step, begin + (i + 1) * step)
            for i, word in enumerate(WORDS[cursor : cursor + count])
        ]
        cursor += count
        start += seconds - TRANSITION_S
    lines = group_words(timings, max_words=1)
    style = CaptionStyle(width_px=WIDTH, height_px=HEIGHT)
    (INPUTS / "captions.ass").write_text(to_ass(lines, style), encoding="utf-8")
    (INPUTS / "events.json").write_text(
        json.dumps([[line.start_s, line.end_s, line.text] for line in lines]), encoding="utf-8"
    )


def draw_landscape(path: Path, width: int, height: int) -> None:
    """A still like an illustration generator's: sky, sun, ridges, trees, fine grain."""
    import random

    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(7)
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        share = y / height
        draw.line(
            [(0, y), (width, y)],
            fill=(int(40 + 180 * share), int(60 + 90 * share), int(140 + 60 * (1 - share))),
        )
    draw.ellipse((width * 0.55, height * 0.18, width * 0.85, height * 0.35), fill=(255, 220, 150))
    for layer in range(5):
        base = height * (0.45 + layer * 0.1)
        points = [(0.0, float(height))]
        for ridge_x in range(0, width + 40, 40):
            points.append((float(ridge_x), base + rng.uniform(-60, 60) - 80 * (layer % 2)))
        points.append((float(width), float(height)))
        shade = 30 + layer * 25
        draw.polygon(points, fill=(shade // 2, shade, shade // 2 + 20))
    for _ in range(120):
        tree_x, tree_y = rng.uniform(0, width), rng.uniform(height * 0.6, height)
        size = rng.uniform(20, 70)
        draw.polygon(
            [(tree_x, tree_y - 2 * size), (tree_x - size / 2, tree_y), (tree_x + size / 2, tree_y)],
            fill=(10, rng.randint(60, 120), 30),
        )
    image = image.filter(ImageFilter.GaussianBlur(1.2))
    grain = Image.effect_noise((width, height), 12).convert("RGB")
    Image.blend(image, grain, 0.06).save(path)


def inputs_ready() -> bool:
    names = [s[0] for s in SCENES] + [f"narration{i}.wav" for i in range(len(SCENES))]
    return all((INPUTS / n).is_file() for n in [*names, "music.wav", "captions.ass", "events.json"])


def compose_spec() -> Any:
    from vidpipe.media.compose import ComposeSpec, Scene

    return ComposeSpec(
        scenes=tuple(
            Scene(
                visual=INPUTS / name,
                kind=kind,  # type: ignore[arg-type]
                duration_s=seconds,
                motion=motion,  # type: ignore[arg-type]
                narration=INPUTS / f"narration{index}.wav",
            )
            for index, (name, kind, seconds, motion) in enumerate(SCENES)
        ),
        size=(WIDTH, HEIGHT),
        fps=FPS,
        transition="fade",
        transition_s=TRANSITION_S,
        captions_ass=INPUTS / "captions.ass",
        music=INPUTS / "music.wav",
        music_gain_db=MUSIC_GAIN_DB,
        preset=PRESET,
        crf=CRF,
    )


# --- measurements ----------------------------------------------------------------------


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Any) -> tuple[float, float, Any]:
    cpu = children_cpu_s()
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, children_cpu_s() - cpu, value


def run_floor(ffmpeg: Path) -> None:
    from vidpipe.media.ffmpeg import run_ffmpeg

    args = [
        "-f", "lavfi", "-i", f"testsrc2=s={WIDTH}x{HEIGHT}:r={FPS}:d={SECONDS}",
        "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF), "-pix_fmt", "yuv420p",
        "-f", "null", "-",
    ]  # fmt: skip
    run_ffmpeg(args, ffmpeg=ffmpeg, timeout_s=1800)


def run_compose(ffmpeg: Path, work: Path, out: Path) -> Any:
    from vidpipe.media.compose import compose

    return compose(compose_spec(), out, work_dir=work, ffmpeg=ffmpeg)


def ensure_moviepy_python() -> Path:
    python = MOVIEPY_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(MOVIEPY_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"moviepy=={MOVIEPY_VERSION}"], check=True
        )
    return python


def run_moviepy(ffmpeg: Path, seconds: float, out: Path) -> dict[str, Any]:
    python = ensure_moviepy_python()
    job = {
        "out": str(out),
        "seconds": seconds,
        "scenes": [[str(INPUTS / n), k, s, m] for n, k, s, m in SCENES],
        "narration": [str(INPUTS / f"narration{i}.wav") for i in range(len(SCENES))],
        "music": str(INPUTS / "music.wav"),
        "events": json.loads((INPUTS / "events.json").read_text(encoding="utf-8")),
    }
    env = {**os.environ, "IMAGEIO_FFMPEG_EXE": str(ffmpeg)}
    cpu = children_cpu_s()
    started = time.perf_counter()
    done = subprocess.run(
        [str(python), __file__, "--moviepy-child", json.dumps(job)],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"moviepy run failed:\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "cpu_s": children_cpu_s() - cpu, **report}


def moviepy_child(job: dict[str, Any]) -> None:
    """The composition written the way MoviePy-based generators write it.

    Runs in the MoviePy virtualenv: imports nothing from vidpipe.
    """
    import importlib.metadata

    from moviepy import (
        AudioFileClip,
        CompositeAudioClip,
        CompositeVideoClip,
        ImageClip,
        TextClip,
        VideoFileClip,
        afx,
        concatenate_videoclips,
        vfx,
    )

    started = time.perf_counter()
    size = (WIDTH, HEIGHT)
    clips = []
    starts = []
    start = 0.0
    for index, (path, kind, seconds, motion) in enumerate(job["scenes"]):
        raw = ImageClip(path) if kind == "image" else VideoFileClip(path, audio=False)
        raw = raw.with_duration(seconds)
        margin = {"none": 1.0, "zoom_in": 1.15, "zoom_out": 1.15}.get(motion, 1.12)
        cover = max(WIDTH / raw.w, HEIGHT / raw.h) * margin
        fitted = raw.resized(cover)
        if motion == "zoom_in":
            moved = fitted.resized(lambda t, d=seconds: (1 + 0.15 * t / d) / 1.15)
            layer = moved.with_position("center")
        elif motion == "zoom_out":
            moved = fitted.resized(lambda t, d=seconds: (1.15 - 0.15 * t / d) / 1.15)
            layer = moved.with_position("center")
        elif motion in ("pan_left", "pan_right"):
            travel = fitted.w - WIDTH
            top = -(fitted.h - HEIGHT) / 2
            if motion == "pan_right":
                layer = fitted.with_position(lambda t, d=seconds, s=travel, y=top: (-s * t / d, y))
            else:
                layer = fitted.with_position(
                    lambda t, d=seconds, s=travel, y=top: (-s * (1 - t / d), y)
                )
        else:
            layer = fitted.with_position("center")
        scene = CompositeVideoClip([layer], size=size).with_duration(seconds)
        if index > 0:
            scene = scene.with_effects([vfx.CrossFadeIn(TRANSITION_S)])
        clips.append(scene)
        starts.append(start)
        start += seconds - TRANSITION_S
    video = concatenate_videoclips(clips, method="compose", padding=-TRANSITION_S)
    # Captions as burned text: one Pillow-drawn TextClip per word, bottom-centred as
    # the ASS style places them (80 px bold, yellow, 6 px outline, 20% above the bottom).
    texts = []
    for event_start, event_end, word in job["events"]:
        text = TextClip(
            font=str(FONT),
            text=word,
            font_size=80,
            color="#FFD400",
            stroke_color="black",
            stroke_width=6,
            method="label",
        )
        y = HEIGHT - int(HEIGHT * 0.20) - text.h
        texts.append(
            text.with_start(event_start)
            .with_duration(event_end - event_start)
            .with_position(("center", y))
        )
    final = CompositeVideoClip([video, *texts], size=size)
    # Audio: narration at the scene starts, music looped at -18 dB. MoviePy has no
    # sidechain ducking and no loudness normalization (only peak normalization).
    voices = [
        AudioFileClip(path).with_start(begin)
        for path, begin in zip(job["narration"], starts, strict=True)
    ]
    music = AudioFileClip(job["music"]).with_effects(
        [afx.AudioLoop(duration=video.duration), afx.MultiplyVolume(10 ** (MUSIC_GAIN_DB / 20))]
    )
    final = final.with_audio(CompositeAudioClip([music, *voices]).with_duration(video.duration))
    final = final.with_duration(video.duration)
    if job["seconds"] < final.duration:
        final = final.subclipped(0, job["seconds"])
    setup_s = time.perf_counter() - started
    setup_cpu_s = _own_and_children_cpu_s()
    final.write_videofile(
        job["out"],
        fps=FPS,
        codec="libx264",
        preset=PRESET,
        ffmpeg_params=["-crf", str(CRF), "-pix_fmt", "yuv420p", "-movflags", "+faststart"],
        threads=2,
        audio_codec="aac",
        audio_bitrate="192k",
        logger=None,
    )
    report = {
        # moviepy.__version__ of 2.2.1 still says 2.1.2: ask the installed metadata.
        "version": importlib.metadata.version("moviepy"),
        "setup_s": setup_s,
        "setup_cpu_s": setup_cpu_s,
        "write_s": time.perf_counter() - started - setup_s,
        "write_cpu_s": _own_and_children_cpu_s() - setup_cpu_s,
    }
    print(json.dumps(report))


def _own_and_children_cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime + children_cpu_s()


def extrapolate_moviepy(measured: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The 60 s figures from a run over the first ``seconds``.

    The set-up (opening the clips, drawing ~150 text clips, interpreter start) is
    paid once; only the frame writing is scaled by 60 / ``seconds``.
    """
    scale = SECONDS / seconds
    fixed_wall = measured["wall_s"] - measured["write_s"]
    fixed_cpu = measured["cpu_s"] - measured["write_cpu_s"]
    out = {key: round(value, 2) if isinstance(value, float) else value
           for key, value in measured.items()}  # fmt: skip
    out["seconds_rendered"] = seconds
    out["wall_s_60s"] = round(fixed_wall + measured["write_s"] * scale, 1)
    out["cpu_s_60s"] = round(fixed_cpu + measured["write_cpu_s"] * scale, 1)
    return out


def run_content_floor(ffmpeg: Path, composed: Path) -> dict[str, float]:
    """x264 alone on the composed frames: the encoder floor of *this* content.

    The composed file is decoded in one process and piped raw into an encoder with
    the same settings; the encoder's own CPU time is what encoding these pictures
    costs, whatever their complexity (zooms and fades cost x264 more than testsrc2).
    """
    decode = [
        str(ffmpeg), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(composed),
        "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-",
    ]  # fmt: skip
    encode = [
        str(ffmpeg), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS),
        "-i", "-", "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF),
        "-pix_fmt", "yuv420p", "-f", "null", "-",
    ]  # fmt: skip
    decoder = subprocess.Popen(decode, stdout=subprocess.PIPE)
    encoder = subprocess.Popen(encode, stdin=decoder.stdout)
    assert decoder.stdout is not None
    decoder.stdout.close()
    _, enc_status, enc_usage = os.wait4(encoder.pid, 0)
    _, dec_status, dec_usage = os.wait4(decoder.pid, 0)
    # Reaped here, so tell Popen not to wait for them again.
    encoder.returncode, decoder.returncode = enc_status, dec_status
    if enc_status or dec_status:
        raise RuntimeError(f"content floor failed: {enc_status=} {dec_status=}")
    return {
        "encoder_cpu_s": round(enc_usage.ru_utime + enc_usage.ru_stime, 2),
        "decoder_cpu_s": round(dec_usage.ru_utime + dec_usage.ru_stime, 2),
    }


def _child_cpu_s(args: list[str]) -> float:
    """CPU time (user + system) of one ffmpeg run, from its own rusage."""
    child = subprocess.Popen(args)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = status
    if status:
        raise RuntimeError(f"ffmpeg failed ({status}): {' '.join(args)}")
    return usage.ru_utime + usage.ru_stime


def run_unavoidable_work(ffmpeg: Path, composed: Path) -> dict[str, float]:
    """Work every composer of these inputs does besides encoding its frames.

    Decoding the clips (each once, at the default thread count, as a segment does)
    and encoding the minute of AAC the output carries. With the content floor this
    is a lower bound for any composer of these inputs: what is left above it is the
    composer's own overhead (scaling, motion, captions, transitions, mixing).
    """
    base = [str(ffmpeg), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    decode = 0.0
    for name, kind, _, _ in SCENES:
        if kind == "video":
            decode += _child_cpu_s([*base, "-i", str(INPUTS / name), "-f", "null", "-"])
    wav = OUT_DIR / "audio-floor.wav"
    subprocess.run([*base, "-i", str(composed), "-map", "0:a:0", "-c:a", "pcm_f32le", str(wav)],
                   check=True)  # fmt: skip
    try:
        aac = _child_cpu_s(
            [*base, "-i", str(wav), "-c:a", "aac", "-b:a", "192k", "-f", "null", "-"]
        )
    finally:
        wav.unlink(missing_ok=True)
    return {"clip_decode_cpu_s": round(decode, 2), "aac_encode_cpu_s": round(aac, 2)}


# --- main ------------------------------------------------------------------------------


def summarize(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--moviepy-seconds", type=float, default=20.0)
    parser.add_argument("--skip-moviepy", action="store_true")
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--moviepy-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.moviepy_child:
        moviepy_child(json.loads(args.moviepy_child))
        return

    sys.path.insert(0, str(BENCH_DIR))
    import shutil

    from benchlib import emit, machine, note, wait_for_quiet

    from vidpipe.media.analysis import analyze
    from vidpipe.media.ffmpeg import find_ffmpeg
    from vidpipe.media.probe import probe
    from vidpipe.media.validate import Expectation, validate_full

    ffmpeg = find_ffmpeg()
    if args.regenerate or not inputs_ready():
        note("generating inputs")
        generate_inputs(ffmpeg)
    busy = wait_for_quiet()
    floor_wall, floor_cpu, compose_wall, compose_cpu = [], [], [], []
    out = OUT_DIR / "composed.mp4"
    result = None
    for run in range(args.runs):
        note(f"run {run + 1}/{args.runs}: floor")
        wall, cpu, _ = timed(lambda: run_floor(ffmpeg))
        floor_wall.append(wall)
        floor_cpu.append(cpu)
        note(f"  floor {wall:.1f} s wall, {cpu:.1f} s CPU; compose (cold)")
        work = OUT_DIR / "work"
        shutil.rmtree(work, ignore_errors=True)
        wall, cpu, result = timed(lambda w=work: run_compose(ffmpeg, w, out))
        compose_wall.append(wall)
        compose_cpu.append(cpu)
        note(f"  compose {wall:.1f} s wall, {cpu:.1f} s CPU")
    note("compose (resume: every segment checkpointed)")
    resume_wall, resume_cpu, resumed = timed(lambda: run_compose(ffmpeg, OUT_DIR / "work", out))
    analysis = analyze(out, want_audio=True, ffmpeg=ffmpeg)
    report = validate_full(analysis, Expectation(width=WIDTH, height=HEIGHT, seconds=SECONDS))
    info = probe(out)
    note("content floor: x264 alone on the composed frames")
    content_floor = run_content_floor(ffmpeg, out)
    note("unavoidable work: decoding the clips, encoding the AAC")
    unavoidable = run_unavoidable_work(ffmpeg, out)
    lower_bound_cpu = (
        content_floor["encoder_cpu_s"]
        + unavoidable["clip_decode_cpu_s"]
        + unavoidable["aac_encode_cpu_s"]
    )
    moviepy: dict[str, Any] | None = None
    if not args.skip_moviepy:
        note(f"moviepy: first {args.moviepy_seconds:g} s")
        moviepy = run_moviepy(ffmpeg, args.moviepy_seconds, OUT_DIR / "moviepy.mp4")
        moviepy = extrapolate_moviepy(moviepy, min(args.moviepy_seconds, SECONDS))
    floor_med = statistics.median(floor_wall)
    compose_med = statistics.median(compose_wall)
    summary: dict[str, Any] = {
        "bench": "compose",
        "machine": machine(),
        "busy_cores_before": busy,
        "runs": args.runs,
        "floor_wall_s": summarize(floor_wall),
        "floor_cpu_s": summarize(floor_cpu),
        "compose_wall_s": summarize(compose_wall),
        "compose_cpu_s": summarize(compose_cpu),
        "compose_over_floor_wall": round(compose_med / floor_med, 2),
        "compose_over_floor_cpu": round(
            statistics.median(compose_cpu) / statistics.median(floor_cpu), 2
        ),
        "compose_over_floor_per_run": [
            round(c / f, 2) for c, f in zip(compose_wall, floor_wall, strict=True)
        ],
        "content_floor_encoder_cpu_s": content_floor["encoder_cpu_s"],
        "content_floor_over_floor_cpu": round(
            content_floor["encoder_cpu_s"] / statistics.median(floor_cpu), 2
        ),
        "compose_over_content_floor_cpu": round(
            statistics.median(compose_cpu) / content_floor["encoder_cpu_s"], 2
        ),
        "unavoidable": unavoidable,
        # Content floor + clip decoding + AAC: no composer of these inputs needs less
        # CPU. Against the testsrc2 floor, it is where the ratio starts.
        "lower_bound_over_floor_cpu": round(lower_bound_cpu / statistics.median(floor_cpu), 2),
        "compose_over_lower_bound_cpu": round(statistics.median(compose_cpu) / lower_bound_cpu, 2),
        "resume_wall_s": round(resume_wall, 2),
        "resume_cpu_s": round(resume_cpu, 2),
        "resume_segments_reused": resumed.segments_reused,
        "cold_segments_rendered": result.segments_rendered if result else None,
        "output": {
            "duration_s": round(info.duration_s, 3),
            "video_kbps": round((info.video.bit_rate or 0) / 1000) if info.video else None,
            "frames": analysis.decoded_frames,
            "faststart": analysis.faststart,
            "loudness_lufs": analysis.loudness.integrated_lufs if analysis.loudness else None,
            "true_peak_dbtp": analysis.loudness.true_peak_dbtp if analysis.loudness else None,
            "validation": report.reason,
        },
        "moviepy": moviepy,
    }
    if moviepy is not None:
        summary["moviepy_over_compose_wall"] = round(moviepy["wall_s_60s"] / compose_med, 1)
        summary["moviepy_over_compose_cpu"] = round(
            moviepy["cpu_s_60s"] / statistics.median(compose_cpu), 1
        )
    print(json.dumps(summary, indent=2))
    emit(summary)


if __name__ == "__main__":
    main()
