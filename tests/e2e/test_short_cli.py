"""``vidpipe short`` as a user runs it: offline, topic in, a finished short out."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.conftest import run_vidpipe, vidpipe_env
from vidpipe.media.probe import probe

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]


def test_short_from_a_topic_offline(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = tmp_path / "octopus.mp4"
    result = run_vidpipe(
        "short",
        "octopuses",
        "--template",
        "product_promo",
        "--aspect",
        "1:1",
        "--seconds",
        "20",
        "-o",
        str(out),
        env=vidpipe_env(home),
        timeout=380,
    )
    assert str(out) in result.stdout
    info = probe(out)
    assert info.video is not None
    assert info.audio is not None
    assert (info.video.width, info.video.height) == (1080, 1080)
    assert info.video.fps == pytest.approx(30, abs=0.01)
    assert 12 <= info.duration_s <= 40
    # The interactive command prints a progress bar, not the worker's logs.
    assert '"level": "info"' not in result.stderr

    db = sqlite3.connect(home / "vidpipe.db")
    rows = db.execute("SELECT name, kind, state, output FROM steps ORDER BY name").fetchall()
    states = {name: state for name, _, state, _ in rows}
    assert set(states.values()) == {"succeeded"}
    scenes = sum(name.startswith("speech_") for name in states)
    assert scenes >= 2
    assert sum(name.startswith("visual_") for name in states) == scenes
    compose = json.loads(next(o for name, _, _, o in rows if name == "compose"))
    assert compose["duration_s"] == pytest.approx(info.duration_s, abs=0.1)
    captions = json.loads(next(o for name, _, _, o in rows if name == "captions"))
    assert captions["words"] > 10
    names = {row[0] for row in db.execute("SELECT name FROM assets WHERE deleted_at IS NULL")}
    assert {"video.mp4", "captions.srt", "captions.vtt", "thumbnail.jpg", "manifest.json"} <= names


def test_short_refuses_an_unknown_template(tmp_path: Path) -> None:
    result = run_vidpipe(
        "short", "owls", "--template", "nope", "-o", str(tmp_path / "o.mp4"),
        env=vidpipe_env(tmp_path / "home"), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "unknown template" in result.stderr
    assert not (tmp_path / "o.mp4").exists()
