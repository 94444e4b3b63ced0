"""The harness itself: real PostgreSQL and Redis answer, and the throwaway database is really dropped."""
import uuid

import psycopg
import pytest
import redis
import sqlalchemy as sa

from tests import conftest
from tests.support import pg_admin_url


@pytest.mark.services  # the postgres_url fixture's function, called directly
def test_postgres_throwaway_database_is_created_and_dropped():
    gen = conftest.postgres_url.__wrapped__()
    url = next(gen)
    name = url.rsplit("/", 1)[1]
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x int)"))
        conn.execute(sa.text("INSERT INTO t VALUES (41), (1)"))
        assert conn.execute(sa.text("SELECT sum(x) FROM t")).scalar_one() == 42
    engine.dispose()
    with pytest.raises(StopIteration):
        next(gen)
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert found is None


def test_redis_round_trip(redis_url):
    client = redis.Redis.from_url(redis_url)
    key = f"promptehr-test-{uuid.uuid4().hex}"
    try:
        client.set(key, "v", ex=60)
        assert client.get(key) == b"v"
    finally:
        client.delete(key)
    assert client.get(key) is None
