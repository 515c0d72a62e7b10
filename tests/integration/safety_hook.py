"""A content-safety hook for the tests: refuses videos whose prompt says so."""

from __future__ import annotations

from pathlib import Path

from vidpipe.providers.base import VideoRequest

SEEN: list[str] = []


def check(path: Path, request: VideoRequest) -> str | None:
    SEEN.append(path.name)
    assert path.stat().st_size > 0  # the hook sees the real downloaded file
    return "unsafe imagery" if "unsafe" in request.prompt else None
