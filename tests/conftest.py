"""Fixtures shared by the whole suite, and the `services` marker set from what a test uses.

Where the suite's outside pieces are (tests that need one fail when it is missing; they never skip):
- PROMPTEHR_SHARED_DATA: the public data folder (default: ../shared/data beside the repo).
- PROMPTEHR_TEST_POSTGRES: an admin URL used to create and drop throwaway databases.
- PROMPTEHR_TEST_REDIS: a Redis URL (a database number of its own; flushed by the tests).

The service fixtures (db_url ... auth) serve the in-process API and store tests: each database
(PostgreSQL from `postgres_url`, and a SQLite file) is migrated with Alembic once per session; a test
runs in a transaction that is rolled back at its end, and the app's sessions join it through
savepoints (join_transaction_mode="create_savepoint"), so store functions that commit only release
a savepoint. Helpers that are not fixtures are in tests/support/.

The service stack is imported inside the fixtures, not at the top: fastapi, SQLAlchemy, alembic,
psycopg and redis take 2.5-4 s to import here (measured under load), which a run of the model tests
alone need not pay.
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support import REPO, pg_admin_url

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

DIALECTS = ["postgresql", "sqlite"]  # the databases every store and API test runs on (db_url)

# ---- markers

# Fixtures that reach the real PostgreSQL or Redis (db_url reaches PostgreSQL only in its "postgresql"
# parameter; see needs_services).
SERVICE_FIXTURES = {"postgres_url", "redis_url", "pg_migrated_url"}
# Helpers of tests/support/ that start PostgreSQL, Redis, the API or a Celery worker: a test module
# that imports one is marked as a whole.
SERVICE_HELPERS = {"throwaway_database", "start_api", "start_celery_worker", "spawn_celery_worker",
                   "private_postgres", "private_redis", "PrivatePostgres", "PrivateRedis"}


def starts_services(module) -> bool:
    return any(getattr(value, "__qualname__", None) in SERVICE_HELPERS
               and str(getattr(value, "__module__", "")).startswith("tests.support.")
               for value in vars(module).values())


def needs_services(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return (bool(SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())))
            or (callspec is not None and callspec.params.get("db_url") == "postgresql")
            or (getattr(item, "module", None) is not None and starts_services(item.module)))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by markers
def pytest_collection_modifyitems(config, items):
    for item in items:
        if needs_services(item):
            item.add_marker(pytest.mark.services)


# ---- data, the demo's download server, threads

@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = Path(os.environ.get("PROMPTEHR_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
    assert (root / "mimic3-demo" / "DIAGNOSES_ICD.csv").is_file(), (
        f"shared data not found at {root}; set PROMPTEHR_SHARED_DATA to the folder holding mimic3-demo/"
    )
    return root


@pytest.fixture()
def demo_server(shared_data, tmp_path):
    """A local HTTP server over a copy of the MIMIC-III demo: (download URL, served folder, paths requested)."""
    root = tmp_path / "www"
    shutil.copytree(shared_data / "mimic3-demo", root)
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/files/", root, requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module (requested with pytest.mark.usefixtures, or by a module fixture
    that trains): tiny models gain nothing from threads, and on 2 shared cores OpenMP threads spinning
    on an oversubscribed CPU make them 20-40x slower (measured under load)."""
    import torch  # here, not at the top: 3-4 s to import (measured), which the service tests need not pay

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- PostgreSQL and Redis

@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL database for the session, dropped afterwards. Yields a SQLAlchemy URL."""
    import psycopg
    from psycopg import sql

    admin = pg_admin_url()
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


# ---- the service's databases, sessions and app

@pytest.fixture(scope="session")
def pg_migrated_url(postgres_url) -> str:
    from promptehr.service.migrate import upgrade

    upgrade(postgres_url)
    return postgres_url


@pytest.fixture(scope="session")
def sqlite_migrated_url(tmp_path_factory) -> str:
    from promptehr.service.migrate import upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('service-db') / 'test.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session", params=DIALECTS)
def db_url(request) -> str:
    name = "pg_migrated_url" if request.param == "postgresql" else "sqlite_migrated_url"
    return request.getfixturevalue(name)


@pytest.fixture(scope="session")
def engines():
    from promptehr.service.db import make_engine

    made: dict = {}

    def get(url: str):
        if url not in made:
            made[url] = make_engine(url)
        return made[url]

    yield get
    for e in made.values():
        e.dispose()


@pytest.fixture
def engine(db_url, engines):
    return engines(db_url)


@pytest.fixture
def session(engine) -> Iterator[Session]:
    from sqlalchemy.orm import Session

    connection = engine.connect()
    outer = connection.begin()
    s = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield s
    finally:
        s.close()
        outer.rollback()
        connection.close()


@pytest.fixture
def settings_for(db_url, tmp_path):
    from promptehr.service.settings import Settings

    def make(**overrides):
        values = {"database_url": db_url, "promptehr_home": tmp_path / "home", "data_root": tmp_path / "data"}
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def runner():
    """The service's local runner replaced by one that records the (task name, job id) it is handed."""
    from promptehr.service import jobs

    calls: list[tuple[str, str]] = []
    jobs.set_local_runner(lambda name, job_id: calls.append((name, job_id)))
    yield calls
    jobs.set_local_runner(None)


@pytest.fixture
def client_for(session, settings_for):
    """client_for(**settings) -> a TestClient on a fresh app whose sessions join the test transaction."""
    from fastapi.testclient import TestClient

    from promptehr.service.app import create_app
    from promptehr.service.db import get_session

    clients = []

    def make(**overrides) -> TestClient:
        app = create_app(settings_for(**overrides))

        def test_session():
            yield session

        app.dependency_overrides[get_session] = test_session
        c = TestClient(app, raise_server_exceptions=False)
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(client_for, shared_data):
    return client_for(data_root=shared_data)


@pytest.fixture
def auth(session) -> dict[str, str]:
    """An admin key (tenant "test"): the service tests make rows through the store, which belong to
    no tenant, and only an admin key sees those. What a tenant's key sees is
    tests/test_hardening_tenants.py's (its keys come from `tenant_key`)."""
    return tenant_key(session, "test", admin=True)


def tenant_key(session, tenant: str, *, admin: bool = False, **fields) -> dict[str, str]:
    """Headers with a new API key of `tenant` (fields: expires_at, name, ...) for the app clients."""
    from promptehr.service import store
    from promptehr.service.auth import generate_key, hash_key

    key = generate_key()
    store.create_api_key(session, name=fields.pop("name", tenant), key_hash=hash_key(key), prefix=key[:10],
                         tenant=tenant, is_admin=admin, **fields)
    return {"X-API-Key": key}
