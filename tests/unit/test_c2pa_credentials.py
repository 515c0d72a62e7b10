"""C2PA credentials are checked when loaded, and a refusal says what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.c2pa_chain import make_chain
from vidpipe.config import Settings
from vidpipe.errors import ConfigError
from vidpipe.media.c2pa_sign import C2paCredentials

pytestmark = pytest.mark.timeout(30)


def test_good_credentials_load(tmp_path: Path) -> None:
    chain = make_chain(tmp_path)
    credentials = C2paCredentials.load(chain.cert_path, chain.key_path)
    assert credentials.alg == "es256"
    assert "PRIVATE" not in repr(credentials)  # the key never reaches a log line


@pytest.mark.parametrize(
    ("options", "alg", "reason"),
    [
        ({"wrong_key": True}, "es256", "does not belong to the signing certificate"),
        ({"extended_key_usage": False}, "es256", "needs an extended key usage"),
        ({"valid_days": (-30, -1)}, "es256", "the signing certificate is valid from"),
        ({}, "ps256", "refused"),
    ],
)
def test_a_misconfiguration_is_refused_with_its_reason(
    tmp_path: Path, options: dict[str, object], alg: str, reason: str
) -> None:
    chain = make_chain(tmp_path, **options)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=reason) as refused:
        C2paCredentials.load(chain.cert_path, chain.key_path, alg=alg)
    assert refused.value.code == "c2pa_config"


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unreadable") as refused:
        C2paCredentials.load(tmp_path / "nope.pem", tmp_path / "nope.key")
    assert refused.value.code == "c2pa_config"


def test_settings_want_both_files_or_neither(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="VIDPIPE_C2PA_KEY_PATH"):
        Settings(home=tmp_path, c2pa_cert_path=tmp_path / "chain.pem")
    with pytest.raises(ValueError, match="c2pa_tsa_url"):
        Settings(home=tmp_path, c2pa_tsa_url="ftp://tsa.example")


def test_doctor_gives_provenance_a_verdict_when_configured(tmp_path: Path) -> None:
    from vidpipe.cli.doctor import check_provenance

    assert check_provenance(Settings(home=tmp_path)) is None
    good = make_chain(tmp_path / "good")
    verdict = check_provenance(
        Settings(
            home=tmp_path,
            c2pa_cert_path=good.cert_path,
            c2pa_key_path=good.key_path,
            watermark_text="vidpipe",
        )
    )
    assert verdict is not None
    assert verdict.ok
    assert "C2PA signing" in verdict.detail
    assert "watermark at bottom-right" in verdict.detail
    bad = make_chain(tmp_path / "bad", wrong_key=True)
    verdict = check_provenance(
        Settings(home=tmp_path, c2pa_cert_path=bad.cert_path, c2pa_key_path=bad.key_path)
    )
    assert verdict is not None
    assert not verdict.ok
    assert verdict.detail.startswith("c2pa_config: ")
