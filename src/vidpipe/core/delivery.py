"""Delivery: a provider's output becomes ours, checked, before anyone sees it.

Download at once (provider URLs expire) with a hash on the way; validate (basic: probe
the headers; full: one decode pass with black, freeze, silence and loudness
detection); then store the video, its derivatives (thumbnail, poster, preview; sprite
sheet and HLS on request) and a provenance manifest, with the optional watermark drawn
first and the optional C2PA manifest signed in last (core/provenance.py). The step
records the result in one transaction afterwards; a crash before that leaves files
that the next attempt overwrites under the same keys.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
import logging
import shutil
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidpipe import __version__
from vidpipe.blobs.base import BlobStore, job_key
from vidpipe.config import Settings
from vidpipe.core.provenance import Provenance, hash_file
from vidpipe.errors import MediaError, PermanentProviderError
from vidpipe.media import derivatives as deriv
from vidpipe.media.analysis import Analysis, analyze
from vidpipe.media.ffmpeg import find_ffmpeg
from vidpipe.media.policy import ValidationPolicy
from vidpipe.media.probe import probe
from vidpipe.media.validate import Expectation, validate_basic, validate_full
from vidpipe.net import UrlGuard, fetch_to_file
from vidpipe.providers.base import OutputRef, Provider, VideoRequest

log = logging.getLogger("vidpipe.delivery")

VIDEO = "video.mp4"
MANIFEST = "manifest.json"
OPTIONAL_DERIVATIVES = ("spritesheet", "hls")


class QualityRejected(Exception):
    """The output is ours but not good enough: a quality failure of the attempt."""

    def __init__(self, code: str, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.report = report


@dataclass(frozen=True)
class StoredFile:
    name: str
    key: str
    sha256: str
    bytes: int
    content_type: str
    media: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None


@dataclass(frozen=True)
class Checked:
    """What validation found: the probe, the verdict, and the analysis if full."""

    media: dict[str, Any] | None
    report: dict[str, Any] | None
    duration_s: float
    analysis: Analysis | None = None


@dataclass(frozen=True)
class Delivered:
    video: StoredFile
    extras: tuple[StoredFile, ...] = field(default_factory=tuple)
    duration_s: float = 0.0


class Delivery:
    def __init__(self, blobs: BlobStore, settings: Settings, guard: UrlGuard) -> None:
        self.blobs = blobs
        self.settings = settings
        self.guard = guard
        # Checked here, when a worker starts: a wrong C2PA key or an unreadable
        # watermark image stops start-up with its reason, not every video later.
        self.provenance = Provenance(settings)

    def _ffmpeg(self) -> Path:
        return find_ffmpeg(self.settings.ffmpeg)

    async def download(self, provider: Provider, output: OutputRef, dest: Path) -> tuple[str, int]:
        """Into ``dest``: (sha256, bytes). Provider errors keep their classes."""
        if type(provider).fetch_output is Provider.fetch_output and provider.http is not None:
            # A plain URL: the safe fetch (size cap, timeouts, retries, every redirect
            # hop and connected address checked against the URL guard).
            fetched = await fetch_to_file(
                provider.http,
                output.url,
                dest,
                max_bytes=self.settings.max_output_bytes,
                timeout_s=self.settings.fetch_timeout_s,
                guard=self.guard,
            )
            return fetched.sha256, fetched.bytes
        digest = hashlib.sha256()
        written = 0
        limit = self.settings.max_output_bytes
        with dest.open("wb") as handle:

            async def sink(chunk: bytes) -> None:
                nonlocal written
                written += len(chunk)
                if written > limit:
                    raise PermanentProviderError(
                        f"output is larger than {limit} bytes", code="too_large"
                    )
                digest.update(chunk)
                handle.write(chunk)

            await provider.fetch_output(output, sink)
        return digest.hexdigest(), written

    def policy(
        self, provider: Provider, overrides: Mapping[str, object] | None
    ) -> ValidationPolicy:
        """Installation policy, then the provider's own facts, then the request's."""
        policy = ValidationPolicy.from_overrides(self.settings.validation_policy)
        if provider.validation_overrides:
            policy = ValidationPolicy.from_overrides(provider.validation_overrides, base=policy)
        if overrides:
            policy = ValidationPolicy.from_overrides(overrides, base=policy)
        return policy

    async def inspect(
        self,
        path: Path,
        request: VideoRequest,
        policy: ValidationPolicy,
        *,
        full: bool,
        expected_seconds: float | None = None,
    ) -> Checked:
        """Judge the downloaded file; raises QualityRejected with the report.
        ``expected_seconds`` replaces the request's whole seconds (a composition's
        length is known to the frame)."""
        expected = Expectation(
            width=request.width,
            height=request.height,
            seconds=expected_seconds if expected_seconds is not None else float(request.seconds),
            duration_tolerance=self.settings.duration_tolerance,
        )
        if not full:
            try:
                info = await asyncio.to_thread(probe, path)
            except MediaError as exc:
                raise QualityRejected("unplayable", exc.message) from exc
            verdict = validate_basic(info, expected)
            report = verdict.to_dict()
            if not verdict.ok:
                raise QualityRejected("validation_failed", verdict.reason, report)
            await self._content_safety(path, request)
            return Checked(info.to_dict(), report, info.duration_s)
        analysis = await asyncio.to_thread(
            analyze,
            path,
            want_audio=False,
            ffmpeg=self._ffmpeg(),
            timeout_s=self.settings.analysis_timeout_s,
        )
        verdict = validate_full(analysis, expected, policy)
        report = {**verdict.to_dict(), "analysis": analysis.to_dict(), "policy": policy.to_dict()}
        if analysis.info is None:
            raise QualityRejected(
                "unplayable", analysis.open_error or "the file does not open as media", report
            )
        if not verdict.ok:
            raise QualityRejected("validation_failed", verdict.reason, report)
        await self._content_safety(path, request)
        return Checked(analysis.info.to_dict(), report, analysis.duration_s, analysis)

    async def _content_safety(self, path: Path, request: VideoRequest) -> None:
        """The operator's content-safety hook, if configured: ``module:function`` called
        with the file and the request; it returns None to accept, or a reason to refuse
        (a quality failure: the video is made again, up to the policy's limit)."""
        spec = self.settings.content_safety_hook
        if not spec:
            return
        module_name, _, attr = spec.partition(":")
        hook = getattr(importlib.import_module(module_name), attr)
        verdict = hook(path, request)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if verdict:
            raise QualityRejected(
                "content_safety", f"refused by the content-safety check: {verdict}"
            )

    async def store(
        self,
        *,
        tenant_id: str,
        job_id: str,
        video: Path,
        sha256: str,
        size: int,
        checked: Checked,
        wanted: Sequence[str],
        manifest: dict[str, Any],
        work_dir: Path,
    ) -> Delivered:
        """The watermark first (derivatives show it), derivatives, the C2PA signature
        (the last change to the file), the manifest, then the video. Raises
        ProvenanceError when a configured watermark or signature cannot be made.

        ``work_dir`` is made here only when something needs files of its own (a
        watermark, derivatives, a signature): a plain delivery writes no directory."""
        source = {"sha256": sha256, "bytes": size}
        if (
            self.settings.derivatives
            or self.provenance.watermark_spec is not None
            or self.provenance.credentials is not None
        ):
            await asyncio.to_thread(work_dir.mkdir, parents=True, exist_ok=True)
        video, watermark = await self.provenance.watermark(video, work_dir)
        extras: list[StoredFile] = []
        derivative_error = None
        if self.settings.derivatives:
            try:
                extras += await self._derivatives(
                    tenant_id, job_id, video, checked, wanted, work_dir
                )
            except MediaError as exc:
                # A convenience failed, not the video: deliver it without, and say so.
                log.warning("%s: derivatives failed: %s", job_id, exc)
                derivative_error = exc.message
        video, c2pa = await self.provenance.sign(video, manifest, sha256, work_dir)
        if watermark or c2pa:
            # What is stored and announced is the changed file: its own hash and probe.
            sha256, size = await asyncio.to_thread(hash_file, video)
            if checked.media is not None:
                final = await asyncio.to_thread(probe, video)
                checked = dataclasses.replace(checked, media=final.to_dict())
        stored_video = StoredFile(
            VIDEO,
            job_key(tenant_id, job_id, VIDEO),
            sha256,
            size,
            "video/mp4",
            checked.media,
            checked.report,
        )
        document = {
            **manifest,
            "vidpipe_version": __version__,
            "output": {"name": VIDEO, "sha256": sha256, "bytes": size, "media": checked.media},
            "derivatives": [{"name": e.name, "sha256": e.sha256} for e in extras],
            "derivatives_error": derivative_error,
            "provider_output": source,  # before our watermark and signature
            "watermark": watermark,
            "c2pa": c2pa,
        }
        text = json.dumps(document, indent=2, sort_keys=True, default=str).encode()
        stored_manifest = StoredFile(
            MANIFEST,
            job_key(tenant_id, job_id, MANIFEST),
            hashlib.sha256(text).hexdigest(),
            len(text),
            "application/json",
        )
        await self.blobs.put_bytes(stored_manifest.key, text, stored_manifest.content_type)
        extras.append(stored_manifest)
        await self.blobs.put_file(stored_video.key, video, "video/mp4")
        return Delivered(stored_video, tuple(extras), checked.duration_s)

    async def _derivatives(
        self,
        tenant_id: str,
        job_id: str,
        video: Path,
        checked: Checked,
        wanted: Sequence[str],
        work_dir: Path,
    ) -> list[StoredFile]:
        ffmpeg = self._ffmpeg()
        black = checked.analysis.black if checked.analysis else ()
        duration = checked.duration_s
        if checked.media is None:  # not validated: the request's duration may be wrong
            duration = (await asyncio.to_thread(probe, video)).duration_s
        out = work_dir / "derivatives"
        out.mkdir(parents=True, exist_ok=True)
        moment = deriv.frame_time_s(duration, black)
        # Each is its own ffmpeg run over the file, independent of the others and
        # mostly single-threaded: run together they keep both cores busy (the job waits
        # for the slowest, not for the sum).
        makers: list[tuple[str, Any]] = [
            ("thumbnail", functools.partial(deriv.make_thumbnail, at_s=moment)),
            ("poster", functools.partial(deriv.make_poster, at_s=moment)),
            ("preview", functools.partial(deriv.make_preview, at_s=moment)),
        ]
        if "spritesheet" in wanted:
            makers.append(("spritesheet", deriv.make_sprite_sheet))
        if "hls" in wanted:
            makers.append(("hls", deriv.make_hls))
        results = await _all_or_first_error(
            [asyncio.to_thread(make, video, out, ffmpeg=ffmpeg) for _, make in makers]
        )
        made = {name: result for (name, _), result in zip(makers, results, strict=True)}
        stored = [
            await self._put(tenant_id, job_id, name, made[kind].path, "image/jpeg")
            for kind, name in (("thumbnail", "thumbnail.jpg"), ("poster", "poster.jpg"))
        ]
        preview = made["preview"]
        stored.append(
            await self._put(
                tenant_id, job_id, f"preview.{preview.format}", preview.path,
                f"image/{preview.format}",
            )
        )  # fmt: skip
        if "spritesheet" in made:
            sprite = made["spritesheet"]
            stored.append(
                await self._put(tenant_id, job_id, "sprite.jpg", sprite.image_path, "image/jpeg")
            )
            stored.append(
                await self._put(tenant_id, job_id, "sprite.vtt", sprite.vtt_path, "text/vtt")
            )
        if "hls" in made:
            hls_dir = made["hls"].master_path.parent
            for path in sorted(p for p in hls_dir.rglob("*") if p.is_file()):
                rel = path.relative_to(hls_dir).as_posix().replace("/", "__")
                kind = "application/vnd.apple.mpegurl" if path.suffix == ".m3u8" else "video/mp2t"
                stored.append(await self._put(tenant_id, job_id, f"hls__{rel}", path, kind))
        shutil.rmtree(out, ignore_errors=True)
        return stored

    async def _put(
        self, tenant_id: str, job_id: str, name: str, path: Path, content_type: str
    ) -> StoredFile:
        data = await asyncio.to_thread(path.read_bytes)
        key = job_key(tenant_id, job_id, name)
        size = len(data)
        sha = hashlib.sha256(data).hexdigest()
        await self.blobs.put_file(key, path, content_type)
        return StoredFile(name, key, sha, size, content_type)


async def _all_or_first_error(runs: Sequence[Awaitable[Any]]) -> list[Any]:
    """Every result in order; when some fail, the first failure, raised only once all
    have ended (no ffmpeg left writing into a directory the caller removes)."""
    results = await asyncio.gather(*runs, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results
