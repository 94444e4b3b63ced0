"""Alembic migrations: up, down and up again on SQLite and a throwaway PostgreSQL database, and the
migrated schema equals the SQLAlchemy models."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from promptehr.service import migrate
from promptehr.service.db import make_engine
from promptehr.service.models import Base
from tests import conftest

TABLES = {"api_keys", "datasets", "training_jobs", "models", "cohorts", "cohort_shards", "cohort_patients",
          "reports", "idempotency_keys", "workers"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def fresh_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.sqlite3'}"
        return
    gen = conftest.postgres_url.__wrapped__()  # a database of its own: this test drops every table
    url = next(gen)
    yield url
    with pytest.raises(StopIteration):
        next(gen)


def _tables(engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade(fresh_url):
    engine = make_engine(fresh_url)
    try:
        assert migrate.current_revisions(engine) == set()
        with pytest.raises(migrate.SchemaOutOfDate, match="promptehr db upgrade"):
            migrate.check_schema_current(engine)

        migrate.upgrade(fresh_url)
        assert _tables(engine) == TABLES
        migrate.check_schema_current(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []

        migrate.downgrade(fresh_url, "base")
        assert _tables(engine) == set()
        assert migrate.current_revisions(engine) == set()

        migrate.upgrade(fresh_url)
        assert migrate.current_revisions(engine) == migrate.head_revisions()
    finally:
        engine.dispose()


def test_patients_use_jsonb_on_postgresql(postgres_url):
    # postgres_url is the suite's shared database; only read its schema after migrating it
    migrate.upgrade(postgres_url)
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            kind = conn.execute(sa.text(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'cohort_patients' AND column_name = 'patient'")).scalar_one()
        assert kind == "jsonb"
    finally:
        engine.dispose()
