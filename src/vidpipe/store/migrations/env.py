"""Alembic environment: runs migrations through vidpipe's own async engine."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

import vidpipe.obs.schema  # noqa: F401  (registers its tables on the metadata)
from vidpipe.store.db import Database
from vidpipe.store.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    db = Database(config.get_main_option("sqlalchemy.url") or "")
    try:
        async with db.engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await db.dispose()


if context.is_offline_mode():
    raise SystemExit("vidpipe migrations run online only")
asyncio.run(_main())
