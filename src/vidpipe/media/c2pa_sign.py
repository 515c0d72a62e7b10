"""C2PA Content Credentials signed into a video file, with c2pa-python.

The manifest says what a viewer of AI output needs to know: a ``c2pa.created`` action
with the IPTC digital source type ``trainedAlgorithmicMedia`` (as the C2PA spec asks
of generative AI output) naming the model as its software agent, the claim generator
(``vidpipe`` and its version), and one custom assertion with whatever provenance the
caller passes. The manifest is embedded in the MP4 (a ``uuid`` box) and bound to the
file's bytes by a BMFF hash, so any later edit of the file breaks it: signing must be
the last change made to a file.

Credentials are loaded and checked once (by signing a tiny image in memory), so a
wrong key or certificate fails at start-up with a reason, not on the first video.
Nothing here touches the network unless a time-stamp authority is configured.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vidpipe.errors import ConfigError, ProvenanceError

__all__ = [
    "ALGORITHMS",
    "CLAIM_GENERATOR",
    "TRAINED_ALGORITHMIC_MEDIA",
    "VIDPIPE_ASSERTION",
    "C2paCredentials",
    "read_manifest_store",
    "sign_video",
]

log = logging.getLogger("vidpipe.media")

ALGORITHMS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")
CLAIM_GENERATOR = "vidpipe"
# Custom assertion labels are namespaced by their owner's reversed domain (C2PA 2.x).
VIDPIPE_ASSERTION = "org.vidpipe.provenance"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"

# Reading or signing must never fetch anything on its own: no OCSP, no remote
# manifests. The only network call is the time-stamp authority, when configured.
_OFFLINE = {"verify": {"ocsp_fetch": False, "remote_manifest_fetch": False}}
# A time-stamp authority is a network service: a blip should not fail a paid video.
_TSA_RETRY_DELAYS_S = (1.0, 2.0)


@dataclass(frozen=True)
class C2paCredentials:
    """A signing certificate chain (PEM, signing certificate first) and its key."""

    alg: str
    cert_chain: bytes
    private_key: bytes = field(repr=False)
    tsa_url: str | None = None

    @classmethod
    def load(
        cls, cert_path: Path, key_path: Path, *, alg: str = "es256", tsa_url: str | None = None
    ) -> C2paCredentials:
        """Read and check the credentials; ``ConfigError(code="c2pa_config")`` says why not."""
        if alg not in ALGORITHMS:
            raise ConfigError(f"unknown C2PA signing algorithm {alg!r}", code="c2pa_config")
        try:
            cert_chain, private_key = cert_path.read_bytes(), key_path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"C2PA credentials unreadable: {exc}", code="c2pa_config") from exc
        credentials = cls(alg, cert_chain, private_key, tsa_url)
        credentials.check()
        return credentials

    def check(self) -> None:
        """Sign a tiny PNG in memory (no time-stamp: start-up stays offline).

        c2pa refuses what the C2PA certificate profile forbids (no digitalSignature key
        usage, no extended key usage, no authority key identifier, outside its validity,
        a key that does not match); its reasons are terse, so ours are added.
        """
        import c2pa
        from PIL import Image

        sample, signed = io.BytesIO(), io.BytesIO()
        Image.new("RGB", (4, 4)).save(sample, "PNG")
        sample.seek(0)
        try:
            with c2pa.Builder(
                {"title": "vidpipe self-test", "assertions": [_created_action(None)]},
                context=_context("self-test"),
            ) as builder:
                builder.sign(self._signer(tsa=False), "image/png", sample, signed)
        except (c2pa.C2paError, ValueError, TypeError) as exc:
            hints = "; ".join(_certificate_hints(self.cert_chain, self.private_key))
            raise ConfigError(
                f"C2PA signing credentials refused: {exc}" + (f" ({hints})" if hints else ""),
                code="c2pa_config",
            ) from exc

    def _signer(self, *, tsa: bool = True) -> Any:
        import c2pa

        url = self.tsa_url.encode() if tsa and self.tsa_url else None
        info = c2pa.C2paSignerInfo(self.alg.encode(), self.cert_chain, self.private_key, url)
        return c2pa.Signer.from_info(info)


def sign_video(
    source: Path,
    dest: Path,
    credentials: C2paCredentials,
    *,
    title: str,
    generator_version: str,
    software_agent: str | None,
    provenance: Mapping[str, Any],
    mime_type: str = "video/mp4",
) -> None:
    """Write ``source`` with a signed C2PA manifest embedded to ``dest``.

    ``software_agent`` names the generative model in the ``c2pa.created`` action;
    ``provenance`` (JSON-ready) becomes the ``org.vidpipe.provenance`` assertion.
    Raises ``ProvenanceError(code="c2pa_signing_failed")`` with c2pa's reason, after
    retrying twice when a time-stamp authority is configured.
    """
    import c2pa

    definition = {
        "title": title,
        "assertions": [
            _created_action(software_agent),
            # Round-tripped through JSON so what is signed is exactly what a reader gets.
            {"label": VIDPIPE_ASSERTION, "data": json.loads(json.dumps(dict(provenance)))},
        ],
    }
    delays = _TSA_RETRY_DELAYS_S if credentials.tsa_url else ()
    for attempt in range(len(delays) + 1):
        try:
            with (
                c2pa.Builder(definition, context=_context(generator_version)) as builder,
                source.open("rb") as src,
                dest.open("w+b") as dst,
            ):
                builder.sign(credentials._signer(), mime_type, src, dst)
            return
        except c2pa.C2paError as exc:
            if attempt < len(delays):
                log.warning("C2PA signing failed, retrying: %s", exc)
                time.sleep(delays[attempt])
                continue
            raise ProvenanceError(
                f"C2PA signing failed: {exc}", code="c2pa_signing_failed"
            ) from exc
        except OSError as exc:
            raise ProvenanceError(
                f"C2PA signing failed: {exc}", code="c2pa_signing_failed"
            ) from exc


def read_manifest_store(
    path: Path, *, mime_type: str = "video/mp4", trust_anchors: str | None = None
) -> dict[str, Any] | None:
    """The C2PA manifest store embedded in ``path`` as c2pa reports it (manifests,
    ``active_manifest``, ``validation_state``), or None when it has none. With
    ``trust_anchors`` (PEM), a chain ending there validates as ``Trusted``."""
    import c2pa

    settings: dict[str, Any] = dict(_OFFLINE)
    if trust_anchors:
        settings["trust"] = {"user_anchors": trust_anchors}
    with path.open("rb") as stream:
        reader = c2pa.Reader.try_create(mime_type, stream, None, c2pa.Context.from_dict(settings))
        if reader is None:
            return None
        with reader:
            store: dict[str, Any] = json.loads(reader.json())
            return store


def _created_action(software_agent: str | None) -> dict[str, Any]:
    action: dict[str, Any] = {
        "action": "c2pa.created",
        "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
    }
    if software_agent:
        action["softwareAgent"] = {"name": software_agent}
    return {"label": "c2pa.actions.v2", "data": {"actions": [action]}}


def _context(generator_version: str) -> Any:
    import c2pa

    return c2pa.Context.from_dict(
        {
            **_OFFLINE,
            "builder": {
                "claim_generator_info": {"name": CLAIM_GENERATOR, "version": generator_version},
                # c2pa cannot draw a video frame, and the stored thumbnail is ours.
                "thumbnail": {"enabled": False},
            },
        }
    )


def _certificate_hints(cert_chain: bytes, private_key: bytes) -> list[str]:
    """What a C2PA signing certificate lacks, in words an operator can act on."""
    try:
        chain = x509.load_pem_x509_certificates(cert_chain)
    except ValueError:
        return ["the certificate file holds no PEM certificate"]
    leaf, hints = chain[0], []
    now = dt.datetime.now(dt.UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        hints.append(
            f"the signing certificate is valid from {leaf.not_valid_before_utc:%Y-%m-%d} "
            f"to {leaf.not_valid_after_utc:%Y-%m-%d}"
        )
    extensions = {ext.oid: ext.value for ext in leaf.extensions}
    constraints = extensions.get(x509.oid.ExtensionOID.BASIC_CONSTRAINTS)
    if isinstance(constraints, x509.BasicConstraints) and constraints.ca:
        hints.append("the first certificate is a CA: put the signing certificate first")
    usage = extensions.get(x509.oid.ExtensionOID.KEY_USAGE)
    if not isinstance(usage, x509.KeyUsage) or not usage.digital_signature:
        hints.append("the signing certificate needs the digitalSignature key usage")
    if x509.oid.ExtensionOID.EXTENDED_KEY_USAGE not in extensions:
        hints.append(
            "the signing certificate needs an extended key usage "
            "(e.g. emailProtection or documentSigning)"
        )
    if x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER not in extensions:
        hints.append("the signing certificate needs an authority key identifier")
    try:
        key = serialization.load_pem_private_key(private_key, password=None)
    except (ValueError, TypeError):
        hints.append("the key file is not an unencrypted PEM private key")
    else:
        if key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            hints.append("the private key does not belong to the signing certificate")
    return hints
