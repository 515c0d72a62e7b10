"""The top-level box layout of an ISO base media file (MP4, MOV), read directly.

Only box headers are read (8 or 16 bytes each, then a seek past the body), so this
costs a few reads whatever the file size. It answers one delivery question libav does
not expose: is the index (``moov``) before the media data (``mdat``), so a browser can
start playing before the whole file has arrived ("faststart")?
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Box", "is_faststart", "top_level_boxes"]

# A top-level box count this large means we are not reading an MP4 at all.
_MAX_BOXES = 10_000


@dataclass(frozen=True)
class Box:
    """One top-level box: its four-character type, where it starts and how long it is."""

    type: str
    offset: int
    size: int


def top_level_boxes(path: Path) -> tuple[Box, ...]:
    """The top-level boxes of ``path`` in file order.

    Reading stops at the first header that does not make sense (a size smaller than
    its header, a non-ASCII type) or at a box that runs past the end of the file; that
    box is still listed when its header was readable, so a truncated ``mdat`` shows.
    Raises ``OSError`` when the file cannot be read.
    """
    boxes: list[Box] = []
    with path.open("rb") as f:
        file_size = f.seek(0, 2)
        offset = 0
        while offset + 8 <= file_size and len(boxes) < _MAX_BOXES:
            f.seek(offset)
            size, raw_type = struct.unpack(">I4s", f.read(8))
            header = 8
            if size == 1:
                large = f.read(8)
                if len(large) < 8:
                    break
                (size,) = struct.unpack(">Q", large)
                header = 16
            elif size == 0:
                # "Extends to the end of the file" (a last mdat written by a streamer).
                size = file_size - offset
            if size < header or not _is_box_type(raw_type):
                break
            boxes.append(Box(raw_type.decode("ascii"), offset, size))
            offset += size
    return tuple(boxes)


def is_faststart(path: Path) -> bool | None:
    """True when ``moov`` comes before the first ``mdat``; None when ``path`` is not ISO BMFF.

    False when the media data comes first, or when there is media data but no index
    at all (an unfinished recording). Raises ``OSError`` when the file cannot be read.
    """
    types = [box.type for box in top_level_boxes(path)]
    if "moov" not in types and "mdat" not in types:
        return None
    if "moov" not in types:
        return False
    if "mdat" not in types:
        # An index without media data in this file (fragments or references): nothing
        # to wait for before the index.
        return True
    return types.index("moov") < types.index("mdat")


def _is_box_type(raw: bytes) -> bool:
    # Box types are four printable ASCII characters (QuickTime allows '©' in *child*
    # boxes only, never at the top level).
    return all(0x20 <= byte < 0x7F for byte in raw)
