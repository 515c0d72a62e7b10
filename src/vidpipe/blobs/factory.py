"""The blob store the settings ask for."""

from __future__ import annotations

from vidpipe.blobs.base import BlobStore
from vidpipe.blobs.local import LocalBlobStore
from vidpipe.blobs.s3 import S3BlobStore
from vidpipe.blobs.signing import UrlSigner
from vidpipe.config import Settings


def build_blob_store(settings: Settings) -> BlobStore:
    if settings.storage_backend == "s3":
        assert settings.s3_bucket is not None  # the settings validator requires it
        return S3BlobStore(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key=(
                settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None
            ),
            secret_key=(
                settings.s3_secret_access_key.get_secret_value()
                if settings.s3_secret_access_key
                else None
            ),
            prefix=settings.s3_prefix,
            cdn_base_url=settings.cdn_base_url,
        )
    signer = (
        UrlSigner(settings.signing_secret.get_secret_value(), base_url=settings.public_url or "")
        if settings.signing_secret
        else None
    )
    return LocalBlobStore(settings.resolved_storage_dir, signer=signer)
