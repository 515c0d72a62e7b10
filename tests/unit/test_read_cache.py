"""The per-process read cache: TTL, invalidation, and loads that race an invalidation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from vidpipe.store.cache import ReadCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_value_is_kept_for_the_ttl_then_loaded_again() -> None:
    clock = Clock()
    cache = ReadCache(5.0, monotonic=clock)
    loads: list[int] = []

    async def load() -> int:
        loads.append(1)
        return len(loads)

    assert await cache.get("prices", None, load) == 1
    clock.now += 4.9
    assert await cache.get("prices", None, load) == 1
    clock.now += 0.2
    assert await cache.get("prices", None, load) == 2


async def test_keys_and_names_are_apart_and_invalidation_drops_a_whole_name() -> None:
    cache = ReadCache(5.0, monotonic=Clock())

    def const(value: str) -> Callable[[], Awaitable[str]]:
        async def load() -> str:
            return value

        return load

    assert await cache.get("tenant", "a", const("A")) == "A"
    assert await cache.get("tenant", "b", const("B")) == "B"
    assert await cache.get("other", "a", const("X")) == "X"
    assert await cache.get("tenant", "a", const("changed")) == "A"
    cache.invalidate("tenant")
    assert await cache.get("tenant", "a", const("A2")) == "A2"
    assert await cache.get("tenant", "b", const("B2")) == "B2"
    assert await cache.get("other", "a", const("X2")) == "X"


async def test_a_load_that_raced_an_invalidation_is_returned_but_not_kept() -> None:
    cache = ReadCache(5.0, monotonic=Clock())
    started = asyncio.Event()
    finish = asyncio.Event()

    async def slow_old_value() -> str:
        started.set()
        await finish.wait()
        return "old"

    async def new_value() -> str:
        return "new"

    task = asyncio.create_task(cache.get("endpoints", "t", slow_old_value))
    await started.wait()
    cache.invalidate("endpoints")  # a writer committed while the read was under way
    finish.set()
    assert await task == "old"
    assert await cache.get("endpoints", "t", new_value) == "new"
