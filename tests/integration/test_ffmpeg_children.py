"""An ffmpeg started by a process that is SIGKILLed dies with it.

A killed worker cannot stop its children; its replacement redoes the work, so an
orphaned encoder would only burn the CPU the replacement needs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from vidpipe.media.ffmpeg import dies_with_caller, find_ffmpeg

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux")


def _pids_with(marker: str) -> list[int]:
    """Processes whose command line holds ``marker`` (not this test's own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def _wait_for(predicate: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_the_wrapper_is_there_on_this_machine() -> None:
    # Debian's util-linux has setpriv --pdeathsig; without it the next test proves nothing.
    argv = dies_with_caller(["ffmpeg", "-version"])
    assert argv[-2:] == ["ffmpeg", "-version"]
    assert argv[1:4] == ["--pdeathsig", "KILL", "--"]


@pytest.mark.parametrize("from_thread", [False, True], ids=["main-thread", "worker-thread"])
def test_ffmpeg_dies_when_the_process_running_it_is_killed(
    tmp_path: Path, from_thread: bool
) -> None:
    marker = f"vidpipe-orphan-{uuid.uuid4().hex}"
    ffmpeg = find_ffmpeg()
    # A slow, light encode (real time, tiny frames) that would run for ten minutes.
    script = textwrap.dedent(
        f"""
        import os
        import threading
        from pathlib import Path
        from vidpipe.media.ffmpeg import run_ffmpeg
        args = ["-re", "-f", "lavfi", "-i", "testsrc=s=64x64:r=5:d=600",
                "-metadata", "comment=" + os.environ["ORPHAN_MARKER"], "-f", "null", "-"]
        run = lambda: run_ffmpeg(args, ffmpeg=Path({str(ffmpeg)!r}), timeout_s=900)
        if {from_thread}:
            t = threading.Thread(target=run)
            t.start()
            t.join()
        else:
            run()
        """
    )
    # The marker travels in the environment: only ffmpeg's command line holds it.
    env = {**os.environ, "ORPHAN_MARKER": marker}
    runner = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env)
    try:
        assert _wait_for(lambda: _pids_with(marker), 20), "ffmpeg never started"
        (ffmpeg_pid,) = _pids_with(marker)
        assert "ffmpeg" in Path(f"/proc/{ffmpeg_pid}/cmdline").read_bytes().decode()
        assert _wait_for(lambda: _state(ffmpeg_pid) in "RS", 5)
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        assert _wait_for(lambda: _state(ffmpeg_pid) in ("gone", "Z"), 10), (
            f"ffmpeg {ffmpeg_pid} outlived the process that ran it"
        )
    finally:
        runner.kill()
        for pid in _pids_with(marker):
            os.kill(pid, signal.SIGKILL)


def _state(pid: int) -> str:
    """The process's state letter from /proc (R, S, Z...), or "gone"."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return stat.rsplit(")", 1)[1].split()[0]
