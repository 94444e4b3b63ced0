"""A throwaway migrated PostgreSQL database of a test's own, made through the admin URL
(tests.support.pg_admin_url)."""
from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql

from promptehr.service.migrate import upgrade
from tests.support import pg_admin_url


@contextlib.contextmanager
def throwaway_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database of its own (so no other test's jobs are in it)."""
    admin = pg_admin_url()
    name = f"promptehr_worker_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{admin.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
