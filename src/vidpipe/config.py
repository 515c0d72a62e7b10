"""Typed settings, each read from a ``VIDPIPE_…`` environment variable.

Settings are built explicitly (``Settings()``) by the entry points, never at import
time, and validated at start-up: unsafe combinations are refused there.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vidpipe.errors import ConfigError
from vidpipe.money.catalog import Price
from vidpipe.notify.channels import AlertChannel

DEFAULT_MODEL = "local/procedural"


class AliasTarget(BaseModel):
    model: str
    weight: float = Field(default=1.0, gt=0)


class RetryPolicySetting(BaseModel):
    """Overrides of the retry policy for one provider (see core/retry.py)."""

    model_config = {"extra": "forbid"}

    transient_delays_s: list[float] | None = Field(default=None, max_length=20)
    generation_resubmits: int | None = Field(default=None, ge=0, le=10)
    quality_regenerations: int | None = Field(default=None, ge=0, le=10)
    resubmit_delay_s: float | None = Field(default=None, ge=0)
    jitter: float | None = Field(default=None, ge=0, le=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIDPIPE_", extra="ignore")

    home: Path = Field(
        default_factory=lambda: Path.cwd() / ".vidpipe",
        description="Directory of the embedded database, stored files and local renders.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default SQLite at $VIDPIPE_HOME/vidpipe.db. "
        "postgresql://… selects PostgreSQL (asyncpg).",
    )
    storage_dir: Path | None = Field(
        default=None, description="Local blob directory; default $VIDPIPE_HOME/blobs."
    )
    host: str = Field(default="127.0.0.1", description="Bind address of serve/api.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port of serve/api.")
    api_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes of `vidpipe api` sharing its port (one core each; "
        "they share the per-tenant rate limit).",
    )
    auth_disabled: bool = Field(
        default=False,
        description="Serve without API keys (all requests act as tenant 'default'). "
        "Allowed only on a loopback bind.",
    )
    default_model: str = Field(default=DEFAULT_MODEL, description="Model when none is given.")
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    rate_limit_per_s: float = Field(
        default=100.0, ge=0, description="Requests per second per tenant per API instance (0: off)."
    )
    rate_limit_burst: int = Field(default=200, ge=1, description="Burst above that rate.")
    max_video_seconds: int = Field(default=60, ge=1, description="Upper bound on `seconds`.")
    worker_concurrency: int = Field(
        default=16, ge=1, description="Steps one worker process executes at once."
    )
    provider_max_in_flight: dict[str, int] = Field(
        default_factory=lambda: {"local": 2},
        description='Provider jobs running at once, across all workers (JSON, e.g. {"local": 2}).',
    )
    provider_rate_per_min: dict[str, int] = Field(
        default_factory=dict,
        description="Provider job submissions per minute, across all workers (JSON, e.g. "
        '{"replicate": 600}).',
    )
    retry_policies: dict[str, RetryPolicySetting] = Field(
        default_factory=dict,
        description='Per-provider retry policy overrides (JSON, e.g. {"runway": '
        '{"transient_delays_s": [5, 10, 20], "quality_regenerations": 1}}); "*" for all.',
    )
    step_deadline_s: float = Field(
        default=900.0,
        gt=0,
        description="A step still at its provider this long after its first submission "
        "is given up: the provider job is cancelled, the next fallback model tried.",
    )
    public_url: str | None = Field(
        default=None,
        description="This server's public base URL; when set, providers that support "
        "webhooks are told to call {public_url}/v1/hooks/{provider}.",
    )
    model_aliases: dict[str, list[AliasTarget]] = Field(
        default_factory=dict,
        description='Named models routed by weight (JSON, e.g. {"default-video": '
        '[{"model": "runway/gen4_turbo", "weight": 90}, {"model": "luma/ray-2", '
        '"weight": 10}]}); the other targets become fallbacks.',
    )
    lease_s: float = Field(
        default=30.0, gt=1, description="A claimed step's lease; renewed by heartbeats."
    )
    idle_poll_s: float = Field(
        default=1.0, gt=0, description="Longest a worker sleeps before looking for due steps."
    )
    drain_timeout_s: float = Field(
        default=30.0, ge=0, description="On SIGTERM, how long a worker waits for running steps."
    )
    validation_mode: Literal["full", "basic"] = Field(
        default="full",
        description="full: one decode pass with black, freeze, silence and loudness "
        "checks; basic: headers only (resolution, duration, playable).",
    )
    validation_policy: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the validation thresholds (JSON; names in "
        'media/policy.py, e.g. {"min_size_bytes": 100000, "max_black_fraction": 0.1}).',
    )
    content_safety_hook: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function called on every output after validation, with the "
        "file and the request; a returned reason refuses it (off by default).",
    )
    analysis_timeout_s: float = Field(
        default=600.0, gt=0, description="Longest full analysis of one output."
    )
    derivatives: bool = Field(
        default=True,
        description="Make a thumbnail, poster and animated preview of every video "
        "(sprite sheets and HLS when a request asks).",
    )
    duration_tolerance: float = Field(
        default=0.10, ge=0, le=1, description="Accepted relative deviation of output duration."
    )
    idempotency_ttl_s: float = Field(
        default=48 * 3600, ge=24 * 3600, description="How long Idempotency-Keys are remembered."
    )
    max_output_bytes: int = Field(
        default=2 * 1024**3, ge=1024, description="Largest provider output downloaded."
    )
    ffmpeg: str | None = Field(
        default=None, description="Path of ffmpeg; default: system ffmpeg, else imageio-ffmpeg's."
    )
    instant_provider: bool = Field(
        default=False,
        description="Offer the `instant/test` provider (tests and benchmarks only).",
    )
    instant_latency_s: float = Field(default=0.0, ge=0, description="`instant` job duration.")
    instant_call_delay_s: float = Field(
        default=0.0, ge=0, description="`instant` time per API call (simulated round trip)."
    )
    instant_log_calls: bool = Field(
        default=True,
        description="`instant` appends every call to its `calls.log` (what tests count).",
    )
    local_min_latency_s: float = Field(
        default=0.0, ge=0, description="Least time a local-provider job takes (simulated latency)."
    )

    # -- plans and shorts: steps vidpipe runs itself ------------------------------------
    local_steps_max_parallel: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Plan steps run by vidpipe itself (speech, compose...) at once, "
        "across workers.",
    )
    compose_parallel: int = Field(
        default=2, ge=1, le=32, description="ffmpeg processes one compose step runs at once."
    )
    compose_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = (
        Field(
            default="veryfast",
            description="x264 preset of composed videos: faster presets trade file size for time.",
        )
    )
    music_dir: Path | None = Field(
        default=None, description="Folder of music beds that shorts may name (source=library)."
    )
    openai_api_key: SecretStr | None = Field(
        default=None, description="OpenAI key, for the openai speech engine."
    )
    elevenlabs_api_key: SecretStr | None = Field(
        default=None, description="ElevenLabs key, for the elevenlabs speech engine."
    )

    moderation_blocklist: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Refused words or regular expressions by category (JSON, e.g. "
        '{"violence": ["behead\\w*"]}); checked on prompts before anything is created.',
    )
    moderation_url: str | None = Field(
        default=None, description="An OpenAI-compatible moderation endpoint to ask as well."
    )
    moderation_api_key: SecretStr | None = Field(default=None, description="Its key.")
    moderation_fail_open: bool = Field(
        default=False,
        description="Accept requests when the moderation endpoint is down (default: 503).",
    )
    prices: dict[str, Price] = Field(
        default_factory=dict,
        description='Prices by model, over the shipped catalog (JSON, e.g. {"luma/ray-flash-2": '
        '{"unit": "second", "usd": 0.04}}).',
    )
    alert_channels: list[AlertChannel] = Field(
        default_factory=list,
        description='Where alerts go (JSON, e.g. [{"kind": "slack", "url": "https://hooks..."}]; '
        "kinds slack, discord, webhook).",
    )
    retention_days: int = Field(
        default=30,
        ge=1,
        description="Days a completed video's files are kept (per tenant overridable); "
        "then they are deleted and the job becomes `expired`.",
    )

    # -- storage and outbound requests ------------------------------------------
    storage_backend: Literal["local", "s3"] = Field(
        default="local", description="Where outputs are stored: local directory or S3."
    )
    s3_bucket: str | None = Field(default=None, description="S3 bucket (backend s3).")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, R2); unset for AWS."
    )
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    s3_access_key_id: SecretStr | None = Field(default=None, description="S3 access key id.")
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="S3 secret access key."
    )
    s3_prefix: str = Field(default="", description="Key prefix inside the bucket.")
    cdn_base_url: str | None = Field(
        default=None, description="Public base URL that serves the bucket (a CDN)."
    )
    signing_secret: SecretStr | None = Field(
        default=None,
        description="Secret (16+ bytes) that signs expiring URLs of locally stored files.",
    )
    signed_url_ttl_s: int = Field(
        default=3600, ge=1, le=7 * 86400, description="Lifetime of signed content URLs."
    )
    url_allowlist: str = Field(
        default="",
        description="Hosts and CIDRs that outbound requests may reach although private "
        "(comma-separated, e.g. `minio.internal, 10.1.0.0/16`).",
    )
    fetch_timeout_s: float = Field(
        default=600.0, gt=0, description="Longest download of one provider output."
    )

    # -- provenance: C2PA and the visible watermark --------------------------------
    c2pa_cert_path: Path | None = Field(
        default=None,
        description="PEM certificate chain (signing certificate first, then its "
        "intermediates) with which a C2PA manifest is signed into every delivered video; "
        "set with VIDPIPE_C2PA_KEY_PATH. Unset: no C2PA.",
    )
    c2pa_key_path: Path | None = Field(
        default=None, description="PEM private key (PKCS#8) of that certificate."
    )
    c2pa_alg: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = Field(
        default="es256", description="C2PA signing algorithm; must match the key."
    )
    c2pa_tsa_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="RFC 3161 time-stamp authority asked at every signing (a network call "
        "from the worker); unset: no time-stamp, no network.",
    )
    watermark_text: str | None = Field(
        default=None,
        max_length=200,
        # One line of printable text: it is drawn with Pillow, never through ffmpeg's
        # filter syntax, so quotes and colons are harmless; control characters are not.
        pattern=r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$",
        description="Text drawn over every delivered video (one ffmpeg pass; off when unset).",
    )
    watermark_image: Path | None = Field(
        default=None,
        description="Image (PNG with alpha, or any Pillow reads) drawn over every delivered "
        "video, before the text when both are set.",
    )
    watermark_position: Literal[
        "top-left", "top-right", "bottom-left", "bottom-right", "center"
    ] = Field(default="bottom-right", description="Where the watermark sits.")
    watermark_opacity: float = Field(
        default=0.6, gt=0, le=1, description="Opacity of the watermark (1: opaque)."
    )
    watermark_size: float = Field(
        default=0.06,
        gt=0,
        le=0.5,
        description="Height of the watermark as a fraction of the video's shorter side.",
    )

    # -- cloud providers: each is offered when its key is set --------------------
    runway_api_key: SecretStr | None = Field(default=None, description="Runway API key.")
    runway_base_url: str = Field(
        default="https://api.dev.runwayml.com", description="Runway API base URL."
    )
    luma_api_key: SecretStr | None = Field(default=None, description="Luma API key.")
    luma_base_url: str = Field(
        default="https://api.lumalabs.ai/dream-machine/v1", description="Luma API base URL."
    )
    veo_api_key: SecretStr | None = Field(default=None, description="Gemini API key (Veo).")
    veo_base_url: str = Field(
        default="https://generativelanguage.googleapis.com", description="Gemini API base URL."
    )
    veo_webhook_secret: SecretStr | None = Field(
        default=None, description="whsec_ secret of the project webhook registered for Veo."
    )
    kling_access_key: SecretStr | None = Field(default=None, description="Kling access key.")
    kling_secret_key: SecretStr | None = Field(default=None, description="Kling secret key.")
    kling_base_url: str = Field(
        default="https://api-singapore.klingai.com", description="Kling API base URL."
    )
    replicate_api_token: SecretStr | None = Field(default=None, description="Replicate API token.")
    replicate_base_url: str = Field(
        default="https://api.replicate.com", description="Replicate API base URL."
    )
    replicate_webhook_secret: SecretStr | None = Field(
        default=None, description="Replicate's whsec_ webhook signing secret."
    )
    fal_key: SecretStr | None = Field(default=None, description="fal key (KEY_ID:KEY_SECRET).")
    fal_base_url: str = Field(default="https://queue.fal.run", description="fal queue base URL.")
    fal_webhook_public_keys: list[str] = Field(
        default_factory=list, description="fal webhook Ed25519 public keys (JWKS x values)."
    )
    minimax_api_key: SecretStr | None = Field(default=None, description="MiniMax API key.")
    minimax_base_url: str = Field(
        default="https://api.minimax.io", description="MiniMax API base URL."
    )
    simulated_config: str | None = Field(
        default=None,
        description="Offer the `simulated` provider with this JSON configuration (latency, "
        "failure rates; see providers/simulated.py). For demos, chaos and load tests.",
    )

    # -- shorts: the script writer ------------------------------------------------------
    llm_base_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="OpenAI-compatible API that writes short scripts (e.g. "
        "https://api.openai.com/v1, http://localhost:11434/v1 for Ollama); unset: the "
        "offline template scripter.",
    )
    llm_api_key: SecretStr | None = Field(
        default=None, description="Bearer key of that API (none for a local server)."
    )
    llm_model: str = Field(
        default="gpt-4o-mini", min_length=1, description="Model that writes short scripts."
    )
    llm_timeout_s: float = Field(
        default=60.0, gt=0, le=600, description="Longest wait for one script request."
    )

    @field_validator("home", "storage_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{self.home / 'vidpipe.db'}"

    @property
    def resolved_storage_dir(self) -> Path:
        return self.storage_dir or self.home / "blobs"

    @field_validator("c2pa_cert_path", "c2pa_key_path", "watermark_image")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("url_allowlist")
    @classmethod
    def _allowlist(cls, value: str) -> str:
        from vidpipe.net.url_guard import AllowList

        AllowList.parse(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("validation_policy")
    @classmethod
    def _policy(cls, value: dict[str, Any]) -> dict[str, Any]:
        from vidpipe.media.policy import ValidationPolicy

        ValidationPolicy.from_overrides(value)  # raises ValueError naming the bad key
        return value

    @model_validator(mode="after")
    def _storage(self) -> Settings:
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("VIDPIPE_S3_BUCKET is required with VIDPIPE_STORAGE_BACKEND=s3")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("set both VIDPIPE_S3_ACCESS_KEY_ID and VIDPIPE_S3_SECRET_ACCESS_KEY")
        if (self.c2pa_cert_path is None) != (self.c2pa_key_path is None):
            raise ValueError("set both VIDPIPE_C2PA_CERT_PATH and VIDPIPE_C2PA_KEY_PATH")
        return self

    def check_serving(self, host: str) -> None:
        """Refuse unsafe combinations before a server binds."""
        if self.auth_disabled and not is_loopback(host):
            raise ConfigError(
                f"VIDPIPE_AUTH_DISABLED is only allowed on a loopback bind, not {host!r}",
                code="unsafe_config",
            )


def normalize_database_url(url: str) -> str:
    """Accept plain ``postgresql://`` and ``sqlite:///`` URLs and pick the async drivers."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite:///", "sqlite+aiosqlite:///"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
