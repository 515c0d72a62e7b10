"""What the worker's housekeeping removes from ``<home>/tmp``: only what is stale."""

from __future__ import annotations

import os
from pathlib import Path

from vidpipe.plans.workdirs import STALE_TMP_S, sweep_stale_tmp


def test_only_entries_untouched_for_hours_are_removed(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    (tmp / "att_old-d1" / "derivatives").mkdir(parents=True)
    (tmp / "att_old-d1" / "derivatives" / "thumb.jpg").write_bytes(b"x")
    (tmp / "att_old-d2.part").write_bytes(b"half a download")
    (tmp / "att_new-d3.part").write_bytes(b"a download in progress")
    (tmp / "att_new-d4").mkdir()
    old = os.stat(tmp).st_mtime - STALE_TMP_S - 60
    for name in ("att_old-d1", "att_old-d2.part"):
        os.utime(tmp / name, (old, old))

    assert sweep_stale_tmp(tmp_path) == 2
    assert sorted(p.name for p in tmp.iterdir()) == ["att_new-d3.part", "att_new-d4"]
    assert sweep_stale_tmp(tmp_path) == 0
    # No tmp directory yet (no delivery so far): nothing to do.
    assert sweep_stale_tmp(tmp_path / "elsewhere") == 0
