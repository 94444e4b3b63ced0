"""Alembic from Python: upgrade, downgrade, current revision, and the start-up schema check."""
from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"


class SchemaOutOfDate(RuntimeError):
    """The database is not at the latest migration."""


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def check_schema_current(engine: sa.Engine) -> None:
    """Raise SchemaOutOfDate unless the database is at the latest migration."""
    current, heads = current_revisions(engine), head_revisions()
    if current != heads:
        have = ", ".join(sorted(current)) or "empty (no migrations applied)"
        raise SchemaOutOfDate(
            f"the database schema is {have}, the latest migration is {', '.join(sorted(heads))}: "
            "run `promptehr db upgrade`"
        )
