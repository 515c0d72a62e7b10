"""``vidpipe doctor``: is each part of this installation usable? One verdict per part."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from vidpipe.config import Settings
from vidpipe.errors import ConfigError
from vidpipe.media.ffmpeg import find_ffmpeg
from vidpipe.store.db import Database


@dataclass(frozen=True)
class Verdict:
    part: str
    ok: bool
    detail: str


def check_ffmpeg(settings: Settings) -> Verdict:
    try:
        path = find_ffmpeg(settings.ffmpeg)
        first = subprocess.run(
            [str(path), "-hide_banner", "-version"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.splitlines()[0]
        return Verdict("ffmpeg", True, f"{path} ({first})")
    except Exception as exc:
        return Verdict("ffmpeg", False, str(exc))


async def check_database(settings: Settings) -> Verdict:
    db = Database(settings.resolved_database_url)
    try:
        async with db.read() as conn:
            version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        return Verdict(
            "database",
            True,
            f"{db.engine.url.render_as_string(hide_password=True)} at migration {version}",
        )
    except Exception as exc:
        return Verdict(
            "database",
            False,
            f"{db.engine.url.render_as_string(hide_password=True)}: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]} (run `vidpipe migrate`?)",
        )
    finally:
        await db.dispose()


def check_storage(settings: Settings) -> Verdict:
    root = settings.resolved_storage_dir
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".doctor-") as handle:
            handle.write(b"vidpipe")
            handle.flush()
            if Path(handle.name).read_bytes() != b"vidpipe":
                raise OSError("read back different bytes")
        return Verdict("storage", True, f"local directory {root} is writable")
    except OSError as exc:
        return Verdict("storage", False, f"{root}: {exc}")


def check_provenance(settings: Settings) -> Verdict | None:
    """The C2PA credentials and watermark, when configured (None when neither is)."""
    from vidpipe.core.provenance import Provenance

    try:
        provenance = Provenance(settings)
    except ConfigError as exc:
        return Verdict("provenance", False, f"{exc.code}: {exc.message}")
    parts = []
    if provenance.credentials is not None:
        parts.append(f"C2PA signing with {settings.c2pa_cert_path} ({settings.c2pa_alg})")
    if provenance.watermark_spec is not None:
        parts.append(f"watermark at {settings.watermark_position}")
    return Verdict("provenance", True, "; ".join(parts)) if parts else None


def check_shorts(settings: Settings) -> Verdict:
    """What the short composer needs here: a speech engine, a font, and which scripter."""
    from vidpipe.errors import MediaError
    from vidpipe.media import speech
    from vidpipe.shorts.visuals import find_font

    engines = speech.available_engines()
    try:
        font = str(find_font())
    except MediaError as exc:
        return Verdict("shorts", False, exc.message)
    if not engines:
        return Verdict(
            "shorts",
            False,
            "no offline speech engine: install the tts extra (piper) or espeak-ng",
        )
    scripter = (
        f"LLM at {settings.llm_base_url} ({settings.llm_model})"
        if settings.llm_base_url
        else "offline scripter"
    )
    return Verdict(
        "shorts", True, f"speech: {', '.join(engines)}; font: {font}; scripts: {scripter}"
    )


def run_checks(settings: Settings) -> list[Verdict]:
    verdicts = [
        check_ffmpeg(settings),
        asyncio.run(check_database(settings)),
        check_storage(settings),
        check_shorts(settings),
    ]
    provenance = check_provenance(settings)
    return verdicts if provenance is None else [*verdicts, provenance]
