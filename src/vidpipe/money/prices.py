"""Looking up a model's price: admin overrides in the database, then the book.

The overrides are read on every estimate (each request and each attempt) and set
rarely, so they are cached for a few seconds (store/cache.py): an override set by
another process is used within that time, one set through ``set_override`` in this
process at once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.money.catalog import Price, PriceBook
from vidpipe.store import cache
from vidpipe.store.schema import price_overrides

_OVERRIDES = select(price_overrides.c.model, price_overrides.c.price)


async def _overrides(conn: AsyncConnection) -> dict[str, Price]:
    async def load() -> dict[str, Price]:
        rows = await conn.execute(_OVERRIDES)
        return {str(model): Price.model_validate(price) for model, price in rows}

    return await cache.cached(conn, "price_overrides", None, load)


async def price_for(conn: AsyncConnection, book: PriceBook, model_ref: str) -> Price | None:
    override = (await _overrides(conn)).get(model_ref)
    if override is not None:
        return override
    return book.price(model_ref)


async def set_override(
    conn: AsyncConnection, model_ref: str, price: dict[str, Any], now: float
) -> None:
    """Replace the price of ``model_ref`` (``price``: a Price as JSON)."""
    await conn.execute(price_overrides.delete().where(price_overrides.c.model == model_ref))
    await conn.execute(insert(price_overrides).values(model=model_ref, price=price, updated_at=now))
    cache.invalidate(conn, "price_overrides")


async def all_prices(conn: AsyncConnection, book: PriceBook) -> dict[str, Price]:
    prices = book.known()
    for model, price in await conn.execute(
        select(price_overrides.c.model, price_overrides.c.price)
    ):
        prices[str(model)] = Price.model_validate(price)
    return prices
