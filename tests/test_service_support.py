"""Fixtures for the service tests (imported by the test_service_* modules; holds no tests itself).

Each database (PostgreSQL from the `postgres_url` fixture, and a SQLite file) is migrated with Alembic
once per session. A test runs in a transaction that is rolled back at its end; the app's sessions
join it through savepoints (join_transaction_mode="create_savepoint"), so store functions that commit
only release a savepoint.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

DIALECTS = ["postgresql", "sqlite"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pg_migrated_url(postgres_url) -> str:
    from service.migrate import upgrade

    upgrade(postgres_url)
    return postgres_url


@pytest.fixture(scope="session")
def sqlite_migrated_url(tmp_path_factory) -> str:
    from service.migrate import upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('service-db') / 'test.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session", params=DIALECTS)
def db_url(request) -> str:
    name = "pg_migrated_url" if request.param == "postgresql" else "sqlite_migrated_url"
    return request.getfixturevalue(name)


@pytest.fixture(scope="session")
def engines():
    from service.db import make_engine

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
    from service.settings import Settings

    def make(**overrides):
        values = {"database_url": db_url, "promptehr_home": tmp_path / "home", "data_root": tmp_path / "data"}
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def client_for(session, settings_for):
    """client_for(**settings) -> a TestClient on a fresh app whose sessions join the test transaction."""
    from service.app import create_app
    from service.db import get_session

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
def client(client_for, shared_data) -> TestClient:
    return client_for(data_root=shared_data)


@pytest.fixture
def auth(session) -> dict[str, str]:
    from service import store
    from service.auth import generate_key, hash_key

    key = generate_key()
    store.create_api_key(session, name="test", key_hash=hash_key(key), prefix=key[:10])
    return {"X-API-Key": key}


def assert_problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and body["title"]
    assert "Traceback" not in response.text
    if field is not None:
        fields = [e["field"] for e in body.get("errors", [])]
        assert any(f == field or f.startswith(field + ".") for f in fields), fields
    return body


def make_model(session, name: str = "m") -> str:
    """A dataset and a trained model row (no checkpoint), as a training job would leave them."""
    from service import store

    ds = store.create_dataset(session, name="d", format="mimic3", path="mimic3-demo", stats={"patients": 100})
    model = store.create_model(
        session, name=name, dataset_id=ds.id, checkpoint_path="/nowhere", manifest_sha256="0" * 64,
        config={"preset": "tiny"}, metrics={},
    )
    return model.id


def fake_patients(n: int, start: int = 0) -> list[dict]:
    return [
        {"patient_id": f"s{start + i}", "age": 40.0 + (start + i) % 50, "sex": "F" if i % 2 else "M",
         "visits": [["4019", "25000"], ["V5861"]] if i % 3 else [["E8889"]]}
        for i in range(n)
    ]
