"""The API through database and broker outages (issue 7), on a private PostgreSQL and a private Redis
that the test stops and starts (the machine's shared servers are never touched).

- PostgreSQL down: every request that needs it answers 503 problem+json (with Retry-After), /readyz
  says which dependency is missing, /healthz still answers; an API started during the outage comes
  up anyway. PostgreSQL back: the same API processes answer again, without a restart.
- Redis down: a POST that must enqueue answers 503 problem+json (and the job row says why it
  failed); reads still work. Redis back (empty, as after a restart without persistence): the next
  POST is enqueued and its message is in the broker.
"""
from __future__ import annotations

import time

import pytest

from tests.support.reliability import (
    Api,
    app_env,
    create_api_key,
    is_problem,
    migrated,
    private_postgres,
    private_redis,
    start_api,
)

# slow: the module fixture starts a private PostgreSQL, Redis and the API (11 s under load)
pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def outage(tmp_path_factory, shared_data):
    home = tmp_path_factory.mktemp("reliability-outages")
    with private_postgres() as pg, private_redis() as rd:
        db = migrated(pg.create_database("outages"))
        env = app_env(home=home, data_root=shared_data, database_url=db, broker_url=rd.url)
        key = create_api_key(env)
        proc, base = start_api(env, home / "api.log")
        api = Api(base, key)
        dataset = api.post("/datasets", {"name": "demo", "format": "mimic3", "path": "mimic3-demo"}, 201)
        started = [proc]
        try:
            yield {"pg": pg, "redis": rd, "env": env, "api": api, "dataset": dataset, "home": home,
                   "started": started, "key": key}
        finally:
            api.close()
            for p in started:
                p.stop()


def _training(dataset_id: str) -> dict:
    return {"dataset_id": dataset_id, "preset": "tiny", "epochs": 1}


def test_postgres_down_is_503_and_the_api_recovers_without_a_restart(outage):
    api, pg, dataset = outage["api"], outage["pg"], outage["dataset"]
    c = api.client
    assert c.get(f"/datasets/{dataset['id']}").status_code == 200
    pg.stop()
    try:
        t0 = time.monotonic()
        requests = [
            c.get(f"/datasets/{dataset['id']}"),
            c.get("/cohorts"),
            c.get("/models"),
            c.get("/reports/whatever"),
            c.post("/training-jobs", json=_training(dataset["id"])),
            c.post("/cohorts", json={"model_id": "m", "n_patients": 3, "age": {"distribution": "fixed", "value": 40},
                                     "sex": {"female": 0.5}}),
        ]
        elapsed = time.monotonic() - t0
        for r in requests:
            body = is_problem(r, 503)
            assert body["type"].endswith("/database-unavailable") and r.headers.get("retry-after"), body
        assert elapsed < 30, f"503s took {elapsed:.1f} s: they must fail fast"
        print(f"\nPostgreSQL down: {len(requests)} requests answered 503 in {elapsed:.2f} s")
        ready = c.get("/readyz")
        assert is_problem(ready, 503)["checks"]["database"].startswith("unreachable"), ready.text
        assert c.get("/healthz").status_code == 200
        # An API process started while the database is down comes up and says it is not ready.
        _late, late_base = _start_api_during_outage(outage)
        late_client = Api(late_base, outage["key"])
        assert is_problem(late_client.client.get("/readyz"), 503)["checks"]["database"].startswith("unreachable")
        assert is_problem(late_client.client.get("/cohorts"), 503)
    finally:
        pg.start()
    # Back: both processes answer, neither was restarted.
    t0 = time.monotonic()
    for client in (c, late_client.client):
        assert client.get("/readyz").status_code == 200
        assert client.get(f"/datasets/{dataset['id']}").json()["id"] == dataset["id"]
    print(f"PostgreSQL back: both API processes answered 200 within {time.monotonic() - t0:.2f} s of its start")
    job = api.post("/training-jobs", _training(dataset["id"]), 202)
    assert late_client.get(f"/training-jobs/{job['id']}").json()["status"] == "queued"
    late_client.close()


def _start_api_during_outage(outage):
    """start_api waits for /readyz 200; during an outage wait for /healthz instead."""
    import httpx

    from tests.support.reliability import Process, free_port, wait_until
    from tests.support.worker import PYTHON

    port = free_port()
    proc = Process([PYTHON, "-m", "uvicorn", "--factory", "promptehr.service.app:create_app", "--host", "127.0.0.1",
                    "--port", str(port), "--log-level", "warning"], outage["env"], outage["home"] / "api-late.log")
    outage["started"].append(proc)
    base = f"http://127.0.0.1:{port}"

    def up():
        assert proc.proc.poll() is None, proc.log()[-3000:]
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, timeout=90, what="API started during the outage")
    return proc, base


def test_redis_down_is_503_on_enqueue_and_works_again_after(outage):
    import redis

    api, rd, dataset = outage["api"], outage["redis"], outage["dataset"]
    c = api.client
    rd.stop()
    try:
        t0 = time.monotonic()
        refused = c.post("/training-jobs", json=_training(dataset["id"]))
        elapsed = time.monotonic() - t0
        body = is_problem(refused, 503)
        assert body["type"].endswith("/queue-unavailable"), body
        assert elapsed < 30, f"the 503 took {elapsed:.1f} s: it must fail fast"
        print(f"\nRedis down: POST /training-jobs answered 503 in {elapsed:.2f} s")
        # Reads do not need the broker.
        assert c.get(f"/datasets/{dataset['id']}").status_code == 200
        listed = c.get("/training-jobs", params={"limit": 500}).json()["items"]
        failed = [j for j in listed if j["status"] == "failed"]
        assert failed and "broker" in failed[-1]["error"], failed  # the row says why
        ready = c.get("/readyz")
        assert is_problem(ready, 503)["checks"]["broker"].startswith("unreachable")
    finally:
        rd.start()
    job = api.post("/training-jobs", _training(dataset["id"]), 202)
    assert job["status"] == "queued"
    client = redis.Redis.from_url(rd.url)
    try:
        assert any(job["id"].encode() in m for m in client.lrange("gpu", 0, -1))  # really enqueued
    finally:
        client.close()
    assert c.get("/readyz").status_code == 200
