"""Which providers and models exist, addressed as ``provider/model``."""

from __future__ import annotations

from collections.abc import Iterable

from vidpipe.errors import InvalidRequest
from vidpipe.providers.base import ModelInfo, Provider


class ProviderRegistry:
    def __init__(self, providers: Iterable[Provider] = ()) -> None:
        self._providers: dict[str, Provider] = {}
        for provider in providers:
            self.add(provider)

    def add(self, provider: Provider) -> None:
        self._providers[provider.name] = provider

    def get(self, name: str) -> Provider | None:
        return self._providers.get(name)

    def resolve(self, ref: str, *, param: str = "model") -> tuple[Provider, ModelInfo]:
        """``provider/model`` → the adapter and the model's capabilities."""
        provider_name, sep, model_id = ref.partition("/")
        provider = self._providers.get(provider_name) if sep else None
        model = provider.model(model_id) if provider else None
        if provider is None or model is None:
            raise InvalidRequest(
                f"unknown model {ref!r}; known: {', '.join(self.model_refs())}",
                code="unknown_model",
                param=param,
            )
        return provider, model

    def model_refs(self) -> list[str]:
        return [f"{p.name}/{m.id}" for p in self._providers.values() for m in p.models()]

    def providers(self) -> list[Provider]:
        return list(self._providers.values())
