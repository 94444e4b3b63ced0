"""The embedded default survives its own death: `promptehr serve` is SIGKILLed while it trains one
model with a second training job queued behind it; started again on the same home, it picks up
both: the running job is taken over from the dead process and resumes from its last snapshot, the
queued one runs after it."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import pytest

from tests.support.worker import Api, app_env, create_api_key, start_api

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def row(home, job_id: str) -> dict:
    with sqlite3.connect(home / "promptehr.sqlite3") as conn:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute("SELECT * FROM training_jobs WHERE id = ?", (job_id,)).fetchone())


def test_serve_killed_mid_training_resumes_its_jobs_when_started_again(tmp_path, shared_data):
    home = tmp_path / "home"
    env = app_env(home=home, data_root=shared_data)
    key = create_api_key(env)
    serve, base = start_api(env, tmp_path / "serve-1.log", embedded=True)
    try:
        api = Api(base, key)
        dataset = api.post("/datasets", {"name": "m3", "format": "mimic3", "path": "mimic3-demo"}, 201)
        long = api.post("/training-jobs", {"dataset_id": dataset["id"], "preset": "tiny", "epochs": 10, "seed": 3,
                                           "batch_size": 4, "early_stopping_patience": 1000}, 202)
        queued = api.post("/training-jobs", {"dataset_id": dataset["id"], "preset": "tiny", "epochs": 1}, 202)
        checkpoint = home / "models" / "training-jobs" / long["id"]
        snapshot = checkpoint.with_name(f"{long['id']}.resume") / "state.pt"
        deadline = time.monotonic() + 180
        while not snapshot.exists():
            assert time.monotonic() < deadline, "no resume snapshot"
            time.sleep(0.05)
        epoch_one = json.loads((checkpoint / "training_log.jsonl").read_text().splitlines()[0])
        api.close()
        os.killpg(serve.pid, signal.SIGKILL)  # no shutdown hook runs
        serve.proc.wait(10)
    finally:
        serve.stop()
    before = row(home, long["id"])
    assert before["status"] == "running" and before["attempt"] == 1
    assert row(home, queued["id"])["status"] == "queued"

    serve, base = start_api(env, tmp_path / "serve-2.log", embedded=True)
    try:
        api = Api(base, key)
        done, _ = api.poll(f"/training-jobs/{long['id']}", timeout=300)
        assert done["status"] == "succeeded", done
        after = row(home, long["id"])
        assert after["attempt"] == 2 and after["claimed_by"] != before["claimed_by"]
        model = api.get(f"/models/{done['model_id']}").json()
        assert model["metrics"]["resumed"] is True
        assert model["metrics"]["log"][0] == epoch_one  # epoch 1 was not trained again
        assert [line["epoch"] for line in model["metrics"]["log"]] == list(range(1, 11))
        second, _ = api.poll(f"/training-jobs/{queued['id']}", timeout=300)
        assert second["status"] == "succeeded" and second["model_id"]
        api.close()
    finally:
        serve.stop()
