"""Scene stills for shorts, made offline: procedural art and chat screenshots.

``render_scene_image`` paints a deterministic picture for a prompt: a gradient and
soft glows from the template's palette, and one motif (orbs, waves, ridges or
bands) whose layout comes from a hash of prompt and seed; a few words of the prompt
pick the motif (the sea gets waves, space gets orbs and stars). No text: captions
are burned separately. Smooth fields are computed at a quarter of the resolution
and scaled up, sharp shapes at full resolution inside their bounding boxes, so a
1080x1920 still takes well under a second.

``render_chat_image`` draws a phone's message thread (bubbles, sender names, a
header), growing down from the top, the oldest messages scrolled away when the
screen is full. ``render_script_visuals`` renders one still per scene of a script.
The composer's motion (zoom, pan) animates the stills.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from vidpipe.errors import InvalidRequest, MediaError
from vidpipe.shorts.script import Script, chat_messages
from vidpipe.shorts.templates import Template

__all__ = [
    "MOTIFS",
    "find_font",
    "motif_for",
    "render_chat_image",
    "render_scene_image",
    "render_script_visuals",
]

Array = npt.NDArray[np.float32]

MOTIFS = ("orbs", "waves", "ridges", "bands")
_MOTIF_WORDS = {
    "waves": re.compile(r"\b(sea|ocean|wave|beach|river|lake|water|surf|octop\w*|fish\w*)", re.I),
    "ridges": re.compile(r"\b(mountain|hill|hike|travel|landscape|valley|desert|road)", re.I),
    "orbs": re.compile(r"\b(space|star|planet|galax\w*|night|universe|moon|sun|cosmic)", re.I),
}
_HEX = re.compile(r"^#([0-9A-Fa-f]{6})([0-9A-Fa-f]{2})?$")
_MAX_SIDE = 4096
# Smooth fields are computed at 1/_FIELD_SCALE of the output size.
_FIELD_SCALE = 4


# --- Colours and helpers ----------------------------------------------------------------


def _rgb(colour: str) -> Array:
    match = _HEX.match(colour)
    if not match:
        raise InvalidRequest(f"invalid colour {colour!r}", param="palette")
    value = match.group(1)
    return np.array([int(value[i : i + 2], 16) / 255 for i in (0, 2, 4)], dtype=np.float32)


def _luminance(rgb: Array) -> float:
    return float(0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2])


def _seed_for(*parts: object) -> int:
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    if not (16 <= width <= _MAX_SIDE and 16 <= height <= _MAX_SIDE):
        raise InvalidRequest(f"image size must be 16-{_MAX_SIDE} per side, not {size}")
    return width, height


def _smoothstep(edge: float, x: Array) -> Array:
    # 0 inside (x < -edge), 1 outside (x > edge), smooth across about 2*edge pixels.
    t = np.clip((x + edge) / (2 * edge), 0.0, 1.0)
    result: Array = (t * t * (3 - 2 * t)).astype(np.float32)
    return result


def _blend(canvas: Array, colour: Array, alpha: Array, box: tuple[int, int, int, int]) -> None:
    """Alpha-composite ``colour`` over ``canvas[y0:y1, x0:x1]`` with coverage ``alpha``."""
    x0, y0, x1, y1 = box
    region = canvas[y0:y1, x0:x1]
    a = alpha[..., None]
    region *= 1 - a
    region += a * colour


def motif_for(prompt: str, seed: int) -> str:
    """The motif a prompt gets: from its words when they suggest one, else its hash."""
    for motif, words in _MOTIF_WORDS.items():
        if words.search(prompt):
            return motif
    return MOTIFS[_seed_for("motif", seed, prompt) % len(MOTIFS)]


# --- Procedural stills ------------------------------------------------------------------


def render_scene_image(
    prompt: str,
    *,
    size: tuple[int, int],
    palette: Sequence[str],
    seed: int,
    out: Path,
) -> Path:
    """Paint a still for ``prompt`` into ``out`` (PNG) and return ``out``.

    Deterministic: the same prompt, size, palette and seed give the same pixels;
    another prompt or seed gives another layout. Colours come from ``palette``
    (``#RRGGBB``, at least two): the darker ones for the background, so white
    captions stay legible, the brighter ones for the motif.
    """
    width, height = _check_size(size)
    colours = sorted((_rgb(c) for c in palette), key=_luminance)
    if len(colours) < 2:
        raise InvalidRequest("a palette needs at least two colours", param="palette")
    rng = np.random.default_rng(_seed_for("scene", seed, prompt))
    motif = motif_for(prompt, seed)

    # Painted at half size (a quarter of the pixels) and scaled up once at the end:
    # the picture is all gradients and smooth-edged shapes, which scale cleanly, and
    # the composer's zoom and the video encoder soften it as much anyway.
    work = 2 if width * height > 400_000 else 1
    canvas = _background(rng, colours, max(16, width // work), max(16, height // work))
    accents = colours[len(colours) // 2 :] or colours[-1:]
    if motif == "orbs":
        _orbs(canvas, rng, accents, stars="star" in prompt.lower() or "space" in prompt.lower())
    elif motif == "waves":
        _waves(canvas, rng, colours, smooth=True)
    elif motif == "ridges":
        _waves(canvas, rng, colours, smooth=False)
    else:
        _bands(canvas, rng, accents)
    _vignette(canvas)

    canvas *= 255
    canvas += 0.5
    np.clip(canvas, 0, 255, out=canvas)
    image = Image.fromarray(canvas.astype(np.uint8), "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Light compression: the stills are intermediate files, read once by ffmpeg.
    image.save(out, format="PNG", compress_level=1)
    return out


def _background(rng: np.random.Generator, colours: list[Array], width: int, height: int) -> Array:
    """A two-colour linear gradient at a random angle plus soft glows, upscaled."""
    fw, fh = max(2, width // _FIELD_SCALE), max(2, height // _FIELD_SCALE)
    ys, xs = np.mgrid[0:fh, 0:fw].astype(np.float32)
    xs /= fw
    ys /= fh
    dark = colours[: max(2, len(colours) // 2)]
    first, second = (dark[i] for i in rng.choice(len(dark), size=2, replace=False))
    angle = rng.uniform(0, 2 * math.pi)
    t = (xs - 0.5) * math.cos(angle) + (ys - 0.5) * math.sin(angle) * fh / fw
    t = np.clip(t / (abs(math.cos(angle)) + abs(math.sin(angle)) * fh / fw) + 0.5, 0, 1)
    field: Array = first * (1 - t[..., None]) + second * t[..., None]
    for _ in range(int(rng.integers(2, 5))):
        colour = colours[int(rng.integers(len(colours) // 2, len(colours)))]
        cx, cy = rng.uniform(-0.1, 1.1), rng.uniform(-0.1, 1.1)
        radius = rng.uniform(0.25, 0.6)
        strength = rng.uniform(0.25, 0.5)
        d2 = ((xs - cx) ** 2 + ((ys - cy) * fh / fw) ** 2) / (radius * radius)
        glow = (np.exp(-d2 * 2.5) * strength)[..., None]
        # Screen blend: brightens towards the glow colour, never past white.
        field = 1 - (1 - field) * (1 - glow * colour)
    image = Image.fromarray(np.clip(field * 255, 0, 255).astype(np.uint8), "RGB")
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) * np.float32(1 / 255)


def _orbs(canvas: Array, rng: np.random.Generator, accents: list[Array], *, stars: bool) -> None:
    height, width = canvas.shape[:2]
    if stars:
        count = int(rng.integers(60, 140))
        xs = rng.integers(0, width, count)
        ys = rng.integers(0, height, count)
        brightness = rng.uniform(0.4, 1.0, count).astype(np.float32)[:, None]
        canvas[ys, xs] = np.maximum(canvas[ys, xs], brightness)
    for _ in range(int(rng.integers(4, 9))):
        radius = float(rng.uniform(0.05, 0.28) * width)
        cx, cy = float(rng.uniform(0, width)), float(rng.uniform(0, height))
        colour = accents[int(rng.integers(len(accents)))]
        ring = rng.random() < 0.35
        thickness = float(rng.uniform(0.04, 0.12) * radius)
        opacity = float(rng.uniform(0.35, 0.85))
        x0, x1 = max(0, int(cx - radius - 2)), min(width, int(cx + radius + 3))
        y0, y1 = max(0, int(cy - radius - 2)), min(height, int(cy + radius + 3))
        if x0 >= x1 or y0 >= y1:
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        distance = np.hypot(xs - cx, ys - cy) - radius
        if ring:
            distance = np.abs(distance + thickness) - thickness
        alpha = (1 - _smoothstep(1.0, distance)) * opacity
        if not ring:
            # A soft highlight towards the top left makes a flat disc read as a sphere.
            shade = 1 - 0.25 * np.clip(((xs - cx) + (ys - cy)) / (2 * radius) + 0.5, 0, 1)
            _blend(canvas, colour, alpha, (x0, y0, x1, y1))
            canvas[y0:y1, x0:x1] *= (1 - alpha + alpha * shade)[..., None]
        else:
            _blend(canvas, colour, alpha, (x0, y0, x1, y1))


def _waves(canvas: Array, rng: np.random.Generator, colours: list[Array], *, smooth: bool) -> None:
    """Layered horizons from the bottom: sine sums (waves) or random walks (ridges)."""
    height, width = canvas.shape[:2]
    layers = int(rng.integers(3, 6))
    xs = np.arange(width, dtype=np.float32) / width
    for layer in range(layers):
        base = 0.45 + 0.5 * (layer + rng.uniform(0.0, 0.6)) / layers
        if smooth:
            heights = np.zeros(width, dtype=np.float32)
            for _ in range(3):
                frequency = rng.uniform(1.0, 4.0)
                phase = rng.uniform(0, 2 * math.pi)
                heights += rng.uniform(0.01, 0.035) * np.sin(2 * math.pi * frequency * xs + phase)
        else:
            knots = rng.uniform(-0.06, 0.06, 9).cumsum()
            heights = np.interp(xs, np.linspace(0, 1, 9), knots - knots.mean()).astype(np.float32)
        top = (base + heights) * height
        y0 = max(0, int(top.min()) - 2)
        if y0 >= height:
            continue
        ys = np.arange(y0, height, dtype=np.float32)[:, None]
        alpha = 1 - _smoothstep(1.0, top[None, :] - ys)
        # Front layers are darker (closer): the palette from bright to dark.
        colour = colours[len(colours) - 1 - min(layer, len(colours) - 1)] * (1 - 0.12 * layer)
        _blend(canvas, colour.astype(np.float32), alpha * 0.9, (0, y0, width, height))


def _bands(canvas: Array, rng: np.random.Generator, accents: list[Array]) -> None:
    """Diagonal translucent bands across the frame at one shared angle."""
    height, width = canvas.shape[:2]
    angle = rng.uniform(-0.9, 0.9) + (math.pi / 2 if rng.random() < 0.5 else 0.0)
    nx, ny = math.cos(angle), math.sin(angle)
    diagonal = math.hypot(width, height)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    projection = (xs - width / 2) * nx + (ys - height / 2) * ny
    for _ in range(int(rng.integers(3, 7))):
        centre = float(rng.uniform(-0.45, 0.45) * diagonal)
        half = float(rng.uniform(0.01, 0.08) * diagonal)
        colour = accents[int(rng.integers(len(accents)))]
        alpha = (1 - _smoothstep(1.0, np.abs(projection - centre) - half)) * rng.uniform(0.2, 0.6)
        _blend(canvas, colour, alpha.astype(np.float32), (0, 0, width, height))


def _vignette(canvas: Array) -> None:
    height, width = canvas.shape[:2]
    ys = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    xs = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    canvas *= (1 - 0.35 * np.clip(xs * xs * 0.6 + ys * ys * 0.6, 0, 1) ** 1.5)[..., None]


# --- Fonts ------------------------------------------------------------------------------

_FONT_PATHS = {
    False: (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/Library/Fonts/DejaVuSans.ttf",
    ),
    True: (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
        "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf",
        "/Library/Fonts/DejaVuSans-Bold.ttf",
    ),
}


@functools.cache
def find_font(bold: bool = False) -> Path:
    """A DejaVu Sans file (bold or regular): fontconfig's match, else known paths.

    Raises ``MediaError`` (code ``font_not_found``) naming what was tried: the chat
    renderer draws text and has no sensible fallback (Pillow's bitmap font cannot
    be sized).
    """
    fc_match = shutil.which("fc-match")
    if fc_match:
        pattern = "DejaVu Sans:style=Bold" if bold else "DejaVu Sans:style=Book"
        result = subprocess.run(
            [fc_match, "--format=%{file}", pattern],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        found = Path(result.stdout.strip()) if result.returncode == 0 else None
        # fc-match always answers with *some* font; only a DejaVu one is what we asked.
        if found and found.is_file() and "dejavu" in found.name.lower():
            return found
    for candidate in _FONT_PATHS[bold]:
        if Path(candidate).is_file():
            return Path(candidate)
    raise MediaError(
        "no DejaVu Sans font found (fc-match and "
        f"{', '.join(_FONT_PATHS[bold])}); install fonts-dejavu-core",
        code="font_not_found",
    )


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(find_font(bold)), size)


# --- Chat screenshots -------------------------------------------------------------------


@dataclass(frozen=True)
class _Bubble:
    speaker: str
    lines: tuple[str, ...]
    mine: bool
    label: str | None
    width: int
    height: int


def render_chat_image(
    messages: Sequence[tuple[str, str]],
    *,
    size: tuple[int, int],
    palette: Sequence[str],
    out: Path,
    me: str | None = None,
) -> Path:
    """Draw a message thread into ``out`` (PNG) and return ``out``.

    ``messages`` are (speaker, text) pairs, oldest first. Messages of ``me``
    (default: the first speaker) are on the right in the accent colour, the others on
    the left, with the sender's name above when more than one person writes there.
    ``palette``: background, received bubble, sent bubble, text, sent text (missing
    entries take iMessage-like defaults). The header names the other person.
    """
    width, height = _check_size(size)
    if not messages:
        raise InvalidRequest("a chat image needs at least one message", param="messages")
    defaults = ["#F2F2F7", "#E5E5EA", "#0A84FF", "#1C1C1E", "#FFFFFF"]
    colours = [*palette[:5], *defaults[len(palette[:5]) :]]
    background, received, sent, ink, sent_ink = (_hex_tuple(c) for c in colours)
    me = me if me is not None else messages[0][0]
    others = [s for s, _ in messages if s != me]
    show_names = len(set(others)) > 1

    # Drawn at twice the size and scaled down: Pillow draws shapes without
    # anti-aliasing, and supersampling smooths the bubbles' round corners.
    scale = 2
    w, h = width * scale, height * scale
    unit = min(width, height) / 1080 * scale
    font = _font(max(8, round(46 * unit)))
    name_font = _font(max(8, round(30 * unit)))
    header_font = _font(max(8, round(40 * unit)), bold=True)
    pad_x, pad_y = round(34 * unit), round(22 * unit)
    gap, margin = round(18 * unit), round(40 * unit)
    line_height = round(font.size * 1.25)
    max_text = round(w * 0.68) - 2 * pad_x

    bubbles: list[_Bubble] = []
    for speaker, text in messages:
        lines = _wrap(text, font, max_text)
        text_width = max(round(font.getlength(line)) for line in lines)
        mine = speaker == me
        label = speaker if show_names and not mine and speaker else None
        bubble_h = len(lines) * line_height + 2 * pad_y
        bubbles.append(
            _Bubble(
                speaker,
                tuple(lines),
                mine,
                label,
                text_width + 2 * pad_x,
                bubble_h + (round(name_font.size * 1.3) if label else 0),
            )
        )

    image = Image.new("RGB", (w, h), background)
    draw = ImageDraw.Draw(image)
    header_h = round(190 * unit)
    footer_h = round(150 * unit)
    # The thread grows down from under the header (where a short's viewer looks, and
    # clear of the platform's overlays at the bottom); once it is full, the oldest
    # messages scroll away as on a phone.
    available = h - header_h - footer_h - 2 * margin
    shown: list[_Bubble] = []
    used = 0
    for bubble in reversed(bubbles):
        if shown and used + bubble.height + gap > available:
            break
        shown.insert(0, bubble)
        used += bubble.height + gap
    y = header_h + margin
    radius = round(38 * unit)
    for bubble in shown:
        if bubble.label:
            draw.text((margin + pad_x // 2, y), bubble.label, font=name_font, fill=(142, 142, 147))
            y += round(name_font.size * 1.3)
        body_h = len(bubble.lines) * line_height + 2 * pad_y
        x0 = w - margin - bubble.width if bubble.mine else margin
        fill, text_fill = (sent, sent_ink) if bubble.mine else (received, ink)
        draw.rounded_rectangle((x0, y, x0 + bubble.width, y + body_h), radius, fill=fill)
        for i, line in enumerate(bubble.lines):
            draw.text(
                (x0 + pad_x, y + pad_y + i * line_height + (line_height - font.size) // 2),
                line,
                font=font,
                fill=text_fill,
            )
        y += body_h + gap

    # Header (drawn last, over anything scrolled under it) and input bar.
    bar = _mix(background, (255, 255, 255), 0.6)
    draw.rectangle((0, 0, w, header_h), fill=bar)
    draw.line((0, header_h, w, header_h), fill=_mix(bar, (0, 0, 0), 0.12), width=max(1, scale))
    contact = others[0] if others else me
    avatar = round(72 * unit)
    cx = w // 2
    ay = round(30 * unit)
    draw.ellipse((cx - avatar // 2, ay, cx + avatar // 2, ay + avatar), fill=(160, 164, 175))
    initial = (contact[:1] or "?").upper()
    draw.text((cx, ay + avatar // 2), initial, font=header_font, fill=(255, 255, 255), anchor="mm")
    draw.text(
        (cx, ay + avatar + round(40 * unit)), contact, font=header_font, fill=ink, anchor="mm"
    )
    draw.rectangle((0, h - footer_h, w, h), fill=bar)
    field_box = (margin, h - footer_h + round(35 * unit), w - margin, h - round(35 * unit))
    draw.rounded_rectangle(field_box, round(40 * unit), outline=(199, 199, 204), width=scale * 2)

    out.parent.mkdir(parents=True, exist_ok=True)
    image.resize((width, height), Image.Resampling.LANCZOS).save(out, format="PNG")
    return out


def _wrap(text: str, font: ImageFont.FreeTypeFont, max_width: int) -> list[str]:
    """Words of ``text`` in lines no wider than ``max_width`` (a longer word is cut)."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        while font.getlength(word) > max_width and len(word) > 1:
            # Cut an overlong word (a URL) where it stops fitting.
            cut = 1
            while cut < len(word) and font.getlength(word[: cut + 1]) <= max_width:
                cut += 1
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:cut])
            word = word[cut:]
        candidate = f"{current} {word}" if current else word
        if current and font.getlength(candidate) > max_width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines or [""]


def _hex_tuple(colour: str) -> tuple[int, int, int]:
    rgb = _rgb(colour)
    return (round(rgb[0] * 255), round(rgb[1] * 255), round(rgb[2] * 255))


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


# --- A script's stills ------------------------------------------------------------------


def render_script_visuals(
    template: Template,
    script: Script,
    *,
    size: tuple[int, int],
    seed: int,
    out_dir: Path,
) -> list[Path]:
    """One still per scene, ``scene-NN.png`` in ``out_dir``: the chat thread up to the
    scene for chat templates, else a procedural picture of the scene's prompt."""
    paths: list[Path] = []
    for index, scene in enumerate(script.scenes):
        out = out_dir / f"scene-{index:02d}.png"
        if template.visual.renderer == "chat":
            messages = chat_messages(script, upto=index)
            render_chat_image(
                messages, size=size, palette=template.visual.palette, out=out, me=messages[0][0]
            )
        else:
            render_scene_image(
                scene.visual_prompt,
                size=size,
                palette=template.visual.palette,
                seed=_seed_for(seed, index),
                out=out,
            )
        paths.append(out)
    return paths
