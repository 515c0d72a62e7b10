"""The one place vidpipe finds and runs ffmpeg.

ffmpeg is found once (a setting, else ``PATH``, else the binary bundled with
``imageio-ffmpeg``) and run thinly: the exact command is logged, the exit code is
checked, and a failure becomes a ``MediaError`` carrying the tail of stderr.
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from vidpipe.errors import MediaError

__all__ = [
    "GLOBAL_ARGS",
    "dies_with_caller",
    "ffmpeg_argv",
    "ffmpeg_encoders",
    "find_ffmpeg",
    "read_progress_out_time_s",
    "run_ffmpeg",
]

log = logging.getLogger("vidpipe.media")

# Every run: no banner, never read stdin (a detached runner has none), overwrite
# outputs, and no stats line on stderr so its tail is the error, not progress noise
# (progress is read from a `-progress` file instead).
GLOBAL_ARGS: tuple[str, ...] = ("-hide_banner", "-nostdin", "-y", "-nostats")

_STDERR_TAIL_LINES = 12


def find_ffmpeg(override: str | None = None) -> Path:
    """Return the ffmpeg executable: ``override`` if given, else ``PATH``, else imageio-ffmpeg.

    The answer is cached per ``override``. Raises ``MediaError(code="ffmpeg_missing")``.
    """
    return _find_ffmpeg_cached(override)


@functools.cache
def _find_ffmpeg_cached(override: str | None) -> Path:
    if override:
        path = Path(override).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        # A configured path that does not work is a mistake to report, not to paper
        # over with another ffmpeg of a possibly different build.
        raise MediaError(f"ffmpeg not executable at {path}", code="ffmpeg_missing")
    found = shutil.which("ffmpeg")
    if found:
        return Path(found)
    try:
        import imageio_ffmpeg

        return Path(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as exc:
        raise MediaError(
            "ffmpeg not found: install it, or the imageio-ffmpeg package, or set VIDPIPE_FFMPEG",
            code="ffmpeg_missing",
        ) from exc


def ffmpeg_argv(ffmpeg: Path, args: Sequence[str]) -> list[str]:
    """The full command line ``run_ffmpeg`` executes for ``args``."""
    return [str(ffmpeg), *GLOBAL_ARGS, *args]


@functools.cache
def _death_wrapper() -> tuple[str, ...]:
    """``setpriv --pdeathsig KILL --`` on Linux when util-linux has it, else nothing.

    A worker that is SIGKILLed mid-render cannot stop its children; without this an
    ffmpeg it started would go on encoding for minutes, competing for the CPU with the
    very worker that replaces it and redoes the piece. The parent-death signal is tied
    to the thread that started the child, which here is always the thread waiting for
    it (``subprocess.run``), so it only fires when that wait can no longer end. setpriv
    sets it and execs the program in the same process, so no Python runs between fork
    and exec (``preexec_fn`` is unsafe in a threaded process).
    """
    if sys.platform != "linux":
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    try:
        usage = subprocess.run(
            [setpriv, "--help"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return (setpriv, "--pdeathsig", "KILL", "--") if "--pdeathsig" in usage else ()


def dies_with_caller(argv: Sequence[str]) -> list[str]:
    """``argv`` made to be killed when the process (thread) that runs and waits for it dies."""
    return [*_death_wrapper(), *argv]


def run_ffmpeg(
    args: Sequence[str], *, ffmpeg: Path, timeout_s: float, cwd: Path | None = None
) -> None:
    """Run ffmpeg with ``args`` (everything after the global flags) and wait for it.

    Raises ``MediaError`` (code ``ffmpeg_failed`` or ``ffmpeg_timeout``) with the last
    lines of stderr when ffmpeg exits non-zero or runs longer than ``timeout_s``.
    """
    argv = ffmpeg_argv(ffmpeg, args)
    log.info("running ffmpeg: %s", shlex.join(argv))
    try:
        completed = subprocess.run(
            dies_with_caller(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        # subprocess.run has already killed and reaped the child.
        raise MediaError(
            f"ffmpeg timed out after {timeout_s:g} s:\n{_tail(exc.stderr)}", code="ffmpeg_timeout"
        ) from exc
    except OSError as exc:
        raise MediaError(f"ffmpeg could not start: {exc}", code="ffmpeg_missing") from exc
    if completed.returncode != 0:
        raise MediaError(
            f"ffmpeg exited with code {completed.returncode}:\n{_tail(completed.stderr)}",
            code="ffmpeg_failed",
        )


@functools.cache
def ffmpeg_encoders(ffmpeg: Path) -> frozenset[str]:
    """The names of the encoders this ffmpeg build has (``ffmpeg -encoders``), cached.

    Raises ``MediaError(code="ffmpeg_failed")`` when the listing fails.
    """
    argv = [str(ffmpeg), "-hide_banner", "-nostdin", "-encoders"]
    log.info("running ffmpeg: %s", shlex.join(argv))
    try:
        completed = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MediaError(f"ffmpeg -encoders failed: {exc}", code="ffmpeg_failed") from exc
    if completed.returncode != 0:
        raise MediaError(
            f"ffmpeg -encoders exited with code {completed.returncode}:\n{_tail(completed.stderr)}",
            code="ffmpeg_failed",
        )
    names: set[str] = set()
    listing = completed.stdout.decode("utf-8", errors="replace").splitlines()
    # A legend of capability flags, a "------" rule, then one "FLAGS name  description"
    # line per encoder.
    rule = next((i for i, line in enumerate(listing) if line.strip().startswith("---")), -1)
    for line in listing[rule + 1 :]:
        fields = line.split()
        if len(fields) >= 2:
            names.add(fields[1])
    return frozenset(names)


def read_progress_out_time_s(progress_path: Path) -> float | None:
    """The latest ``out_time_us`` an ffmpeg ``-progress`` file reports, in seconds.

    None when the file does not exist yet or has no usable value (ffmpeg writes
    ``N/A`` before the first frame).
    """
    try:
        text = progress_path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    latest: float | None = None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "out_time_us":
            try:
                latest = max(0.0, int(value) / 1_000_000)
            except ValueError:
                continue
    return latest


def _tail(stderr: bytes | str | None) -> str:
    if not stderr:
        return "(no stderr)"
    text = stderr.decode("utf-8", errors="replace") if isinstance(stderr, bytes) else stderr
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-_STDERR_TAIL_LINES:])
