"""Provenance of delivered videos: the optional visible watermark and C2PA signature.

Delivery calls the two in a fixed order: the watermark right after validation (so the
thumbnails and previews show it), the C2PA signature after everything else that reads
or changes the file (the signature binds the final bytes). Both are configured by
settings and checked when a worker starts; a failure later is a ``ProvenanceError``
with its own code: the installation's to fix, not the provider's.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vidpipe import __version__
from vidpipe.config import Settings
from vidpipe.errors import ConfigError, MediaError, ProvenanceError
from vidpipe.media.c2pa_sign import VIDPIPE_ASSERTION, C2paCredentials, sign_video
from vidpipe.media.ffmpeg import find_ffmpeg
from vidpipe.media.probe import probe
from vidpipe.media.watermark import WatermarkSpec, apply_watermark

__all__ = ["Provenance", "c2pa_credentials", "hash_file", "watermark_spec"]

VIDEO_TITLE = "video.mp4"


def watermark_spec(settings: Settings) -> WatermarkSpec | None:
    """The configured visible watermark, checked (ConfigError); None when off."""
    if not settings.watermark_text and settings.watermark_image is None:
        return None
    spec = WatermarkSpec(
        text=settings.watermark_text,
        image=settings.watermark_image,
        position=settings.watermark_position,
        opacity=settings.watermark_opacity,
        size=settings.watermark_size,
    )
    spec.check()
    return spec


def c2pa_credentials(settings: Settings) -> C2paCredentials | None:
    """The configured C2PA signing credentials, checked (ConfigError); None when off."""
    if settings.c2pa_cert_path is None or settings.c2pa_key_path is None:
        return None
    return C2paCredentials.load(
        settings.c2pa_cert_path,
        settings.c2pa_key_path,
        alg=settings.c2pa_alg,
        tsa_url=settings.c2pa_tsa_url,
    )


class Provenance:
    """What delivery adds to a valid output: a watermark, a C2PA manifest, or neither."""

    def __init__(self, settings: Settings) -> None:
        """Raises ``ConfigError`` (``watermark_config``, ``c2pa_config``) with the reason."""
        self.settings = settings
        self.watermark_spec = watermark_spec(settings)
        self.credentials = c2pa_credentials(settings)

    async def watermark(self, video: Path, work_dir: Path) -> tuple[Path, dict[str, Any] | None]:
        """The watermarked file and what to record, or ``video`` unchanged and None."""
        spec = self.watermark_spec
        if spec is None:
            return video, None
        out = work_dir / "watermarked.mp4"
        try:
            info = await asyncio.to_thread(probe, video)
            if info.video is None:
                raise MediaError("the output has no video stream", code="unplayable")
            await asyncio.to_thread(
                apply_watermark,
                video,
                out,
                spec,
                width=info.video.width,
                height=info.video.height,
                audio=info.audio is not None,
                ffmpeg=find_ffmpeg(self.settings.ffmpeg),
                work_dir=work_dir,
                # One decode and encode pass: about what the full analysis costs.
                timeout_s=self.settings.analysis_timeout_s,
            )
        except (MediaError, ConfigError) as exc:
            raise ProvenanceError(
                f"the watermark could not be drawn: {exc.message}", code="watermark_failed"
            ) from exc
        record = {
            "text": spec.text,
            "image": spec.image.name if spec.image else None,
            "position": spec.position,
        }
        return out, record

    async def sign(
        self, video: Path, manifest: Mapping[str, Any], source_sha256: str, work_dir: Path
    ) -> tuple[Path, dict[str, Any] | None]:
        """The file with a signed C2PA manifest embedded and what to record, or
        ``video`` unchanged and None when C2PA is off. ``manifest`` is delivery's
        provenance document; ``source_sha256`` the provider's output before any change."""
        credentials = self.credentials
        if credentials is None:
            return video, None
        request = manifest.get("request")
        prompt = request.get("prompt") if isinstance(request, Mapping) else None
        assertion = {
            "vidpipe_version": __version__,
            "job_id": manifest.get("job_id"),
            "provider": manifest.get("provider"),
            "model": manifest.get("model"),
            "provider_job_id": manifest.get("provider_job_id"),
            "attempts": len(manifest.get("attempts") or ()),
            # The prompt travels with the file to whoever receives it: only its hash,
            # which can confirm a claimed prompt without disclosing it.
            "prompt_sha256": (
                hashlib.sha256(prompt.encode()).hexdigest() if isinstance(prompt, str) else None
            ),
            "provider_output_sha256": source_sha256,
            "watermarked": self.watermark_spec is not None,
        }
        out = work_dir / "signed.mp4"
        await asyncio.to_thread(
            sign_video,
            video,
            out,
            credentials,
            title=VIDEO_TITLE,
            generator_version=__version__,
            software_agent=f"{manifest.get('provider')}/{manifest.get('model')}",
            provenance=assertion,
        )
        record = {
            "embedded": True,
            "claim_generator": f"vidpipe/{__version__}",
            "alg": credentials.alg,
            "timestamped": credentials.tsa_url is not None,
            "assertion": VIDPIPE_ASSERTION,
        }
        return out, record


def hash_file(path: Path) -> tuple[str, int]:
    """(sha256, bytes) of a file, read in chunks: outputs can be gigabytes."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
