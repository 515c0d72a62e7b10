"""The watermark's geometry and drawing, without ffmpeg."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from vidpipe.errors import ConfigError
from vidpipe.media.watermark import Position, WatermarkSpec, mark_position, render_mark

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        ("top-left", (10, 10)),
        ("top-right", (1280 - 200 - 10, 10)),
        ("bottom-left", (10, 720 - 40 - 10)),
        ("bottom-right", (1280 - 200 - 10, 720 - 40 - 10)),
        ("center", ((1280 - 200) // 2, (720 - 40) // 2)),
    ],
)
def test_mark_position(position: Position, expected: tuple[int, int]) -> None:
    assert mark_position(position, (1280, 720), (200, 40), 10) == expected


def test_a_mark_wider_than_the_frame_stays_inside_it() -> None:
    assert mark_position("bottom-right", (100, 100), (300, 20), 10) == (0, 70)


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (720, 1280), (640, 360)])
def test_the_text_mark_fits_the_frame_at_its_size(tmp_path: Path, width: int, height: int) -> None:
    spec = WatermarkSpec(text='Made with AI \u00b7 vidpipe "quoted": 100%', opacity=0.5)
    placed = render_mark(spec, width, height, tmp_path)
    assert placed.x >= 0
    assert placed.x + placed.width <= width
    assert placed.y >= 0
    assert placed.y + placed.height <= height
    assert placed.height <= round(0.06 * min(width, height))
    with Image.open(placed.path) as mark:
        assert mark.size == (placed.width, placed.height)
        alpha = mark.getchannel("A")
        # Opacity 0.5: the most opaque pixel is half opaque, and something is drawn.
        assert alpha.getextrema() == (0, 128)


def test_an_image_and_text_share_one_mark(tmp_path: Path) -> None:
    logo = tmp_path / "logo.png"
    Image.new("RGBA", (200, 100), (255, 0, 0, 255)).save(logo)
    text_only = render_mark(WatermarkSpec(text="vidpipe"), 1280, 720, tmp_path / "a")
    both = render_mark(WatermarkSpec(text="vidpipe", image=logo), 1280, 720, tmp_path / "b")
    assert both.height == text_only.height
    # The logo is scaled to the mark's height, 2:1, before the text and a gap.
    assert both.width > text_only.width + 2 * both.height
    with Image.open(both.path) as mark:
        red = mark.convert("RGBA").getpixel((both.height // 2, both.height // 2))
    assert isinstance(red, tuple)
    assert red[0] > 200
    assert red[1] < 50


def test_a_spec_that_cannot_be_drawn_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as nothing:
        WatermarkSpec().check()
    assert nothing.value.code == "watermark_config"
    broken = tmp_path / "logo.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="unreadable") as unreadable:
        WatermarkSpec(image=broken).check()
    assert unreadable.value.code == "watermark_config"
    with pytest.raises(ConfigError, match="unreadable"):
        WatermarkSpec(image=tmp_path / "missing.png").check()
