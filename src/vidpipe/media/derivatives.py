"""What a video page needs besides the video: stills, a preview, a scrubber sprite, HLS.

Each ``make_*`` function runs ffmpeg once and returns the files it wrote with their
geometry, so the caller can store them as assets without probing them again. The
geometry is decided here (pure functions, tested without media) and ffmpeg is told
exact sizes, so what is returned is what was asked for. Outputs go to ``out_dir``
under fixed names; ffmpeg runs with ``out_dir`` as its working directory so no output
path ever needs escaping inside a filter or a muxer pattern.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vidpipe.errors import MediaError
from vidpipe.media.analysis import Interval
from vidpipe.media.ffmpeg import ffmpeg_encoders, run_ffmpeg
from vidpipe.media.probe import MediaInfo, VideoStreamInfo, probe

__all__ = [
    "DEFAULT_RUNGS",
    "HLS_MASTER",
    "Derivatives",
    "HlsPackage",
    "HlsVariant",
    "Preview",
    "Rendition",
    "SpriteSheet",
    "SpriteTile",
    "Still",
    "fit_within",
    "frame_time_s",
    "hls_ladder",
    "make_derivatives",
    "make_hls",
    "make_poster",
    "make_preview",
    "make_sprite_sheet",
    "make_thumbnail",
    "parse_master_playlist",
    "parse_media_playlist",
    "sprite_tiles",
    "sprite_vtt",
]

THUMBNAIL = "thumbnail.jpg"
POSTER = "poster.jpg"
SPRITE = "sprite.jpg"
SPRITE_VTT = "sprite.vtt"
HLS_DIR = "hls"
HLS_MASTER = "master.m3u8"

# Short side of each HLS rendition and its video bit rate (bits/s): a common H.264
# ladder for 24-30 fps content.
DEFAULT_RUNGS: tuple[tuple[int, int], ...] = (
    (240, 400_000),
    (360, 800_000),
    (540, 1_500_000),
    (720, 2_800_000),
    (1080, 5_000_000),
)
_HLS_AUDIO_BPS = 128_000


@dataclass(frozen=True)
class Still:
    """A single JPEG frame (thumbnail or poster)."""

    path: Path
    width: int
    height: int
    at_s: float

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class Preview:
    """A short, small, looping animation of the video (WebP, else GIF)."""

    path: Path
    format: str
    width: int
    height: int
    fps: float
    start_s: float
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class SpriteTile:
    """Where in the sprite image the frame for ``start_s``-``end_s`` is."""

    start_s: float
    end_s: float
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class SpriteSheet:
    """A grid of frames (row by row, in time order) and the WebVTT that indexes it."""

    image_path: Path
    vtt_path: Path
    columns: int
    rows: int
    tile_width: int
    tile_height: int
    interval_s: float
    tiles: tuple[SpriteTile, ...]

    @property
    def width(self) -> int:
        return self.columns * self.tile_width

    @property
    def height(self) -> int:
        return self.rows * self.tile_height

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class Rendition:
    """One rung of an HLS ladder: its size and target video bit rate."""

    name: str
    width: int
    height: int
    video_bps: int


@dataclass(frozen=True)
class HlsVariant:
    name: str
    width: int
    height: int
    # Peak bits/s as written in the master playlist.
    bandwidth: int
    playlist_path: Path
    segment_paths: tuple[Path, ...]


@dataclass(frozen=True)
class HlsPackage:
    master_path: Path
    segment_s: float
    variants: tuple[HlsVariant, ...]

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class Derivatives:
    thumbnail: Still
    poster: Still
    preview: Preview
    sprite: SpriteSheet
    hls: HlsPackage

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


# --- Geometry and choices: pure ---------------------------------------------------------


def fit_within(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``width``x``height`` scaled to fit a ``max_side`` square, never up, sides even."""
    scale = min(1.0, max_side / max(width, height))
    return _even(width * scale), _even(height * scale)


def frame_time_s(duration_s: float, black: Sequence[Interval] = ()) -> float:
    """A representative moment: a third of the way in, moved out of any black span.

    A third avoids fade-ins and title cards at the start and endings at the end. When
    that moment is black, the first non-black moment after it is taken, else the
    first non-black moment at all; an all-black video gets its third.
    """
    third = duration_s / 3
    for candidate in (third, 0.0):
        moment = _after_black(candidate, black)
        if moment < duration_s:
            return moment
    return third


def sprite_tiles(
    duration_s: float, *, count: int, columns: int, tile_width: int, tile_height: int
) -> tuple[SpriteTile, ...]:
    """``count`` tiles covering ``duration_s`` in equal intervals, laid out row by row."""
    interval = duration_s / count
    return tuple(
        SpriteTile(
            start_s=round(index * interval, 3),
            end_s=round(min(duration_s, (index + 1) * interval), 3),
            x=(index % columns) * tile_width,
            y=(index // columns) * tile_height,
            width=tile_width,
            height=tile_height,
        )
        for index in range(count)
    )


def sprite_vtt(tiles: Sequence[SpriteTile], image_url: str) -> str:
    """A WebVTT file whose cues point at each tile (``image#xywh=x,y,w,h``)."""
    lines = ["WEBVTT", ""]
    for tile in tiles:
        lines += [
            f"{_vtt_time(tile.start_s)} --> {_vtt_time(tile.end_s)}",
            f"{image_url}#xywh={tile.x},{tile.y},{tile.width},{tile.height}",
            "",
        ]
    return "\n".join(lines)


def hls_ladder(
    width: int, height: int, rungs: Sequence[tuple[int, int]] = DEFAULT_RUNGS, *, most: int = 4
) -> tuple[Rendition, ...]:
    """The renditions for a ``width``x``height`` source, smallest first.

    Rungs are sizes of the short side, so a portrait source gets portrait renditions;
    none is larger than the source (no upscaling), and the ``most`` largest that fit
    are kept. A source smaller than every rung gets one rendition at its own size.
    """
    short, long_ = min(width, height), max(width, height)
    fitting = [(side, bps) for side, bps in sorted(rungs) if side <= short][-most:]
    if not fitting:
        fitting = [(short, min(bps for _, bps in rungs))]
    ladder = []
    for side, bps in fitting:
        other = _even(long_ * side / short)
        size = (other, _even(side)) if width >= height else (_even(side), other)
        ladder.append(Rendition(f"{side}p", size[0], size[1], bps))
    return tuple(ladder)


def parse_master_playlist(text: str) -> list[tuple[dict[str, str], str]]:
    """The variants of an HLS master playlist: ``EXT-X-STREAM-INF`` attributes and URI."""
    variants: list[tuple[dict[str, str], str]] = []
    pending: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-STREAM-INF:"):
            pending = _attributes(line.partition(":")[2])
        elif line and not line.startswith("#") and pending is not None:
            variants.append((pending, line))
            pending = None
    return variants


def parse_media_playlist(text: str) -> list[str]:
    """The segment URIs of an HLS media playlist, in order."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


# --- ffmpeg runs --------------------------------------------------------------------------


def make_thumbnail(
    video: Path,
    out_dir: Path,
    *,
    ffmpeg: Path,
    at_s: float | None = None,
    max_side: int = 320,
    timeout_s: float = 60.0,
) -> Still:
    """A small JPEG of the frame at ``at_s`` (default: a third in), fitting ``max_side``."""
    return _still(video, out_dir / THUMBNAIL, ffmpeg, at_s, max_side, 4, timeout_s)


def make_poster(
    video: Path,
    out_dir: Path,
    *,
    ffmpeg: Path,
    at_s: float | None = None,
    timeout_s: float = 60.0,
) -> Still:
    """A full-size JPEG of the frame at ``at_s`` (default: a third in)."""
    return _still(video, out_dir / POSTER, ffmpeg, at_s, None, 2, timeout_s)


def make_preview(
    video: Path,
    out_dir: Path,
    *,
    ffmpeg: Path,
    at_s: float | None = None,
    seconds: float = 3.0,
    fps: float = 8.0,
    max_side: int = 320,
    fmt: Literal["webp", "gif"] | None = None,
    timeout_s: float = 120.0,
) -> Preview:
    """A looping animation of ``seconds`` around ``at_s`` (default: a third in).

    ``fmt`` "webp" or "gif"; by default WebP when this ffmpeg has libwebp, else GIF.
    """
    if fmt is None:
        fmt = "webp" if "libwebp_anim" in ffmpeg_encoders(ffmpeg) else "gif"
    if fmt not in ("webp", "gif"):
        raise ValueError(f"preview format must be webp or gif, not {fmt!r}")
    info, stream = _probe_video(video)
    width, height = fit_within(stream.width, stream.height, max_side)
    moment = frame_time_s(info.duration_s) if at_s is None else at_s
    length = min(seconds, info.duration_s)
    start = min(max(0.0, moment - length / 2), max(0.0, info.duration_s - length))
    scale = f"fps={fps:g},scale={width}:{height}:flags=lanczos,setsar=1"
    args = ["-ss", f"{start:.3f}", "-t", f"{length:.3f}", "-i", str(video.resolve()), "-an"]
    if fmt == "webp":
        args += ["-vf", scale, "-c:v", "libwebp_anim", "-quality", "60", "-loop", "0"]
    else:
        # GIF has 256 colours: one palette made for these frames, then applied.
        args += [
            "-filter_complex",
            f"[0:v:0]{scale},split[a][b];[a]palettegen=stats_mode=diff[p];"
            "[b][p]paletteuse=dither=bayer",
            "-loop", "0",
        ]  # fmt: skip
    name = f"preview.{fmt}"
    out_dir.mkdir(parents=True, exist_ok=True)
    run_ffmpeg([*args, "-f", fmt, name], ffmpeg=ffmpeg, timeout_s=timeout_s, cwd=out_dir)
    path = _produced(out_dir / name)
    return Preview(path, fmt, width, height, fps, round(start, 3), round(length, 3))


def make_sprite_sheet(
    video: Path,
    out_dir: Path,
    *,
    ffmpeg: Path,
    count: int = 25,
    columns: int = 5,
    min_interval_s: float = 1.0,
    tile_max_side: int = 160,
    timeout_s: float = 300.0,
) -> SpriteSheet:
    """``count`` frames at equal intervals in a JPEG grid, plus the WebVTT that maps times to tiles.

    Short videos get fewer tiles: no two closer than ``min_interval_s`` (a scrubber
    needs no finer steps), never more than the video has frames.
    """
    info, stream = _probe_video(video)
    frames = stream.frames or max(1, math.floor(stream.fps * info.duration_s))
    count = max(1, min(count, frames, math.floor(info.duration_s / min_interval_s)))
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    tile_width, tile_height = fit_within(stream.width, stream.height, tile_max_side)
    tiles = sprite_tiles(
        info.duration_s,
        count=count,
        columns=columns,
        tile_width=tile_width,
        tile_height=tile_height,
    )
    interval = info.duration_s / count
    # The first frame at or after each multiple of the interval (selected_n counts the
    # frames taken so far), so tiles do not drift the way "interval since last" would.
    graph = (
        f"select='gte(t,selected_n*{interval:.6f})',"
        f"scale={tile_width}:{tile_height}:flags=bilinear,setsar=1,"
        f"tile={columns}x{rows}"
    )
    args = [
        "-i", str(video.resolve()), "-an", "-vf", graph,
        "-fps_mode", "passthrough", "-frames:v", "1", "-q:v", "4",
        "-update", "1", "-f", "image2", SPRITE,
    ]  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    run_ffmpeg(args, ffmpeg=ffmpeg, timeout_s=timeout_s, cwd=out_dir)
    image = _produced(out_dir / SPRITE)
    vtt = out_dir / SPRITE_VTT
    vtt.write_text(sprite_vtt(tiles, SPRITE), encoding="utf-8")
    return SpriteSheet(
        image, vtt, columns, rows, tile_width, tile_height, round(interval, 3), tiles
    )


def make_hls(
    video: Path,
    out_dir: Path,
    *,
    ffmpeg: Path,
    segment_s: float = 4.0,
    rungs: Sequence[tuple[int, int]] = DEFAULT_RUNGS,
    timeout_s: float = 1800.0,
) -> HlsPackage:
    """HLS (H.264 + AAC in MPEG-TS segments) for every rung of the ladder, in one ffmpeg run.

    The video is decoded once and split to one scaler and encoder per rendition; key
    frames are forced every ``segment_s`` in all of them so the segments line up and a
    player can switch at any boundary. Writes ``out_dir/hls/master.m3u8`` and
    ``out_dir/hls/<name>/index.m3u8`` with its segments.
    """
    info, stream = _probe_video(video)
    ladder = hls_ladder(stream.width, stream.height, rungs)
    hls_dir = out_dir / HLS_DIR
    hls_dir.mkdir(parents=True, exist_ok=True)
    run_ffmpeg(
        _hls_args(video, ladder, audio=info.audio is not None, segment_s=segment_s),
        ffmpeg=ffmpeg,
        timeout_s=timeout_s,
        cwd=hls_dir,
    )
    master = _produced(hls_dir / HLS_MASTER)
    by_uri = {uri: attrs for attrs, uri in parse_master_playlist(master.read_text())}
    variants = []
    for rendition in ladder:
        uri = f"{rendition.name}/index.m3u8"
        if uri not in by_uri:
            raise MediaError(f"HLS master lacks the {rendition.name} variant", code="ffmpeg_failed")
        playlist = _produced(hls_dir / uri)
        segments = tuple(
            playlist.parent / name for name in parse_media_playlist(playlist.read_text())
        )
        variants.append(
            HlsVariant(
                name=rendition.name,
                width=rendition.width,
                height=rendition.height,
                bandwidth=int(by_uri[uri].get("BANDWIDTH", "0")),
                playlist_path=playlist,
                segment_paths=segments,
            )
        )
    return HlsPackage(master, segment_s, tuple(variants))


def make_derivatives(
    video: Path, out_dir: Path, *, ffmpeg: Path, black: Sequence[Interval] = ()
) -> Derivatives:
    """All of the above, the stills and preview at the representative moment.

    Pass the black spans from an ``Analysis`` so no still is taken of a black frame.
    """
    info, _ = _probe_video(video)
    moment = frame_time_s(info.duration_s, black)
    return Derivatives(
        thumbnail=make_thumbnail(video, out_dir, ffmpeg=ffmpeg, at_s=moment),
        poster=make_poster(video, out_dir, ffmpeg=ffmpeg, at_s=moment),
        preview=make_preview(video, out_dir, ffmpeg=ffmpeg, at_s=moment),
        sprite=make_sprite_sheet(video, out_dir, ffmpeg=ffmpeg),
        hls=make_hls(video, out_dir, ffmpeg=ffmpeg),
    )


# --- Helpers ------------------------------------------------------------------------------


def _still(
    video: Path,
    out: Path,
    ffmpeg: Path,
    at_s: float | None,
    max_side: int | None,
    quality: int,
    timeout_s: float,
) -> Still:
    info, stream = _probe_video(video)
    width, height = stream.width, stream.height
    if max_side is not None:
        width, height = fit_within(width, height, max_side)
    moment = frame_time_s(info.duration_s) if at_s is None else at_s
    # Seeking at or past the last frame yields nothing; stay a frame before the end.
    last = max(0.0, info.duration_s - 1 / max(stream.fps, 1.0))
    moment = min(max(0.0, moment), last)
    args = [
        "-ss", f"{moment:.3f}", "-i", str(video.resolve()), "-an",
        "-vf", f"scale={width}:{height}:flags=lanczos,setsar=1",
        "-frames:v", "1", "-q:v", str(quality), "-update", "1", "-f", "image2", out.name,
    ]  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    run_ffmpeg(args, ffmpeg=ffmpeg, timeout_s=timeout_s, cwd=out.parent)
    return Still(_produced(out), width, height, round(moment, 3))


def _hls_args(
    video: Path, ladder: Sequence[Rendition], *, audio: bool, segment_s: float
) -> list[str]:
    n = len(ladder)
    splits = "".join(f"[s{i}]" for i in range(n))
    graph = [f"[0:v:0]split={n}{splits}"] + [
        f"[s{i}]scale={r.width}:{r.height}:flags=bicubic,setsar=1,format=yuv420p[v{i}]"
        for i, r in enumerate(ladder)
    ]
    args = ["-i", str(video.resolve()), "-filter_complex", ";".join(graph)]
    for i in range(n):
        args += ["-map", f"[v{i}]"]
    if audio:
        # Audio muxed into every variant (encoded once per variant: cheap next to video).
        for _ in range(n):
            args += ["-map", "0:a:0"]
    args += [
        "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high",
        "-force_key_frames", f"expr:gte(t,n_forced*{segment_s:g})", "-sc_threshold", "0",
    ]  # fmt: skip
    for i, r in enumerate(ladder):
        args += [
            f"-b:v:{i}", str(r.video_bps),
            f"-maxrate:v:{i}", str(round(r.video_bps * 1.07)),
            f"-bufsize:v:{i}", str(round(r.video_bps * 1.5)),
        ]  # fmt: skip
    if audio:
        args += ["-c:a", "aac", "-b:a", str(_HLS_AUDIO_BPS), "-ac", "2"]
    stream_map = " ".join(
        f"v:{i},a:{i},name:{r.name}" if audio else f"v:{i},name:{r.name}"
        for i, r in enumerate(ladder)
    )
    return [
        *args,
        "-f", "hls",
        "-hls_time", f"{segment_s:g}",
        "-hls_playlist_type", "vod",
        "-hls_flags", "independent_segments",
        "-hls_segment_type", "mpegts",
        "-hls_segment_filename", "%v/seg_%03d.ts",
        "-master_pl_name", HLS_MASTER,
        "-var_stream_map", stream_map,
        "%v/index.m3u8",
    ]  # fmt: skip


def _probe_video(video: Path) -> tuple[MediaInfo, VideoStreamInfo]:
    info = probe(video)
    if info.video is None or info.duration_s <= 0:
        raise MediaError(f"{video} has no video to make derivatives of", code="unplayable")
    return info, info.video


def _produced(path: Path) -> Path:
    # ffmpeg exits 0 with no output in corner cases (nothing selected); say so here.
    if not path.is_file() or path.stat().st_size == 0:
        raise MediaError(f"ffmpeg did not produce {path}", code="ffmpeg_failed")
    return path


def _after_black(moment: float, black: Sequence[Interval]) -> float:
    # Spans are sorted and disjoint, so one sweep moves past every span it lands in.
    for span in sorted(black, key=lambda s: s.start_s):
        if span.start_s <= moment < span.end_s:
            moment = span.end_s
    return moment


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def _vtt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def _attributes(text: str) -> dict[str, str]:
    """``KEY=value,KEY="quoted, value"`` attribute lists of HLS tags."""
    attributes: dict[str, str] = {}
    key, value, quoted, reading_key = "", "", False, True
    for char in text + ",":
        if reading_key:
            if char == "=":
                reading_key = False
            elif char != ",":
                key += char
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            attributes[key.strip()] = value
            key, value, reading_key = "", "", True
        else:
            value += char
    return attributes


def _plain(obj: Any) -> dict[str, Any]:
    data: dict[str, Any] = dataclasses.asdict(obj)
    return _stringify(data)  # type: ignore[no-any-return]


def _stringify(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _stringify(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_stringify(v) for v in value]
    return value
