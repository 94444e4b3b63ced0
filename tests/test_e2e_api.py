"""End to end over HTTP, on both back ends, with DE-SynPUF sample 1 from the shared data folder.

Production shape: PostgreSQL, Redis, the API under uvicorn and a real Celery worker process
(`celery -A worker.celery_app worker -Q gpu -c 1`), each a subprocess started and stopped here.
Embedded default: `promptehr serve` alone (SQLite file, in-process runner), nothing else running.

The same flow on each: create an API key; register the dataset; train (tiny preset, one epoch) and
watch progress move to `succeeded`; request a 500-patient cohort (age normal(70, 10), 55% female,
seed 11) in shards of 200 and watch it finish; read the report as JSON and as HTML; the JSONL export
equals the patient pages. Then across the two: training with the same seed gives the same checkpoint
bytes, and the same cohort request the same patients and report figures.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.databases import throwaway_database
from tests.support.worker import (
    Api,
    app_env,
    create_api_key,
    delete_queue,
    private_queue,
    start_api,
    start_celery_worker,
)

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(900)]

DATASET = {"name": "desynpuf-1", "format": "desynpuf", "path": "desynpuf-sample/1-sample-10000"}
TRAINING = {"preset": "tiny", "mode": "hierarchical", "epochs": 1, "seed": 0, "batch_size": 64}
COHORT = {
    "n_patients": 500,
    "seed": 11,
    "age": {"distribution": "normal", "mean": 70, "sd": 10, "min": 18, "max": 90},
    "sex": {"female": 0.55},
    "sampling": {"temperature": 1.0, "top_p": 0.95},
}
SHARD_SIZE = "200"  # 500 patients -> shards of 200, 200, 100
REPORT_SECTIONS = ("fidelity", "validity", "privacy", "utility")


def run_flow(api: Api, home: Path, timings: dict, *, on_training_running=None) -> dict:
    t0 = time.monotonic()
    dataset = api.post("/datasets", DATASET, 201)
    assert dataset["stats"]["patients"] > 1000

    job = api.post("/training-jobs", {**TRAINING, "dataset_id": dataset["id"]}, 202)
    assert job["status"] == "queued" and job["model_id"] is None
    if on_training_running is not None:
        api.poll(f"/training-jobs/{job['id']}", until=("running", "succeeded", "failed"), interval=0.1)
        on_training_running(job["id"])
    job, progress = api.poll(f"/training-jobs/{job['id']}", timeout=600)
    assert job["status"] == "succeeded", job
    done = [p["done"] for p in progress]
    assert len(set(done)) >= 3 and done == sorted(done), progress  # progress moved, forwards
    assert progress[-1]["done"] == progress[-1]["total"] and progress[-1]["unit"] == "steps"
    timings["train_s"] = round(time.monotonic() - t0, 1)

    model = api.get(f"/models/{job['model_id']}").json()
    assert model["training_job_id"] == job["id"]
    assert model["metrics"]["log"] and model["metrics"]["status"] in ("completed", "early_stopped")
    checkpoint = home / "models" / "training-jobs" / job["id"]
    manifest = json.loads((checkpoint / "manifest.json").read_text())

    t1 = time.monotonic()
    cohort = api.post("/cohorts", {**COHORT, "model_id": model["id"]}, 202)
    assert cohort["n_shards"] == 3 and cohort["report_id"] is None
    cohort, cohort_progress = api.poll(f"/cohorts/{cohort['id']}", timeout=900)
    assert cohort["status"] == "succeeded", cohort
    assert cohort["shards_done"] == 3 and cohort["report_id"]
    assert cohort_progress[-1]["done"] == 500
    timings["cohort_s"] = round(time.monotonic() - t1, 1)

    report = api.get(f"/reports/{cohort['report_id']}").json()
    for section in REPORT_SECTIONS:
        assert report[section], section
    assert report["data"]["synthetic"]["patients"] == 500
    assert report["seeds"]["cohort"] == COHORT["seed"]
    assert "unigram_r2" in report["fidelity"] and "mia_auc" in report["privacy"]
    html = api.get(f"/reports/{cohort['report_id']}", headers={"Accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html") and "<html" in html.text[:200].lower()
    assert api.get(f"/reports/{cohort['report_id']}.html").text == html.text

    pages = api.all_patients(cohort["id"], limit=150)
    assert [p["index"] for p in pages] == list(range(500))
    # DE-SynPUF claims have from and through dates: the model learned the timeline, the patients carry it
    assert all(len(p["visit_days"]) == len(p["visits"]) == len(p["los_days"]) for p in pages)
    assert report["timeline"]["learned"] is True and report["timeline"]["measures"]["gap_ks"]["value"] is not None
    export = api.get(f"/cohorts/{cohort['id']}/export", params={"format": "jsonl"})
    exported = [json.loads(line) for line in export.text.splitlines() if line.strip()]
    assert exported == [{k: v for k, v in p.items() if k != "index"} for p in pages]  # the CLI's jsonl: no index
    ages = [p["age"] for p in pages]
    assert 60 < sum(ages) / len(ages) < 80 and all(18 <= a <= 90 for a in ages)
    assert 0.4 < sum(p["sex"] == "F" for p in pages) / 500 < 0.7
    timings["total_s"] = round(time.monotonic() - t0, 1)
    return {"job": job, "model": model, "manifest": manifest, "cohort": cohort, "patients": pages, "report": report}


@pytest.fixture(scope="module")
def celery_flow(tmp_path_factory, shared_data, redis_url, postgres_url):
    home = tmp_path_factory.mktemp("celery-home")
    timings: dict = {}
    queue = private_queue()
    with throwaway_database() as db:
        env = app_env(home=home, data_root=shared_data, database_url=db, broker_url=redis_url,
                      PROMPTEHR_COHORT_SHARD_SIZE=SHARD_SIZE, PROMPTEHR_CELERY_QUEUE=queue)
        worker = start_celery_worker(env, home / "worker.log")
        api_proc = None
        try:
            api_proc, base = start_api(env, home / "api.log")
            api = Api(base, create_api_key(env))
            duplicate: dict = {}

            def second_delivery(job_id: str) -> None:
                """The job is running in the worker: a second delivery of its message does nothing."""
                from promptehr.service import store
                from promptehr.service.settings import Settings
                from promptehr.worker.context import make_context
                from promptehr.worker.dispatch import TRAIN, run_task

                ctx = make_context(Settings(database_url=db, celery_broker_url=redis_url, promptehr_home=home,
                                            data_root=shared_data))
                try:
                    with ctx.session() as s:
                        before = store.get_training_job(s, job_id)
                    duplicate["outcome"] = run_task(TRAIN, job_id, ctx)
                    with ctx.session() as s:
                        after = store.get_training_job(s, job_id)
                    duplicate["before"] = (before.status, before.claimed_by, before.attempt)
                    duplicate["after"] = (after.status, after.claimed_by, after.attempt)
                finally:
                    ctx.close()

            result = run_flow(api, home, timings, on_training_running=second_delivery)
            result["duplicate"] = duplicate
            result["timings"] = timings
            result["worker_log"] = worker.log()
            result["home"] = home
            yield result
            api.close()
        finally:
            if api_proc is not None:
                api_proc.stop()
            worker.stop()
            delete_queue(redis_url, queue)


@pytest.fixture(scope="module")
def embedded_flow(tmp_path_factory, shared_data):
    home = tmp_path_factory.mktemp("embedded-home")
    timings: dict = {}
    env = app_env(home=home, data_root=shared_data, PROMPTEHR_COHORT_SHARD_SIZE=SHARD_SIZE)
    key = create_api_key(env)
    api_proc, base = start_api(env, home / "serve.log", embedded=True)
    try:
        api = Api(base, key)
        assert api.client.get("/readyz").json()["checks"]["broker"] == "in-process"
        result = run_flow(api, home, timings)
        result.update(timings=timings, home=home, api=api)
        yield result
        api.close()
    finally:
        api_proc.stop()


def test_postgres_redis_celery_worker(celery_flow):
    assert celery_flow["job"]["status"] == "succeeded"
    assert celery_flow["cohort"]["status"] == "succeeded"
    assert "promptehr.generate" in celery_flow["worker_log"]
    print("celery back end timings", celery_flow["timings"])


def test_second_delivery_of_a_running_job_does_nothing(celery_flow):
    dup = celery_flow["duplicate"]
    assert dup["outcome"] == "skipped"
    status, _claimed_by, attempt = dup["before"]
    assert status == "running" and attempt == 1
    assert dup["after"] == dup["before"]  # still the first worker's, not claimed again
    assert celery_flow["job"]["status"] == "succeeded"


def test_embedded_default(embedded_flow):
    assert embedded_flow["job"]["status"] == "succeeded"
    assert (embedded_flow["home"] / "promptehr.sqlite3").is_file()
    print("embedded timings", embedded_flow["timings"])


def test_same_seed_gives_the_same_model_and_the_same_cohort_on_both_back_ends(celery_flow, embedded_flow):
    """Trained with the same seed in a Celery pool child and in a thread of `promptehr serve`, the two
    checkpoints are the same bytes; the same cohort request then gives the same patients and the
    same report figures."""
    a, b = celery_flow, embedded_flow
    assert a["manifest"]["files"]["model.safetensors"] == b["manifest"]["files"]["model.safetensors"]
    assert a["manifest"]["files"]["vocab.json"] == b["manifest"]["files"]["vocab.json"]
    assert a["manifest"]["files"]["config.json"] == b["manifest"]["files"]["config.json"]
    assert a["patients"] == b["patients"]
    for section in REPORT_SECTIONS:
        assert {k: m["value"] for k, m in a["report"][section].items()} == \
               {k: m["value"] for k, m in b["report"][section].items()}, section
