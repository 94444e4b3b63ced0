"""One cohort, two exports, the same bytes: `promptehr generate --format F` (the CLI) and
GET /cohorts/{id}/export?format=F (the API) for jsonl, csv and mimic3.

A tiny model is trained here once; the API (PostgreSQL, a database of its own) registers it, takes
the cohort request in three shards, and the worker's task code (worker.dispatch.run_task, what both
Celery and the embedded runner run) generates them into the database. The API then exports the
cohort in pages of 7 patients, smaller than a shard and not a divisor of it; the CLI generates the
same cohort (same checkpoint, size, seed and spec) in one go and writes it to a file.
"""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from promptehr.cli.generate import SUFFIXES
from promptehr.cli.main import main
from promptehr.model.nn.checkpoint import MANIFEST, sha256_of
from promptehr.service import jobs, store
from promptehr.service.app import create_app
from promptehr.service.auth import generate_key, hash_key
from promptehr.service.settings import Settings
from tests.support.databases import throwaway_database
from promptehr.worker.context import make_context
from promptehr.worker.dispatch import GENERATE, run_task

pytestmark = [pytest.mark.services, pytest.mark.usefixtures("one_thread")]

N, SEED = 45, 5
FORMATS = ("jsonl", "csv", "mimic3")
AGE = {"distribution": "normal", "mean": 65, "sd": 15, "min": 18, "max": 90}
COHORT = {"n_patients": N, "seed": SEED, "age": AGE, "sex": {"female": 0.4}, "required_codes": ["4019"],
          "sampling": {"temperature": 0.9, "top_p": 0.95, "top_k": 0}}
CLI_SPEC = ["--n", N, "--seed", SEED, "--age-mean", 65, "--age-sd", 15, "--age-min", 18, "--age-max", 90,
            "--female", 0.4, "--require", "4019", "--temperature", 0.9, "--top-p", 0.95, "--top-k", 0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("tiny") / "model"
    rc = main(["train", "--data", str(shared_data / "mimic3-demo"), "--preset", "tiny", "--max-steps", "30",
               "--device", "cpu", "--out", str(out)])
    assert rc == 0
    return out


def register(settings: Settings, model_dir) -> tuple[str, str]:
    """(model id, API key) of the trained checkpoint, registered as a training job would leave it."""
    ctx = make_context(settings, device="cpu")
    try:
        with ctx.session() as s:
            ds = store.create_dataset(s, name="m3", format="mimic3", path="mimic3-demo", stats={})
            model = store.create_model(s, name="tiny", dataset_id=ds.id, checkpoint_path=str(model_dir),
                                       manifest_sha256=sha256_of(model_dir / MANIFEST))
            key = generate_key()
            # admin: the rows made above through the store belong to no tenant
            store.create_api_key(s, name="test", key_hash=hash_key(key), prefix=key[:10], is_admin=True)
            return model.id, key
    finally:
        ctx.close()


def generate_shards(settings: Settings, job_ids: list[str]) -> None:
    ctx = make_context(settings, device="cpu")
    try:
        for job_id in job_ids:
            assert run_task(GENERATE, job_id, ctx) == "succeeded"
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def api_exports(model_dir, shared_data, tmp_path_factory) -> dict[str, bytes]:
    home = tmp_path_factory.mktemp("api-home")
    queued: list[tuple[str, str]] = []
    jobs.set_local_runner(lambda name, job_id: queued.append((name, job_id)))  # run by hand below
    try:
        with throwaway_database() as url:
            settings = Settings(database_url=url, promptehr_home=home, data_root=shared_data,
                                model_root=home / "models", cohort_shard_size=20, export_chunk_rows=7)
            model_id, key = register(settings, model_dir)
            with TestClient(create_app(settings)) as client:
                auth = {"X-API-Key": key}
                r = client.post("/cohorts", json={**COHORT, "model_id": model_id}, headers=auth)
                assert r.status_code == 202, r.text
                cohort_id = r.json()["id"]
                shards = [job_id for name, job_id in queued if name == GENERATE]
                assert len(shards) == 3  # 45 patients in shards of 20, 20, 5
                generate_shards(settings, shards)
                exports = {}
                for fmt in FORMATS:
                    r = client.get(f"/cohorts/{cohort_id}/export", params={"format": fmt}, headers=auth)
                    assert r.status_code == 200, r.text
                    exports[fmt] = r.content
    finally:
        jobs.set_local_runner(None)
    return exports


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_and_api_export_the_same_bytes(fmt, model_dir, api_exports, tmp_path):
    out = tmp_path / f"cohort{SUFFIXES[fmt]}"
    rc = main(["generate", "--model", str(model_dir), *map(str, CLI_SPEC), "--device", "cpu", "--threads", "1",
               "--format", fmt, "--out", str(out)])
    assert rc == 0
    cli = out.read_bytes()
    assert api_exports[fmt] == cli
