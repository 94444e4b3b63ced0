"""Alembic migrations: the only way the schema changes. Run them with `promptehr db upgrade`."""
