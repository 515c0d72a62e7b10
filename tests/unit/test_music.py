"""The offline music bed: real ffmpeg, real samples."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from vidpipe.media.ffmpeg import find_ffmpeg
from vidpipe.plans.music import cycle_s, generate_music


def _samples(path: Path) -> np.ndarray:
    with wave.open(str(path)) as handle:
        assert handle.getframerate() == 48_000
        assert handle.getnchannels() == 2
        data = handle.readframes(handle.getnframes())
    return np.frombuffer(data, dtype="<i2").reshape(-1, 2).astype(np.float64) / 32768


@pytest.mark.parametrize("mood", ["calm", "upbeat", "dramatic"])
def test_a_long_bed_is_one_seamless_pass(tmp_path: Path, mood: str) -> None:
    out = generate_music(tmp_path / "bed.wav", seconds=90, mood=mood, seed=1, ffmpeg=find_ffmpeg())
    samples = _samples(out)
    assert len(samples) / 48_000 == pytest.approx(cycle_s(mood), abs=0.01)
    rms = float(np.sqrt(np.mean(samples**2)))
    assert rms > 0.01  # audible
    assert float(np.max(np.abs(samples))) < 1.0  # not clipped
    # It starts and ends in near silence, so the compose step's loop has no seam.
    edge = 480  # 10 ms
    assert float(np.max(np.abs(samples[:edge]))) < 0.05
    assert float(np.max(np.abs(samples[-edge:]))) < 0.05


def test_a_short_bed_is_cut_with_fades_and_seeds_differ(tmp_path: Path) -> None:
    ffmpeg = find_ffmpeg()
    a = generate_music(tmp_path / "a.wav", seconds=3, mood="calm", seed=1, ffmpeg=ffmpeg)
    b = generate_music(tmp_path / "b.wav", seconds=3, mood="calm", seed=1, ffmpeg=ffmpeg)
    c = generate_music(tmp_path / "c.wav", seconds=3, mood="calm", seed=2, ffmpeg=ffmpeg)
    assert len(_samples(a)) / 48_000 == pytest.approx(3, abs=0.01)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert float(np.max(np.abs(_samples(a)[-480:]))) < 0.05
