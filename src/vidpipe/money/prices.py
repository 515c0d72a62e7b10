"""Looking up a model's price: admin overrides in the database, then the book."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from vidpipe.money.catalog import Price, PriceBook
from vidpipe.store.schema import price_overrides


async def price_for(conn: AsyncConnection, book: PriceBook, model_ref: str) -> Price | None:
    row = await conn.scalar(
        select(price_overrides.c.price).where(price_overrides.c.model == model_ref)
    )
    if row is not None:
        return Price.model_validate(row)
    return book.price(model_ref)


async def all_prices(conn: AsyncConnection, book: PriceBook) -> dict[str, Price]:
    prices = book.known()
    for model, price in await conn.execute(
        select(price_overrides.c.model, price_overrides.c.price)
    ):
        prices[str(model)] = Price.model_validate(price)
    return prices
