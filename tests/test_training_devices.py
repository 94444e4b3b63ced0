"""`devices` on a training job: the job trains data-parallel on that many devices of one worker, and
POST /training-jobs refuses (422, body.devices) a number no live worker offers. Workers publish what
they offer in the workers table (worker/presence.py); a CPU worker offers PROMPTEHR_CPU_DEVICES gloo
processes.

- the store on both back ends: publishing is an upsert, stale and other queues' workers do not count;
- the API on both back ends: 422 naming body.devices without a live worker that has them, 202 with one;
- the embedded runner publishes itself while it runs and withdraws when it stops;
- a real Celery worker offering 2 CPU devices trains a devices=2 job with world_size 2 (config.json and
  every training_log.jsonl line), and answers 422 for 3;
- ranks that have not exited a grace period after writing their result (a teardown that hangs) have
  their stacks dumped into the log and are killed, and the job keeps the result; ranks that exit are
  waited for.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from promptehr.model.nn.checkpoint import load_checkpoint
from promptehr.service import store
from promptehr.service.models.base import utcnow
from tests.support.databases import throwaway_database
from tests.support.service import assert_problem
from tests.support.worker import (
    Api,
    app_env,
    create_api_key,
    delete_queue,
    private_queue,
    start_api,
    start_celery_worker,
)
from promptehr.worker import parallel_training
from promptehr.worker.presence import offered_devices

STALE = timedelta(minutes=10)


def _dataset(client, auth) -> str:
    r = client.post("/datasets", json={"name": "d", "format": "mimic3", "path": "mimic3-demo"}, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_publishing_is_an_upsert_and_only_live_workers_of_the_queue_count(session):
    assert store.most_live_devices(session, "q", stale_after=STALE) == 0
    store.publish_worker(session, "h:1:9", hostname="h", queue="q", device_kind="cpu", device_count=2)
    store.publish_worker(session, "h:1:9", hostname="h", queue="q", device_kind="cpu", device_count=3)  # a beat
    store.publish_worker(session, "g:2:9", hostname="g", queue="other", device_kind="cuda", device_count=8)
    store.publish_worker(session, "old:3:9", hostname="old", queue="q", device_kind="cuda", device_count=4,
                         now=utcnow() - 2 * STALE)  # last seen long ago: it died
    live = store.live_workers(session, "q", stale_after=STALE)
    assert [(w.id, w.device_kind, w.device_count) for w in live] == [("h:1:9", "cpu", 3)]
    assert store.most_live_devices(session, "q", stale_after=STALE) == 3
    assert store.most_live_devices(session, "other", stale_after=STALE) == 8
    store.remove_worker(session, "h:1:9")
    assert store.most_live_devices(session, "q", stale_after=STALE) == 0


def test_post_refuses_devices_no_live_worker_has(client, auth, session, runner):
    ok = {"dataset_id": _dataset(client, auth), "preset": "tiny", "epochs": 1}
    body = assert_problem(client.post("/training-jobs", json={**ok, "devices": 2}, headers=auth), 422, "body.devices")
    assert "no worker is live" in json.dumps(body)
    assert_problem(client.post("/training-jobs", json={**ok, "devices": 0}, headers=auth), 422, "body.devices")
    r = client.post("/training-jobs", json=ok, headers=auth)  # one device needs no live worker: it waits for one
    assert r.status_code == 202 and r.json()["devices"] == 1 and r.json()["options"] == {}

    store.publish_worker(session, "h:1:9", hostname="h", queue=store.EMBEDDED_QUEUE, device_kind="cpu", device_count=2)
    r = client.post("/training-jobs", json={**ok, "devices": 2}, headers=auth)
    assert r.status_code == 202, r.text
    assert r.json()["devices"] == 2 and r.json()["options"] == {"devices": 2}
    assert client.get(f"/training-jobs/{r.json()['id']}", headers=auth).json()["devices"] == 2
    body = assert_problem(client.post("/training-jobs", json={**ok, "devices": 3}, headers=auth), 422, "body.devices")
    assert "the most a live worker offers is 2" in json.dumps(body)


def test_a_cpu_worker_offers_its_setting_and_one_pinned_device(settings_for):
    assert offered_devices(settings_for(cpu_devices=3), "cpu") == ("cpu", 3)
    assert offered_devices(settings_for(), "cpu") == ("cpu", 1)  # the default: one process per CPU worker
    assert offered_devices(settings_for(), "cuda:1") == ("cuda", 1)


def test_the_embedded_runner_publishes_itself_until_it_stops(settings_for, engine):
    from promptehr.worker.runner import make_runner

    def queues() -> list[tuple[str, str, int]]:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text("SELECT queue, device_kind, device_count FROM workers"))]

    runner = make_runner(settings_for(device="cpu", cpu_devices=2), recover=False)
    try:
        for _ in range(100):  # the beacon's thread writes at once; wait for it, without a timed assertion
            if queues():
                break
            runner.presence._stop.wait(0.05)
        assert (store.EMBEDDED_QUEUE, "cpu", 2) in queues()
    finally:
        runner.stop()
    assert (store.EMBEDDED_QUEUE, "cpu", 2) not in queues()


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory, shared_data, redis_url, postgres_url):
    home = tmp_path_factory.mktemp("devices")
    data = home / "data"
    shutil.copytree(shared_data / "mimic3-demo", data / "m3")
    queue = private_queue()
    with throwaway_database() as db:
        env = app_env(home=home, data_root=data, database_url=db, broker_url=redis_url, PROMPTEHR_CELERY_QUEUE=queue,
                      PROMPTEHR_MODEL_ROOT=str(home / "models"), PROMPTEHR_CPU_DEVICES="2")
        worker = start_celery_worker(env, home / "worker.log")  # ready: it has published itself
        api_proc = None
        try:
            api_proc, base = start_api(env, home / "api.log")
            api = Api(base, create_api_key(env))
            dataset = api.post("/datasets", {"name": "m3", "format": "mimic3", "path": "m3"}, 201)
            yield SimpleNamespace(api=api, home=home, dataset=dataset, db=db, worker=worker)
            api.close()
        finally:
            if api_proc is not None:
                api_proc.stop()
            worker.stop()
            delete_queue(redis_url, queue)


@pytest.mark.slow  # a Celery worker trains on two gloo processes
@pytest.mark.timeout(600)
def test_a_celery_worker_trains_on_two_cpu_devices(celery_stack):
    api = celery_stack.api
    spec = {"dataset_id": celery_stack.dataset["id"], "preset": "tiny", "epochs": 1, "seed": 0}
    r = api.client.post("/training-jobs", json={**spec, "devices": 3})
    assert_problem(r, 422, "body.devices")
    assert "the most a live worker offers is 2" in r.text
    job = api.post("/training-jobs", {**spec, "devices": 2}, 202)
    try:
        done, _ = api.poll(f"/training-jobs/{job['id']}", timeout=500)
    except AssertionError as e:  # what the worker was doing (a CI run once saw the job outstay 500 s)
        raise AssertionError(f"{e}\nthe worker's log ends:\n{celery_stack.worker.log()[-6000:]}") from None
    assert done["status"] == "succeeded", (done.get("error"), celery_stack.worker.log()[-3000:])
    assert done["devices"] == 2 and done["progress"]["unit"] == "steps" and done["progress"]["done"] > 0

    out = celery_stack.home / "models" / "training-jobs" / job["id"]
    assert json.loads((out / "config.json").read_text())["train"]["world_size"] == 2
    lines = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert lines and all(line["world_size"] == 2 for line in lines)
    load_checkpoint(out, "cpu")  # rank 0's checkpoint loads like any other
    engine = sa.create_engine(celery_stack.db)
    try:
        with engine.connect() as conn:
            kind, count = conn.execute(sa.text("SELECT device_kind, device_count FROM workers")).one()
    finally:
        engine.dispose()
    assert (kind, count) == ("cpu", 2)


# Plays torchrun and rank 0 at once: writes its pid and the result, then "tears down" for ever (or not).
RANK = """
import faulthandler, os, signal, sys, time
from pathlib import Path
control = Path(sys.argv[1])
faulthandler.register(signal.SIGUSR1, all_threads=True)
(control / "rank0.pid").write_text(str(os.getpid()))
(control / "result.pickle").write_bytes(b"done")
def hanging_teardown():
    while sys.argv[2] == "hang":
        time.sleep(0.1)
hanging_teardown()
"""


class _Lease:  # what _watch asks of the job's lease
    def __init__(self):
        self.progressed = []

    def should_stop(self) -> bool:
        return False

    def progress(self, *args, **kwargs) -> None:
        self.progressed.append(args)


@pytest.mark.parametrize("teardown", ["hang", "exit"])
def test_ranks_that_outstay_their_result_are_stopped_and_the_result_kept(tmp_path, caplog, teardown):
    with open(tmp_path / parallel_training.LOG, "wb") as out:
        launcher = subprocess.Popen([sys.executable, "-c", RANK, str(tmp_path), teardown], stdout=out,
                                    stderr=subprocess.STDOUT)
        with caplog.at_level(logging.WARNING, logger=parallel_training.__name__):
            code = parallel_training._watch(_Lease(), launcher, tmp_path, grace=1.0)
    assert launcher.poll() is not None  # nothing left running
    if teardown == "exit":
        assert code == 0 and not caplog.records
        return
    assert code is None and launcher.returncode == -9
    [warning] = caplog.records
    assert "had not exited 1 s after writing their result" in warning.getMessage()
    assert "hanging_teardown" in warning.getMessage()  # the rank's stack, from faulthandler
