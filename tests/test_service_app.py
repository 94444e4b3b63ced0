"""The app as a whole: start-up schema check, no torch, database and broker outages, real broker."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
import redis
from fastapi.testclient import TestClient

from promptehr.service.app import create_app
from promptehr.service.migrate import SchemaOutOfDate
from promptehr.service.settings import Settings
from tests.support import REPO
from tests.support.service import assert_problem

UNREACHABLE_PG = "postgresql+psycopg://postgres@127.0.0.1:1/promptehr?connect_timeout=2"


def test_importing_and_serving_the_app_does_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from service.app import create_app\n"
        "from service.settings import Settings\n"
        "import service.store, service.jobs, service.export, cli.serve, cli.db, cli.apikey\n"
        f"app = create_app(Settings(promptehr_home={str(tmp_path)!r}))\n"
        "c = TestClient(app)\n"
        "assert c.get('/healthz').status_code == 200\n"
        "assert c.get('/datasets').status_code == 401\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'worker'))\n"
        "assert not heavy, heavy\n"
        "print('clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and "clean" in out.stdout, out.stderr


def test_the_app_refuses_to_start_on_an_old_schema(tmp_path):
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'new.sqlite3'}", promptehr_home=tmp_path))
    with pytest.raises(SchemaOutOfDate, match="promptehr db upgrade"), TestClient(app):
        pass


def test_database_down_is_503_not_500(tmp_path, session):
    from promptehr.service import store
    from promptehr.service.auth import generate_key, hash_key

    key = generate_key()
    store.create_api_key(session, name="t", key_hash=hash_key(key), prefix=key[:10])
    app = create_app(Settings(database_url=UNREACHABLE_PG, promptehr_home=tmp_path))
    with TestClient(app, raise_server_exceptions=False) as client:  # starts: /readyz tells
        assert client.get("/healthz").status_code == 200
        body = assert_problem(client.get("/readyz"), 503)
        assert "database" in body["detail"]
        r = client.get("/datasets", headers={"X-API-Key": key})
        assert_problem(r, 503)
        assert r.headers["retry-after"]
        assert_problem(client.post("/training-jobs", json={"dataset_id": "x", "epochs": 1},
                                   headers={"X-API-Key": key}), 503)


def test_jobs_go_to_the_broker_by_task_name(client_for, auth, session, redis_url):
    from promptehr.service import store

    queue = f"test-gpu-{uuid.uuid4().hex[:8]}"
    client = client_for(celery_broker_url=redis_url, celery_queue=queue)
    assert client.get("/readyz").json()["checks"]["broker"] == "ok"
    ds = store.create_dataset(session, name="d", format="mimic3", path="mimic3-demo", stats={})
    job = client.post("/training-jobs", json={"dataset_id": ds.id, "epochs": 1}, headers=auth).json()
    r = redis.Redis.from_url(redis_url)
    try:
        raw = r.lpop(queue)
        assert raw is not None
        message = json.loads(raw)
        assert message["headers"]["task"] == "promptehr.train"
        assert message["headers"]["argsrepr"] in (repr([job["id"]]), repr((job["id"],)))
        assert r.llen(queue) == 0
    finally:
        r.delete(queue)
        r.close()


def test_broker_down(client_for, auth, session):
    from promptehr.service import store

    client = client_for(celery_broker_url="redis://127.0.0.1:1/0")
    body = assert_problem(client.get("/readyz"), 503)
    assert body["checks"]["broker"].startswith("unreachable")
    ds = store.create_dataset(session, name="d", format="mimic3", path="mimic3-demo", stats={})
    assert_problem(client.post("/training-jobs", json={"dataset_id": ds.id, "epochs": 1}, headers=auth), 503)
    jobs = store.list_training_jobs(session, limit=10)
    assert [(j.status, j.error) for j in jobs] == [("failed", "could not reach the job broker: OperationalError")]
