"""Identifiers: time-ordered, so that "newest first" is "largest id first".

48 bits of milliseconds since the epoch then 80 random bits, in Crockford base32
(26 characters), behind a prefix naming the kind (``video_…``, ``step_…``). Within one
process ids are strictly increasing even inside one millisecond, which keeps cursor
pagination stable.
"""

from __future__ import annotations

import secrets
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_lock = threading.Lock()
_last = 0


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    global _last
    with _lock:
        candidate = (int(time.time() * 1000) << 80) | secrets.randbits(80)
        if candidate <= _last:
            candidate = _last + 1
        _last = candidate
    return f"{prefix}_{_encode(candidate, 26)}"


def new_secret(nbytes: int = 24) -> str:
    return secrets.token_urlsafe(nbytes)
