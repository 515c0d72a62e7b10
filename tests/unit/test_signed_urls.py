"""Signed local-blob URLs: valid, expired, and every kind of tampering fails."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from vidpipe.blobs.local import LocalBlobStore
from vidpipe.blobs.signing import UrlSigner, sign, signature, verify
from vidpipe.errors import ConfigError

pytestmark = pytest.mark.timeout(10)

SECRET = "s3cret-signing-key-0123456789"
PATH = "/v1/blobs/tenants/t1/jobs/j1/video.mp4"
EXPIRES = 1_800_000_600
NOW = 1_800_000_000.0


def split(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path, dict(parse_qsl(parts.query))


def requery(params: dict[str, str]) -> str:
    return urlencode(params)


def test_signed_url_shape() -> None:
    url = sign(PATH, EXPIRES, SECRET)
    path, params = split(url)
    assert path == PATH
    assert params["expires"] == str(EXPIRES)
    assert len(params["sig"]) == 64
    assert int(params["sig"], 16) >= 0
    assert params["sig"] == signature(PATH, EXPIRES, SECRET)


def test_valid_signature_verifies_raw_and_parsed() -> None:
    path, params = split(sign(PATH, EXPIRES, SECRET))
    assert verify(path, urlsplit(sign(PATH, EXPIRES, SECRET)).query, NOW, SECRET)
    assert verify(path, params, NOW, SECRET)


@pytest.mark.parametrize(
    ("now", "ok"),
    [
        (NOW, True),
        (EXPIRES - 1, True),
        (EXPIRES, True),  # valid through the second it names
        (EXPIRES + 0.001, False),
        (EXPIRES + 3600, False),
    ],
)
def test_expiry(now: float, ok: bool) -> None:
    _, params = split(sign(PATH, EXPIRES, SECRET))
    assert verify(PATH, params, now, SECRET) is ok


def _tampered(change: str) -> tuple[str, str]:
    path, params = split(sign(PATH, EXPIRES, SECRET, variant="video"))
    sig = params["sig"]
    if change == "path":
        path = PATH.replace("j1", "j2")
    elif change == "path_suffix":
        path = PATH + "x"
    elif change == "expires_later":
        params["expires"] = str(EXPIRES + 86400)
    elif change == "expires_padded":
        params["expires"] = "0" + str(EXPIRES)
    elif change == "sig_flipped":
        params["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    elif change == "sig_truncated":
        params["sig"] = sig[:-2]
    elif change == "sig_empty":
        params["sig"] = ""
    elif change == "sig_missing":
        del params["sig"]
    elif change == "expires_missing":
        del params["expires"]
    elif change == "variant_changed":
        params["variant"] = "thumbnail"
    elif change == "variant_removed":
        del params["variant"]
    elif change == "param_added":
        params["download"] = "1"
    elif change == "sig_non_ascii":
        params["sig"] = "é" * 64
    elif change == "expires_unicode_digit":
        params["expires"] = "²"
    elif change == "expires_exponent":
        params["expires"] = "1e99"
    return path, requery(params)


@pytest.mark.parametrize(
    "change",
    [
        "path",
        "path_suffix",
        "expires_later",
        "expires_padded",
        "sig_flipped",
        "sig_truncated",
        "sig_empty",
        "sig_missing",
        "expires_missing",
        "variant_changed",
        "variant_removed",
        "param_added",
        "sig_non_ascii",
        "expires_unicode_digit",
        "expires_exponent",
    ],
)
def test_tampering_fails(change: str) -> None:
    path, query = _tampered(change)
    assert verify(path, query, NOW, SECRET) is False


def test_untampered_variant_url_verifies() -> None:
    path, query = _tampered("nothing")
    assert verify(path, query, NOW, SECRET) is True


def test_repeated_parameter_fails() -> None:
    url = sign(PATH, EXPIRES, SECRET)
    assert verify(PATH, urlsplit(url).query + f"&expires={EXPIRES + 9999}", NOW, SECRET) is False


def test_other_secret_or_method_fails() -> None:
    _, params = split(sign(PATH, EXPIRES, SECRET))
    assert verify(PATH, params, NOW, SECRET + "x") is False
    assert verify(PATH, params, NOW, SECRET, method="DELETE") is False
    _, put = split(sign(PATH, EXPIRES, SECRET, method="PUT"))
    assert verify(PATH, put, NOW, SECRET, method="PUT") is True
    assert verify(PATH, put, NOW, SECRET) is False


def test_uppercase_hex_signature_is_accepted() -> None:
    _, params = split(sign(PATH, EXPIRES, SECRET))
    params["sig"] = params["sig"].upper()
    assert verify(PATH, params, NOW, SECRET) is True


@pytest.mark.parametrize("secret", ["", b"", "short", b"fifteen bytes!!"])
def test_empty_or_weak_secret_is_refused(secret: str | bytes) -> None:
    with pytest.raises(ConfigError, match="signing secret"):
        sign(PATH, EXPIRES, secret)
    with pytest.raises(ConfigError):
        verify(PATH, {"expires": str(EXPIRES), "sig": "0" * 64}, NOW, secret)
    with pytest.raises(ConfigError):
        UrlSigner(secret)


def test_reserved_parameter_names() -> None:
    with pytest.raises(ValueError, match="reserved"):
        sign(PATH, EXPIRES, SECRET, params={"sig": "x"})


def test_signer_with_a_clock() -> None:
    clock = [NOW]
    signer = UrlSigner(SECRET, base_url="https://vid.example/", clock=lambda: clock[0])
    url = signer.url_for("tenants/t1/jobs/j1/video.mp4", 60, filename="my video.mp4")
    assert url.startswith("https://vid.example/v1/blobs/tenants/t1/jobs/j1/video.mp4?")
    path, params = split(url)
    assert params["filename"] == "my video.mp4"
    assert int(params["expires"]) == int(NOW) + 60
    assert signer.verify(path, urlsplit(url).query)
    clock[0] += 61
    assert not signer.verify(path, urlsplit(url).query)


def test_local_store_signs_only_with_a_signer(tmp_path: Path) -> None:
    key = "tenants/t1/jobs/j1/video.mp4"
    assert LocalBlobStore(tmp_path).signed_url(key, 60) is None
    signer = UrlSigner(SECRET, clock=lambda: NOW)
    url = LocalBlobStore(tmp_path, signer=signer).signed_url(key, 60)
    assert url is not None
    path, _ = split(url)
    assert path == f"/v1/blobs/{key}"
    assert signer.verify(path, urlsplit(url).query)
