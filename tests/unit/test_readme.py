"""The README's promises that can be checked mechanically."""

from pathlib import Path

from vidpipe.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [
        f"VIDPIPE_{name.upper()}"
        for name in Settings.model_fields
        if f"`VIDPIPE_{name.upper()}`" not in README
    ]
    assert missing == []


def test_quick_start_is_two_commands_and_ci_runs_the_same_tests() -> None:
    assert "make run" in README
    assert "make test" in README
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "make test" in ci
