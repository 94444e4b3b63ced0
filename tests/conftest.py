"""Fixtures shared by the whole suite: the real data folder and real PostgreSQL and Redis.

Tests that need a service fail when it is missing; they never skip. Where they are:
- PROMPTEHR_SHARED_DATA: the public data folder (default: ../shared/data beside the repo).
- PROMPTEHR_TEST_POSTGRES: an admin URL used to create and drop throwaway databases.
- PROMPTEHR_TEST_REDIS: a Redis URL (a database number of its own; flushed by the tests).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = Path(os.environ.get("PROMPTEHR_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
    assert (root / "mimic3-demo" / "DIAGNOSES_ICD.csv").is_file(), (
        f"shared data not found at {root}; set PROMPTEHR_SHARED_DATA to the folder holding mimic3-demo/"
    )
    return root


def _pg_admin_url() -> str:
    return os.environ.get("PROMPTEHR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL database for the session, dropped afterwards. Yields a SQLAlchemy URL."""
    import psycopg
    from psycopg import sql

    admin = _pg_admin_url()
    name = f"promptehr_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    url = os.environ.get("PROMPTEHR_TEST_REDIS", "redis://127.0.0.1:6379/15")
    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    client.ping()  # raises when Redis is missing: the test fails, never skips
    client.close()
    return url
