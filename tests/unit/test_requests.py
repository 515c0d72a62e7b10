import pytest

from vidpipe.core.requests import parse_create_video
from vidpipe.errors import InvalidRequest


def test_minimal_request_gets_defaults() -> None:
    req = parse_create_video({"prompt": "  a cat  "})
    assert req.prompt == "a cat"
    assert req.seconds == 4
    assert req.size is None
    assert req.metadata == {}


def test_seconds_as_string_like_the_openai_sdk() -> None:
    assert parse_create_video({"prompt": "x", "seconds": "8"}).seconds == 8


def test_nested_metadata() -> None:
    req = parse_create_video({"prompt": "x", "metadata": {"team": "a"}})
    assert req.metadata == {"team": "a"}


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({}, "missing_parameter", "prompt"),
        ({"prompt": ""}, "invalid_prompt", "prompt"),
        ({"prompt": "   "}, "invalid_prompt", "prompt"),
        ({"prompt": "x" * 2001}, "invalid_prompt", "prompt"),
        ({"prompt": 5}, "invalid_prompt", "prompt"),
        ({"prompt": "x", "seconds": 0}, "invalid_seconds", "seconds"),
        ({"prompt": "x", "seconds": "four"}, "invalid_seconds", "seconds"),
        ({"prompt": "x", "seconds": 2.5}, "invalid_seconds", "seconds"),
        ({"prompt": "x", "seconds": True}, "invalid_seconds", "seconds"),
        ({"prompt": "x", "size": "big"}, "invalid_size", "size"),
        ({"prompt": "x", "size": "1280*720"}, "invalid_size", "size"),
        ({"prompt": "x", "aspect_ratio": "4:3"}, "invalid_aspect_ratio", "aspect_ratio"),
        ({"prompt": "x", "seed": -1}, "invalid_seed", "seed"),
        (
            {"prompt": "x", "metadata": {str(i): "v" for i in range(17)}},
            "invalid_metadata",
            "metadata",
        ),
        ({"prompt": "x", "metadata": {"k": "v" * 513}}, "invalid_metadata", "metadata"),
        ({"prompt": "x", "colour": "red"}, "unknown_parameter", "colour"),
    ],
)
def test_bad_requests_name_the_problem(body: dict[str, object], code: str, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_create_video(body)
    assert info.value.code == code
    assert info.value.param == param
    assert info.value.http_status == 422


def test_body_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_create_video(["prompt"])
    assert info.value.code == "invalid_body"
