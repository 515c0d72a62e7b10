"""Which providers this installation offers, built from its settings.

The offline providers are always there; a cloud provider is offered once its key is
set. Nothing else decides what ``GET /v1/models`` lists or a request may name.
"""

from __future__ import annotations

import httpx

from vidpipe.config import Settings
from vidpipe.media.ffmpeg import find_ffmpeg
from vidpipe.providers.base import Provider
from vidpipe.providers.fal import FalProvider
from vidpipe.providers.instant import InstantProvider
from vidpipe.providers.kling import KlingProvider
from vidpipe.providers.local import LocalProvider
from vidpipe.providers.luma import LumaProvider
from vidpipe.providers.minimax import MiniMaxProvider
from vidpipe.providers.registry import ProviderRegistry
from vidpipe.providers.replicate import ReplicateProvider
from vidpipe.providers.runway import RunwayProvider
from vidpipe.providers.simulated import SimulatedConfig, SimulatedProvider
from vidpipe.providers.veo import VeoProvider


def _secret(value: object) -> str | None:
    get = getattr(value, "get_secret_value", None)
    return str(get()) if get is not None else None


def build_registry(settings: Settings, http: httpx.AsyncClient) -> ProviderRegistry:
    ffmpeg = find_ffmpeg(settings.ffmpeg) if settings.ffmpeg else None
    providers: list[Provider] = [
        LocalProvider(
            settings.home / "local-provider",
            ffmpeg=ffmpeg,
            min_latency_s=settings.local_min_latency_s,
        )
    ]
    if settings.instant_provider:
        providers.append(
            InstantProvider(
                settings.home / "instant-provider",
                latency_s=settings.instant_latency_s,
                call_delay_s=settings.instant_call_delay_s,
                log_calls=settings.instant_log_calls,
            )
        )
    if settings.simulated_config is not None:
        providers.append(
            SimulatedProvider(
                settings.home / "simulated-provider",
                SimulatedConfig.from_json(settings.simulated_config),
                ffmpeg=ffmpeg,
            )
        )
    if key := _secret(settings.runway_api_key):
        providers.append(RunwayProvider(http, api_key=key, base_url=settings.runway_base_url))
    if key := _secret(settings.luma_api_key):
        providers.append(LumaProvider(http, api_key=key, base_url=settings.luma_base_url))
    if key := _secret(settings.veo_api_key):
        providers.append(
            VeoProvider(
                http,
                api_key=key,
                base_url=settings.veo_base_url,
                webhook_secret=_secret(settings.veo_webhook_secret),
            )
        )
    access, secret = _secret(settings.kling_access_key), _secret(settings.kling_secret_key)
    if access and secret:
        providers.append(
            KlingProvider(
                http, access_key=access, secret_key=secret, base_url=settings.kling_base_url
            )
        )
    if key := _secret(settings.replicate_api_token):
        providers.append(
            ReplicateProvider(
                http,
                api_key=key,
                base_url=settings.replicate_base_url,
                webhook_secret=_secret(settings.replicate_webhook_secret),
            )
        )
    if key := _secret(settings.fal_key):
        providers.append(
            FalProvider(
                http,
                api_key=key,
                base_url=settings.fal_base_url,
                webhook_public_keys=settings.fal_webhook_public_keys,
            )
        )
    if key := _secret(settings.minimax_api_key):
        providers.append(MiniMaxProvider(http, api_key=key, base_url=settings.minimax_base_url))
    return ProviderRegistry(providers)
