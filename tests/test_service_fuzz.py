"""Property-based requests from the OpenAPI document (schemathesis): whatever the body, the API never
answers 5xx, and every error is application/problem+json."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings

from promptehr.service import store
from promptehr.service.app import create_app
from promptehr.service.auth import generate_key, hash_key
from promptehr.service.migrate import upgrade
from promptehr.service.settings import Settings


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory, shared_data):
    home = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{home / 'fuzz.sqlite3'}"
    upgrade(url)
    app = create_app(Settings(database_url=url, promptehr_home=home, data_root=shared_data))
    with app.state.sessionmaker() as s:
        key = generate_key()
        store.create_api_key(s, name="fuzz", key_hash=hash_key(key), prefix=key[:10])
    app.state.fuzz_key = key
    yield app
    app.state.engine.dispose()


def _check(case, key: str) -> None:
    case.headers = {**(case.headers or {}), "X-API-Key": key}
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
    if response.status_code >= 400:
        content_type = response.headers.get("content-type")
        content_type = content_type[0] if isinstance(content_type, list) else content_type
        assert content_type.startswith("application/problem+json"), (case.path, response.status_code, content_type)


def test_no_5xx_and_errors_are_problems(fuzz_app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    for operation in operations:

        @given(case=operation.as_strategy())
        @hsettings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            _check(case, fuzz_app.state.fuzz_key)

        run()

