"""Bring a database to the newest schema with Alembic."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from vidpipe.config import normalize_database_url
from vidpipe.errors import ConfigError
from vidpipe.store.db import Database

_SCRIPTS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    # ConfigParser treats % as interpolation; URLs may contain it (escaped passwords).
    cfg.set_main_option("sqlalchemy.url", normalize_database_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Apply every pending migration. Blocking: call it off the event loop."""
    if url.startswith(("sqlite", "sqlite+aiosqlite")):
        _ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), "head")


def _ensure_sqlite_dir(url: str) -> None:
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


async def check_schema(db: Database) -> None:
    """Refuse to run against a database that is not at the newest schema."""
    try:
        async with db.read() as conn:
            current = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    except DBAPIError:
        current = None
    head = head_revision()
    if current != head:
        raise ConfigError(
            f"the database schema is at {current or 'nothing'}, this vidpipe needs {head}: "
            "run `vidpipe migrate`",
            code="schema_outdated",
        )
