"""Removing the work directories of plan steps once nobody can need them.

A compose step keeps its scene checkpoints under ``<home>/work/<job>/<step>`` while the
job may still run (a replacement worker reuses them) and while it is failed (a retry
reuses them). Once the job is completed, canceled, expired or deleted, they are
garbage; so is a directory whose job does not exist.

``<home>/tmp`` holds what a delivery or a step is making right now (a download, its
work directory); each removes its own when it ends, so anything there for hours was
left by a process that was killed: removed by age alone.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from sqlalchemy import select

from vidpipe.core.states import JobStatus
from vidpipe.store.db import Database
from vidpipe.store.schema import jobs

# A directory this recent may belong to a job being created right now: leave it.
MIN_AGE_S = 3600.0
# Far longer than any delivery or step runs (a step's deadline is shorter): an entry
# of <home>/tmp untouched this long belongs to a process that died.
STALE_TMP_S = 6 * 3600.0
_DONE = (JobStatus.COMPLETED.value, JobStatus.CANCELED.value, JobStatus.EXPIRED.value)


async def sweep_work_dirs(db: Database, home: Path, *, min_age_s: float = MIN_AGE_S) -> int:
    """Remove the work directories of finished jobs; returns how many were removed."""
    root = home / "work"
    candidates = await asyncio.to_thread(_old_dirs, root, time.time() - min_age_s)
    if not candidates:
        return 0
    async with db.read() as conn:
        rows = await conn.execute(
            select(jobs.c.id, jobs.c.status, jobs.c.deleted_at).where(
                jobs.c.id.in_([path.name for path in candidates])
            )
        )
        known = {row.id: (row.status, row.deleted_at) for row in rows}
    removed = 0
    for path in candidates:
        status, deleted_at = known.get(path.name, (None, None))
        if status is None or status in _DONE or deleted_at is not None:
            await asyncio.to_thread(shutil.rmtree, path, True)
            removed += 1
    return removed


def _old_dirs(root: Path, before: float) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and p.stat().st_mtime < before]


def sweep_stale_tmp(home: Path, *, max_age_s: float = STALE_TMP_S) -> int:
    """Remove the entries of ``<home>/tmp`` not modified for ``max_age_s``: the
    downloads and work directories of killed processes. Returns how many."""
    root = home / "tmp"
    if not root.is_dir():
        return 0
    cutoff = time.time() - max_age_s
    removed = 0
    for entry in root.iterdir():
        try:
            if entry.lstat().st_mtime >= cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # its process finished it meanwhile
            continue
        removed += 1
    return removed
