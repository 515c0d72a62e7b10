"""Shared fixtures: real SQLite files and real PostgreSQL databases, one per test.

PostgreSQL: a template database is migrated once per session, and each test gets a
fresh copy (CREATE DATABASE … TEMPLATE), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from vidpipe.config import Settings
from vidpipe.store import migrate

PG_URL = os.environ.get("VIDPIPE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_url(database: str) -> str:
    base, _, _ = PG_URL.rpartition("/")
    return f"{base}/{database}"


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    name = f"vidpipe_tmpl_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        migrate.upgrade(_pg_url(name))
        yield name
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def pg_url(pg_template: str) -> AsyncIterator[str]:
    name = f"vidpipe_t_{os.getpid()}_{secrets.token_hex(4)}"
    await _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    try:
        yield _pg_url(name)
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'vidpipe.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto's) on loopback, for the whole session."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def make_settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    def factory(database_url: str | None = None, **overrides: object) -> Settings:
        return Settings(
            home=tmp_path / "home",
            database_url=database_url,
            **overrides,  # type: ignore[arg-type]
        )

    return factory
