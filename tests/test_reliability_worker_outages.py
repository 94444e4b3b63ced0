"""Outages seen from the worker's side: a private PostgreSQL stopped while a Celery worker trains, and
a private Redis that comes back empty while a job waits in it. Sweeps run every 6 s
(PROMPTEHR_JOB_STALE_AFTER_SECONDS=12).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from tests.support.reliability import (
    Api,
    Process,
    app_env,
    create_api_key,
    migrated,
    private_postgres,
    private_redis,
    spawn_celery_worker,
    start_api,
    wait_until,
)

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(400)]

TRAINING = {"preset": "tiny", "mode": "hierarchical", "epochs": 5, "seed": 0, "batch_size": 40,
            "early_stopping_patience": 100}


@dataclass
class Stack:
    pg: object
    redis: object
    env: dict
    api: Api
    dataset_id: str
    engine: sa.Engine
    root: object
    worker: Process | None = None


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("reliability-worker-outages")
    data = root / "data"
    (data / "mimic3").mkdir(parents=True)
    for name in ("PATIENTS.csv", "ADMISSIONS.csv", "DIAGNOSES_ICD.csv"):
        shutil.copyfile(shared_data / "mimic3-demo" / name, data / "mimic3" / name)
    with private_postgres() as pg, private_redis() as rd:
        db = migrated(pg.create_database("worker_outages"))
        env = app_env(home=root / "home", data_root=data, database_url=db, broker_url=rd.url,
                      PROMPTEHR_JOB_STALE_AFTER_SECONDS="12")
        key = create_api_key(env)
        proc, base = start_api(env, root / "api.log")
        api = Api(base, key)
        dataset_id = api.post("/datasets", {"name": "demo", "format": "mimic3", "path": "mimic3"}, 201)["id"]
        engine = sa.create_engine(db, pool_pre_ping=True)
        s = Stack(pg, rd, env, api, dataset_id, engine, root)
        try:
            yield s
        finally:
            api.close()
            proc.stop()
            if s.worker is not None:
                s.worker.stop()
            engine.dispose()


@pytest.fixture(scope="module")
def lost_message(stack):
    """A training job is accepted while no worker runs; Redis then restarts empty (its message is
    gone; the row still says queued); then a worker starts. Where does the job end up?"""
    job = stack.api.post("/training-jobs", {**TRAINING, "epochs": 1, "dataset_id": stack.dataset_id}, 202)
    stack.redis.stop()
    stack.redis.start()
    stack.worker = spawn_celery_worker(stack.env, stack.root / "worker.log", "w")
    stack.worker.wait_for_log(" ready.", timeout=180)
    deadline = time.monotonic() + 20  # three sweeps
    while time.monotonic() < deadline:
        body = stack.api.get(f"/training-jobs/{job['id']}").json()
        if body["status"] != "queued":
            break
        time.sleep(0.5)
    return stack.api.poll(f"/training-jobs/{job['id']}", timeout=120)[0] if body["status"] != "queued" else body


def test_a_queued_job_whose_message_redis_lost_still_runs(lost_message):
    assert lost_message["status"] == "succeeded", lost_message


def test_postgres_down_while_a_worker_trains_the_job_still_finishes(stack, lost_message):
    from promptehr.service.models import Model

    job = stack.api.post("/training-jobs", {**TRAINING, "dataset_id": stack.dataset_id}, 202)
    stack.api.poll(f"/training-jobs/{job['id']}", until=("running",), timeout=180, interval=0.1)
    wait_until(lambda: (stack.api.get(f"/training-jobs/{job['id']}").json()["progress"].get("unit") == "steps"),
               timeout=120, interval=0.1, what="training steps")
    t0 = time.monotonic()
    stack.pg.stop()
    time.sleep(5)
    stack.pg.start()
    final, _ = stack.api.poll(f"/training-jobs/{job['id']}", timeout=180, interval=0.3)
    print(f"\nPostgreSQL down 5 s mid-training: the job ended {final['status']} "
          f"{time.monotonic() - t0:.1f} s after the outage began")
    assert final["status"] == "succeeded", final
    with stack.engine.connect() as conn:
        models = conn.scalar(sa.select(sa.func.count()).select_from(Model.__table__)
                             .where(Model.__table__.c.training_job_id == job["id"]))
    assert models == 1
    assert stack.worker.proc.poll() is None  # the worker process rode it out
