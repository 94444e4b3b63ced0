"""A real Celery worker process (prefork, one child) on Redis and PostgreSQL, driven over HTTP, with
the MIMIC-III demo copied into a data root of the test's own (so a file can go bad after it was
registered):

- a dataset whose file went bad fails its training job with a reason naming the file, and the same
  worker process goes on to the next job;
- a cancel request stops a running training job (status cancelled, no model);
- a queued job whose message the broker lost is sent again by the worker's sweep and runs;
- when the pool child running a training job is killed (SIGKILL, as the OOM killer would), the
  message comes back, the next child takes the job over and resumes from the last snapshot, ending
  with exactly the weights of an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from promptehr.model.nn.checkpoint import load_checkpoint
from tests.support.databases import throwaway_database
from tests.support.worker import (
    Api,
    app_env,
    create_api_key,
    delete_queue,
    pool_children,
    private_queue,
    start_api,
    start_celery_worker,
    torch_threads,
)

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(600)]  # slow: a Celery worker trains


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_data, redis_url, postgres_url):
    home = tmp_path_factory.mktemp("celery-robust")
    data = home / "data"
    for name in ("m3", "m3-bad"):
        shutil.copytree(shared_data / "mimic3-demo", data / name)
    queue = private_queue()
    with throwaway_database() as db:
        # Stale after 12 s: heartbeats every 3 s, the sweep every 6 s.
        env = app_env(home=home, data_root=data, database_url=db, broker_url=redis_url,
                      PROMPTEHR_CELERY_QUEUE=queue, PROMPTEHR_JOB_STALE_AFTER_SECONDS="12")
        worker = start_celery_worker(env, home / "worker.log")
        api_proc = None
        engine = sa.create_engine(db)
        try:
            api_proc, base = start_api(env, home / "api.log")
            api = Api(base, create_api_key(env))
            good = api.post("/datasets", {"name": "m3", "format": "mimic3", "path": "m3"}, 201)
            yield SimpleNamespace(api=api, worker=worker, home=home, data=data, engine=engine, good=good)
            api.close()
        finally:
            engine.dispose()
            if api_proc is not None:
                api_proc.stop()
            worker.stop()
            delete_queue(redis_url, queue)


def job_row(stack, job_id: str) -> dict:
    with stack.engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT * FROM training_jobs WHERE id = :id"), {"id": job_id}).mappings().one())


def test_bad_data_fails_the_job_naming_the_file_and_the_worker_takes_the_next_job(stack):
    api = stack.api
    bad = api.post("/datasets", {"name": "m3-bad", "format": "mimic3", "path": "m3-bad"}, 201)
    # The file goes bad after registration (the API checked it then).
    (stack.data / "m3-bad" / "DIAGNOSES_ICD.csv").write_text("this,is\nnot,a diagnoses table\n")
    master = stack.worker.pid
    failing = api.post("/training-jobs", {"dataset_id": bad["id"], "preset": "tiny", "epochs": 1}, 202)
    following = api.post("/training-jobs", {"dataset_id": stack.good["id"], "preset": "tiny", "epochs": 1}, 202)

    failed, _ = api.poll(f"/training-jobs/{failing['id']}", timeout=120)
    assert failed["status"] == "failed" and failed["model_id"] is None
    assert "DIAGNOSES_ICD.csv" in failed["error"] and "Traceback" not in failed["error"]

    done, _ = api.poll(f"/training-jobs/{following['id']}", timeout=300)
    assert done["status"] == "succeeded" and done["model_id"]
    assert stack.worker.proc.poll() is None and stack.worker.pid == master  # the worker lived on


def test_cancel_stops_a_running_training_job(stack):
    api = stack.api
    job = api.post("/training-jobs", {"dataset_id": stack.good["id"], "preset": "tiny", "epochs": 200,
                                      "batch_size": 4, "early_stopping_patience": 1000}, 202)
    running, _ = api.poll(f"/training-jobs/{job['id']}", until=("running", "succeeded", "failed"), interval=0.1)
    assert running["status"] == "running"
    deadline = time.monotonic() + 120
    while (now := api.get(f"/training-jobs/{job['id']}").json())["progress"]["done"] < 2:
        assert now["status"] == "running" and time.monotonic() < deadline, now
        time.sleep(0.1)
    asked = time.monotonic()
    api.post(f"/training-jobs/{job['id']}/cancel", {}, 202)
    cancelled, _ = api.poll(f"/training-jobs/{job['id']}", timeout=60, interval=0.1)
    assert cancelled["status"] == "cancelled" and cancelled["model_id"] is None
    assert time.monotonic() - asked < 30
    assert cancelled["progress"]["done"] < cancelled["progress"]["total"]
    models = api.get("/models").json()["items"]
    assert job["id"] not in {m["training_job_id"] for m in models}


def test_a_killed_worker_child_is_taken_over_and_training_resumes(stack):
    api = stack.api
    body = {"dataset_id": stack.good["id"], "preset": "tiny", "epochs": 12, "seed": 3, "batch_size": 4,
            "early_stopping_patience": 1000}
    job = api.post("/training-jobs", body, 202)
    api.poll(f"/training-jobs/{job['id']}", until=("running", "succeeded", "failed"), interval=0.1)
    checkpoint = stack.home / "models" / "training-jobs" / job["id"]
    snapshot = checkpoint.with_name(f"{job['id']}.resume") / "state.pt"
    deadline = time.monotonic() + 180
    while not snapshot.exists():  # the first epoch has ended and left its resume state
        assert time.monotonic() < deadline, "no resume snapshot"
        time.sleep(0.05)
    first = job_row(stack, job["id"])
    assert first["status"] == "running" and first["attempt"] == 1
    epoch_one = json.loads((checkpoint / "training_log.jsonl").read_text().splitlines()[0])
    child = int(first["claimed_by"].rsplit(":", 2)[1])
    assert child in pool_children(stack.worker.pid)
    os.kill(child, signal.SIGKILL)

    done, _ = api.poll(f"/training-jobs/{job['id']}", timeout=300)
    assert done["status"] == "succeeded", done
    row = job_row(stack, job["id"])
    assert row["attempt"] == 2 and row["claimed_by"] != first["claimed_by"]
    model = api.get(f"/models/{done['model_id']}").json()
    assert model["metrics"]["resumed"] is True
    log = model["metrics"]["log"]
    assert [line["epoch"] for line in log] == list(range(1, 13))
    # Epoch 1 was not run again: its log line, timing included, is the one the killed child wrote.
    assert log[0] == epoch_one
    assert stack.worker.proc.poll() is None  # the master outlived its child
    load_checkpoint(checkpoint)  # the checkpoint verifies against its manifest
    assert not snapshot.parent.exists()  # resume state removed once training finished

    # Resumed, it ends with the very weights an uninterrupted run of the same job trains.
    from promptehr.model.nn.checkpoint import sha256_of
    from promptehr.model.data import load_patients
    from promptehr.model.split import split_patients
    from promptehr.model.training.train import train
    from promptehr.worker.train_task import _train_config

    train_patients, val_patients, _ = split_patients(load_patients(stack.data / "m3", format="mimic3"), 3)
    config = _train_config(SimpleNamespace(preset="tiny", epochs=12, seed=3, mode="hierarchical",
                                           options={"batch_size": 4, "early_stopping_patience": 1000}))
    reference = stack.home / "reference"
    with torch_threads():
        train(train_patients, val_patients, config, reference, device="cpu")
    assert sha256_of(checkpoint / "model.safetensors") == sha256_of(reference / "model.safetensors")


def test_a_queued_job_whose_message_was_lost_is_sent_again_and_runs(stack):
    from datetime import timedelta

    from promptehr.service import store
    from promptehr.service.db import make_sessionmaker
    from promptehr.service.models import TrainingJob
    from promptehr.service.models.base import utcnow

    # The row as the API writes it (owned by the tenant of the stack's key, "e2e"), but its message never
    # reached the broker (or Redis lost it).
    with make_sessionmaker(stack.engine)() as session:
        job = store.create_training_job(session, dataset_id=stack.good["id"], preset="tiny", mode="hierarchical",
                                        epochs=1, seed=0, tenant="e2e")
        session.execute(sa.update(TrainingJob).where(TrainingJob.id == job.id)
                        .values(created_at=utcnow() - timedelta(minutes=1)))
        session.commit()
    t0 = time.monotonic()
    done, _ = stack.api.poll(f"/training-jobs/{job.id}", timeout=120)
    assert done["status"] == "succeeded", done
    assert time.monotonic() - t0 < 60
    assert "broker holds no message for it: sending it again" in stack.worker.log()
    assert job_row(stack, job.id)["attempt"] == 1
