"""Speech and word timings on real audio: piper, espeak-ng, fake remote services, and
captions burnt onto a 9:16 video with ffmpeg's libass."""

from __future__ import annotations

import base64
import json
import os
import shutil
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from vidpipe.errors import InvalidRequest, PermanentProviderError, TransientProviderError
from vidpipe.media import speech as speech_module
from vidpipe.media.alignment import (
    WordTiming,
    estimate_syllables,
    speech_segments,
    split_words,
    timings_from_audio,
    timings_from_characters,
    timings_from_phonemes,
)
from vidpipe.media.captions_timed import CaptionStyle, group_words, to_ass, to_srt, to_vtt
from vidpipe.media.ffmpeg import find_ffmpeg, run_ffmpeg
from vidpipe.media.probe import probe
from vidpipe.media.speech import (
    PIPER_VOICES,
    PiperVoiceAsset,
    Speech,
    SpeechError,
    available_engines,
    synthesize,
    synthesize_remote,
)

pytestmark = pytest.mark.slow

TWO_SENTENCES = "Cats sleep for most of the day. At night, they hunt in the garden!"
DEJAVU_DIR = Path("/usr/share/fonts/truetype/dejavu")


def require(engine: str) -> None:
    """Skip on a developer machine without ``engine``; CI must have every engine."""
    if engine not in available_engines():
        if os.environ.get("CI"):
            pytest.fail(f"speech engine {engine} is not installed on CI")
        pytest.skip(f"speech engine {engine} is not installed")


def read_wav(path: Path) -> tuple[np.ndarray, int, int]:
    with wave.open(str(path), "rb") as source:
        raw = source.readframes(source.getnframes())
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        return samples, source.getframerate(), source.getnchannels()


def assert_well_formed(words: tuple[WordTiming, ...] | None, text: str, duration_s: float) -> None:
    assert words is not None
    assert [w.word for w in words] == list(split_words(text))
    previous_end = 0.0
    for w in words:
        assert previous_end <= w.start_s <= w.end_s <= duration_s + 1e-9, w
        previous_end = w.end_s


# --- Pure timing functions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Hello,  world!", ("Hello,", "world!")),
        ("Wait — what?", ("Wait —", "what?")),
        ("— Yes", ("— Yes",)),
        ("  ", ()),
        ("... !", ()),
    ],
)
def test_split_words(text: str, words: tuple[str, ...]) -> None:
    assert split_words(text) == words


@pytest.mark.parametrize(
    ("word", "syllables"),
    [("cat", 1), ("garden!", 2), ("make", 1), ("little", 2), ("2024", 6), ("TV", 2), ("—", 0)],
)
def test_estimate_syllables(word: str, syllables: int) -> None:
    assert estimate_syllables(word) == syllables


def test_phoneme_timings_survive_merged_and_expanded_words() -> None:
    # The engine said "in the" as one unit, "2" as "two", and stressed a vowel
    # differently. ASCII letters stand for phonemes; U+02C8 is the stress mark.
    stress = "\u02c8"
    words = ["sit", "in", "the", "2", "cars."]
    alone = [list("sIt"), list("In"), list("De"), ["t", stress, "u", "U"], [*"kArz", "."]]
    said = [*"sIt", " ", *"InDe", " ", *"tuU", " ", "k", stress, *"Arz"]
    stream = [(p, i * 0.1, (i + 1) * 0.1) for i, p in enumerate(["^", *said, ".", "$"])]

    timings = timings_from_phonemes(words, alone, stream, duration_s=2.1)

    spans = [(t.word, round(t.start_s, 2), round(t.end_s, 2)) for t in timings]
    assert spans == [
        ("sit", 0.1, 0.4),
        ("in", 0.5, 0.7),
        ("the", 0.7, 0.9),
        ("2", 1.0, 1.3),
        ("cars.", 1.4, 1.9),
    ]


def test_unmatched_words_share_the_gap_between_neighbours() -> None:
    stream = [("a", 0.0, 0.5), ("b", 1.5, 2.0)]

    timings = timings_from_phonemes(
        ["a", "🙂", "?!x", "b"], [["a"], [], [], ["b"]], stream, duration_s=2.0
    )

    assert [(t.start_s, t.end_s) for t in timings] == [
        (0.0, 0.5),
        (0.5, 1.0),
        (1.0, 1.5),
        (1.5, 2.0),
    ]


def test_character_timings() -> None:
    text = "Hi there — friend."
    starts = [i * 0.1 for i in range(len(text))]
    ends = [s + 0.1 for s in starts]

    timings = timings_from_characters(text, starts, ends, duration_s=2.0)

    assert [(t.word, round(t.start_s, 2), round(t.end_s, 2)) for t in timings] == [
        ("Hi", 0.0, 0.2),
        ("there —", 0.3, 1.0),
        ("friend.", 1.1, 1.8),
    ]


def bursts(spec: list[tuple[float, float]], rate: int = 16_000, total_s: float = 4.0) -> np.ndarray:
    """Noise-modulated tones at the (start, end) seconds given, silence elsewhere."""
    rng = np.random.default_rng(7)
    samples = np.zeros(int(total_s * rate), dtype=np.float32)
    for start, end in spec:
        a, b = int(start * rate), int(end * rate)
        t = np.arange(b - a) / rate
        samples[a:b] = 0.5 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * rng.random(b - a))
    return samples


def test_speech_segments_find_the_pauses() -> None:
    # A 60 ms dip inside the first "word" (a stop consonant) is bridged.
    audio = bursts([(0.2, 0.6), (0.66, 1.2), (1.6, 2.5), (3.0, 3.4)])

    segments = speech_segments(audio, 16_000)

    # Exact to a 10 ms frame hop.
    assert list(segments) == [
        pytest.approx((0.2, 1.2), abs=0.011),
        pytest.approx((1.6, 2.5), abs=0.011),
        pytest.approx((3.0, 3.4), abs=0.011),
    ]


def test_audio_timings_put_sentence_boundaries_at_the_pauses() -> None:
    # Three "sentences" of speech, each pause after a full stop.
    audio = bursts([(0.1, 1.1), (1.5, 2.9), (3.3, 3.9)])
    words = split_words("One two three. Four five six seven. Eight nine.")

    timings = timings_from_audio(words, audio, 16_000)

    assert_well_formed(timings, "One two three. Four five six seven. Eight nine.", 4.0)
    by_word = {t.word: t for t in timings}
    assert by_word["three."].end_s == pytest.approx(1.1, abs=0.02)
    assert by_word["Four"].start_s == pytest.approx(1.5, abs=0.02)
    assert by_word["seven."].end_s == pytest.approx(2.9, abs=0.02)
    assert by_word["Eight"].start_s == pytest.approx(3.3, abs=0.02)
    assert timings[0].start_s == pytest.approx(0.1, abs=0.02)
    assert timings[-1].end_s == pytest.approx(3.9, abs=0.02)


def test_audio_timings_of_silence_spread_over_the_whole_clip() -> None:
    timings = timings_from_audio(["a", "b"], np.zeros(16_000, dtype=np.float32), 16_000)

    assert [(t.start_s, t.end_s) for t in timings] == [(0.0, 0.5), (0.5, 1.0)]


# --- Local engines --------------------------------------------------------------------


@pytest.fixture(scope="module")
def piper_speech(tmp_path_factory: pytest.TempPathFactory) -> Speech:
    require("piper")
    return synthesize(
        TWO_SENTENCES, out_path=tmp_path_factory.mktemp("piper") / "speech.wav", engine="auto"
    )


def test_auto_picks_piper_and_writes_a_normalized_wav(piper_speech: Speech) -> None:
    assert piper_speech.engine == "piper"
    info = probe(piper_speech.path)
    assert info.audio is not None
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == (
        "pcm_s16le",
        22050,
        1,
    )
    assert info.duration_s == pytest.approx(piper_speech.duration_s, abs=0.01)
    assert piper_speech.duration_s > 1.0

    samples, rate, channels = read_wav(piper_speech.path)
    assert (rate, channels) == (22050, 1)
    assert float(np.max(np.abs(samples))) == pytest.approx(10 ** (-1 / 20), abs=0.002)


def test_piper_timings_follow_the_audio(piper_speech: Speech) -> None:
    words = piper_speech.words
    assert_well_formed(words, TWO_SENTENCES, piper_speech.duration_s)
    assert words is not None
    samples, rate, _ = read_wav(piper_speech.path)

    # The pause piper leaves between sentences lies between "day." and "At".
    day, at = words[6], words[7]
    assert (day.word, at.word) == ("day.", "At")
    assert at.start_s - day.end_s >= speech_module.PIPER_SENTENCE_PAUSE_S
    # Silent between them, but for the timings' precision at each edge: piper's
    # alignment steps in frames of ~12 ms, and its voice varies from run to run (its
    # noise scale), so a word's first sound may come up to a frame before its start
    # (seen once: an RMS of 0.0105 with the edges counted, against ~0.1 for speech).
    edge = int(0.015 * rate)
    gap = samples[int(day.end_s * rate) + edge : int(at.start_s * rate) - edge]
    assert float(np.sqrt(np.mean(gap**2))) < 0.01

    # Timings computed from the audio alone agree with the engine's, exactly at the
    # pause and roughly inside connected speech.
    estimated = timings_from_audio(split_words(TWO_SENTENCES), samples, rate)
    assert estimated[7].start_s == pytest.approx(at.start_s, abs=0.1)
    errors = [abs(e.start_s - w.start_s) for e, w in zip(estimated, words, strict=True)]
    assert float(np.mean(errors)) < 0.2


def test_espeak_speaks_with_timings_at_its_pauses(tmp_path: Path) -> None:
    require("espeak-ng")
    text = "One, two, three. Four, five, six. Seven, eight, nine."

    speech = synthesize(text, out_path=tmp_path / "e.wav", engine="espeak-ng")

    assert speech.engine == "espeak-ng"
    assert speech.sample_rate == 22050
    assert speech.duration_s > 1.0
    assert_well_formed(speech.words, text, speech.duration_s)
    assert speech.words is not None
    samples, rate, _ = read_wav(speech.path)
    window = int(0.06 * rate)
    for index in (3, 6):  # "Four", "Seven": each follows a sentence pause
        start = int(speech.words[index].start_s * rate)
        before = samples[max(start - window, 0) : start]
        after = samples[start : start + window]
        quiet = float(np.sqrt(np.mean(before**2)))
        # Speech may start with a soft consonant ("f", "s"), so only relatively louder.
        assert quiet < 0.01, speech.words[index]
        assert float(np.sqrt(np.mean(after**2))) > 4 * quiet + 0.005, speech.words[index]


def test_espeak_fallback_speaks_the_piper_voice_language(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("espeak-ng")
    monkeypatch.setattr(speech_module, "available_engines", lambda: ("espeak-ng",))

    speech = synthesize("Hello there.", voice="en_US-joe-medium", out_path=tmp_path / "f.wav")

    assert speech.engine == "espeak-ng"


def test_no_engine_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speech_module, "available_engines", lambda: ())

    with pytest.raises(SpeechError, match="piper-tts") as caught:
        synthesize("Hello.", out_path=tmp_path / "x.wav")
    assert caught.value.code == "speech_unavailable"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"engine": "piper", "voice": "nobody"}, "voice_unknown"),
        ({"engine": "espeak-ng", "voice": "--help"}, "voice_unknown"),
    ],
)
def test_bad_voices_are_refused(tmp_path: Path, kwargs: dict[str, str], code: str) -> None:
    with pytest.raises(SpeechError) as caught:
        synthesize("Hello.", out_path=tmp_path / "x.wav", **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == code


@pytest.mark.parametrize("text", ["", "  ... ", "word " * 1001])
def test_empty_or_huge_text_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(InvalidRequest):
        synthesize(text, out_path=tmp_path / "x.wav")


def test_a_voice_file_with_another_hash_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("piper")
    real = PIPER_VOICES["en_US-joe-medium"]
    tampered = PiperVoiceAsset(
        package=real.package,
        model_file=real.model_file,
        model_sha256="0" * 64,
        config_sha256=real.config_sha256,
        espeak_voice="en-us",
    )
    monkeypatch.setitem(PIPER_VOICES, "tampered", tampered)

    with pytest.raises(SpeechError, match="expected 0000") as caught:
        synthesize("Hello.", voice="tampered", out_path=tmp_path / "x.wav", engine="piper")
    assert caught.value.code == "voice_corrupt"


# --- Remote providers, against fakes that speak their wire formats --------------------


def pcm_of(audio: np.ndarray) -> bytes:
    return (audio * 32767).astype("<i2").tobytes()


class FakeSpeechApi:
    """OpenAI's POST /v1/audio/speech and ElevenLabs' POST
    /v1/text-to-speech/{voice}/with-timestamps, answering 24 kHz PCM."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, object], dict[str, str]]] = []
        self.status = 200
        self.audio = bursts([(0.1, 0.5), (0.9, 1.4)], rate=24_000, total_s=1.5)

    async def __call__(self, scope: dict[str, object], receive: object, send: object) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()  # type: ignore[operator]
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}  # type: ignore[attr-defined]
        query = dict(httpx.QueryParams(scope["query_string"].decode()))  # type: ignore[attr-defined]
        path = str(scope["path"])
        payload = json.loads(body)
        self.requests.append((path, headers, payload, query))
        status, content, content_type = self._answer(path, payload)
        await send(  # type: ignore[operator]
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"retry-after", b"7")],
            }
        )
        await send({"type": "http.response.body", "body": content})  # type: ignore[operator]

    def _answer(self, path: str, payload: dict[str, object]) -> tuple[int, bytes, str]:
        if self.status != 200:
            error = json.dumps({"error": {"message": "nope"}}).encode()
            return self.status, error, "application/json"
        if path == "/v1/audio/speech":
            return 200, pcm_of(self.audio), "audio/pcm"
        text = str(payload["text"])
        # The first word's characters over the first burst, the rest at 0.9 s.
        space = text.index(" ")
        starts = [0.1 + 0.4 * i / len(text) if i < space else 0.9 for i in range(len(text))]
        body = {
            "audio_base64": base64.b64encode(pcm_of(self.audio)).decode(),
            "alignment": {
                "characters": list(text),
                "character_start_times_seconds": starts,
                "character_end_times_seconds": [s + 0.05 for s in starts],
            },
        }
        return 200, json.dumps(body).encode(), "application/json"


@pytest.fixture
def fake_api() -> FakeSpeechApi:
    return FakeSpeechApi()


@pytest.fixture
async def http(fake_api: FakeSpeechApi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake_api)) as client:
        yield client


async def test_openai_speech(
    tmp_path: Path, fake_api: FakeSpeechApi, http: httpx.AsyncClient
) -> None:
    speech = await synthesize_remote(
        "Hello world.",
        engine="openai",
        voice="alloy",
        out_path=tmp_path / "o.wav",
        http=http,
        api_key="sk-test",
        base_url="http://openai.test/v1",
    )

    path, headers, payload, _ = fake_api.requests[0]
    assert path == "/v1/audio/speech"
    assert headers["authorization"] == "Bearer sk-test"
    assert payload == {
        "model": "gpt-4o-mini-tts",
        "input": "Hello world.",
        "voice": "alloy",
        "response_format": "pcm",
    }
    assert (speech.engine, speech.sample_rate) == ("openai", 24_000)
    assert speech.duration_s == pytest.approx(1.5)
    assert_well_formed(speech.words, "Hello world.", speech.duration_s)
    assert speech.words is not None
    assert speech.words[1].start_s == pytest.approx(0.9, abs=0.02)  # after the pause
    assert read_wav(speech.path)[1:] == (24_000, 1)


async def test_elevenlabs_speech_uses_its_character_alignment(
    tmp_path: Path, fake_api: FakeSpeechApi, http: httpx.AsyncClient
) -> None:
    speech = await synthesize_remote(
        "Hey you",
        engine="elevenlabs",
        voice="voice123",
        out_path=tmp_path / "e.wav",
        http=http,
        api_key="xi-test",
        base_url="http://elevenlabs.test",
    )

    path, headers, payload, query = fake_api.requests[0]
    assert path == "/v1/text-to-speech/voice123/with-timestamps"
    assert headers["xi-api-key"] == "xi-test"
    assert query == {"output_format": "pcm_24000"}
    assert payload == {"text": "Hey you", "model_id": "eleven_multilingual_v2"}
    assert speech.words == (
        WordTiming("Hey", 0.1, pytest.approx(0.1 + 0.4 * 2 / 7 + 0.05)),  # type: ignore[arg-type]
        WordTiming("you", 0.9, pytest.approx(0.95)),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("status", "error"), [(401, PermanentProviderError), (429, TransientProviderError)]
)
@pytest.mark.parametrize("engine", ["openai", "elevenlabs"])
async def test_remote_errors_are_classified(
    tmp_path: Path,
    fake_api: FakeSpeechApi,
    http: httpx.AsyncClient,
    engine: str,
    status: int,
    error: type[Exception],
) -> None:
    fake_api.status = status

    with pytest.raises(error) as caught:
        await synthesize_remote(
            "Hi.",
            engine=engine,  # type: ignore[arg-type]
            voice="v",
            out_path=tmp_path / "x.wav",
            http=http,
            api_key="k",
            base_url="http://fake.test",
        )
    assert "nope" in str(caught.value)
    if status == 429:
        assert isinstance(caught.value, TransientProviderError)
        assert caught.value.retry_after_s == 7.0


# --- Captions burnt onto a vertical video ---------------------------------------------


def test_captions_burn_onto_a_vertical_video(piper_speech: Speech, tmp_path: Path) -> None:
    assert piper_speech.words is not None
    lines = group_words(piper_speech.words, max_words=3)
    style = CaptionStyle(width_px=1080, height_px=1920)
    (tmp_path / "captions.ass").write_text(to_ass(lines, style), encoding="utf-8")
    (tmp_path / "captions.srt").write_text(to_srt(lines), encoding="utf-8")
    (tmp_path / "captions.vtt").write_text(to_vtt(lines), encoding="utf-8")
    shutil.copy(piper_speech.path, tmp_path / "speech.wav")
    fonts = f":fontsdir={DEJAVU_DIR}" if DEJAVU_DIR.is_dir() else ""
    duration = f"{piper_speech.duration_s:.3f}"

    # Paths are relative to cwd so the filter graph needs no escaping.
    run_ffmpeg(
        [
            "-f", "lavfi", "-i", f"color=c=0x203040:s=1080x1920:r=15:d={duration}",
            "-i", "speech.wav",
            "-vf", f"ass=captions.ass{fonts}",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-shortest", "out.mp4",
        ],
        ffmpeg=find_ffmpeg(),
        timeout_s=60,
        cwd=tmp_path,
    )  # fmt: skip

    info = probe(tmp_path / "out.mp4")
    assert info.video is not None
    assert info.audio is not None
    assert (info.video.width, info.video.height) == (1080, 1920)
    assert info.duration_s == pytest.approx(piper_speech.duration_s, abs=0.15)

    # At the middle of the fourth word, its line is on screen with that word lit.
    word = piper_speech.words[3]
    frame = _frame_at(tmp_path / "out.mp4", (word.start_s + word.end_s) / 2)
    highlight = (frame[..., 0] > 200) & (frame[..., 1] > 170) & (frame[..., 2] < 90)
    rows = np.flatnonzero(highlight.any(axis=1))
    columns = np.flatnonzero(highlight.any(axis=0))
    assert rows.size > 20, "no highlighted word on screen"
    # Inside the safe zone: above the bottom 20 %, within the middle 80 % of the width.
    assert rows.min() > 1920 * 0.5
    assert rows.max() < 1920 * 0.8
    assert columns.min() >= 1080 * 0.1 - 8
    assert columns.max() <= 1080 * 0.9 + 8


def _frame_at(path: Path, at_s: float) -> np.ndarray:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time is not None and frame.time >= at_s:
                return np.asarray(frame.to_ndarray(format="rgb24"))
    raise AssertionError(f"no frame at {at_s} s")


def test_a_warm_up_loads_the_voice_before_the_first_words(tmp_path: Path) -> None:
    """``vidpipe short`` starts loading the voice while the database opens: the first
    speech step then finds it loaded instead of loading it (seconds of one core)."""
    require("piper")
    speech_module._load_piper.cache_clear()
    speech_module._LOADED.clear()
    assert speech_module.warm_up(engine="espeak-ng") is None  # not piper: nothing to load
    thread = speech_module.warm_up()
    assert thread is not None
    thread.join(timeout=120)
    loaded = set(speech_module._LOADED)
    assert loaded == {speech_module.DEFAULT_PIPER_VOICE}
    assert speech_module.warm_up() is None  # loaded already
    spoken = synthesize("Ready now.", out_path=tmp_path / "ready.wav", engine="auto")
    assert spoken.engine == "piper"
    assert speech_module._load_piper.cache_info().misses == 1  # loaded once, by the warm-up
