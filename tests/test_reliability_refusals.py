"""Requests the API must refuse with a clear 4xx and without doing anything: no row written in any
table, nothing enqueued. On PostgreSQL (a throwaway database), with small limits (4 KiB bodies,
1000-patient cohorts, 5 epochs) so that going over them is cheap.

Every table is counted before and after each request, and the job hand-off is a recorder
(`service.jobs.set_local_runner`), so "nothing executed" is checked, not assumed. (A checkpoint whose
bytes no longer match its manifest is refused by the worker: tests/test_reliability_jobs.py.)
"""
from __future__ import annotations

import json
import os
import shutil

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.support.databases import throwaway_database
from tests.support.reliability import is_problem

pytestmark = [pytest.mark.services]

MAX_BODY = 4096


@pytest.fixture(scope="module")
def refusals(tmp_path_factory, shared_data):
    from promptehr.service import jobs, store
    from promptehr.service.app import create_app
    from promptehr.service.auth import generate_key, hash_key
    from promptehr.service.settings import Settings

    root = tmp_path_factory.mktemp("reliability-refusals")
    data = root / "data"
    (data / "mimic3").mkdir(parents=True)
    for name in ("PATIENTS.csv", "ADMISSIONS.csv", "DIAGNOSES_ICD.csv"):
        shutil.copyfile(shared_data / "mimic3-demo" / name, data / "mimic3" / name)
    outside = root / "outside"
    shutil.copytree(data / "mimic3", outside)  # readable data, but not under the data root
    os.symlink(outside, data / "link-out")  # a symlink leaving the data root
    os.symlink(data / "link-loop", data / "link-loop")
    with throwaway_database() as db:
        settings = Settings(database_url=db, promptehr_home=root / "home", data_root=data, max_body_bytes=MAX_BODY,
                            max_cohort_patients=1000, max_epochs=5)
        app = create_app(settings)
        key = generate_key()
        with app.state.sessionmaker() as s:
            # admin: the dataset and model made below through the store belong to no tenant
            store.create_api_key(s, name="refusals", key_hash=hash_key(key), prefix=key[:10], is_admin=True)
            dataset = store.create_dataset(s, name="demo", format="mimic3", path="mimic3", stats={"patients": 100})
            model = store.create_model(s, name="m", dataset_id=dataset.id, checkpoint_path="nowhere",
                                       manifest_sha256="0" * 64, config={"preset": "tiny"})
            ids = {"dataset": dataset.id, "model": model.id}
        enqueued: list = []
        previous = jobs.get_local_runner()
        jobs.set_local_runner(lambda name, job_id: enqueued.append((name, job_id)))
        try:
            with TestClient(app, raise_server_exceptions=False) as client:
                client.headers["X-API-Key"] = key
                yield {"client": client, "engine": app.state.engine, "ids": ids, "enqueued": enqueued}
        finally:
            jobs.set_local_runner(previous)
            app.state.engine.dispose()


def counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        tables = [t for t in sa.inspect(conn).get_table_names() if t != "alembic_version"]
        return {t: conn.scalar(sa.text(f'SELECT count(*) FROM "{t}"')) for t in tables}


def refused(env, method: str, path: str, *, status: int, field: str | None = None, **kw) -> dict:
    before, queued = counts(env["engine"]), len(env["enqueued"])
    response = env["client"].request(method, path, **kw)
    body = is_problem(response, status)
    assert counts(env["engine"]) == before, "a refused request wrote something"
    assert len(env["enqueued"]) == queued, "a refused request enqueued a job"
    if field is not None:
        fields = [e["field"] for e in body.get("errors", [])]
        assert any(f == field or f.startswith(field + ".") for f in fields), (fields, body)
    return body


# --- dataset paths that leave the data root --------------------------------------------------------

ESCAPING_PATHS = ["..", "../..", "mimic3/../..", "../outside", "/etc", "/etc/passwd", "//etc", "\\etc",
                  "link-out", "link-out/PATIENTS.csv", "link-loop", "mimic3\x00/..", "~/", "../" * 40 + "etc"]


@pytest.mark.parametrize("path", ESCAPING_PATHS)
def test_dataset_paths_outside_the_data_root_are_refused(refusals, path):
    refused(refusals, "POST", "/datasets", json={"name": "x", "format": "mimic3", "path": path},
            status=422, field="body.path")


def test_a_path_inside_the_data_root_is_accepted(refusals):
    """The control: the same request with a path under the root works (and writes one row)."""
    before = counts(refusals["engine"])["datasets"]
    r = refusals["client"].post("/datasets", json={"name": "ok", "format": "mimic3", "path": "mimic3"})
    assert r.status_code == 201, r.text
    assert counts(refusals["engine"])["datasets"] == before + 1


# --- sizes ----------------------------------------------------------------------------------------


def _cohort(env, **changes) -> dict:
    body = {"model_id": env["ids"]["model"], "n_patients": 10, "seed": 1,
            "age": {"distribution": "normal", "mean": 60, "sd": 10, "min": 18, "max": 90}, "sex": {"female": 0.5}}
    body.update(changes)
    return body


def test_body_over_the_limit_is_413(refusals):
    big = _cohort(refusals, required_codes=["4019"] * 2000)
    assert len(json.dumps(big)) > MAX_BODY
    refused(refusals, "POST", "/cohorts", json=big, status=413)


def test_body_over_the_limit_without_content_length_is_413(refusals):
    payload = json.dumps(_cohort(refusals, required_codes=["4019"] * 2000)).encode()

    def chunks():
        for i in range(0, len(payload), 1000):
            yield payload[i:i + 1000]

    refused(refusals, "POST", "/cohorts", content=chunks(), headers={"Content-Type": "application/json"}, status=413)


@pytest.mark.parametrize("n", [1001, 10**12, 0, -1])
def test_cohort_sizes_outside_the_limits_are_refused(refusals, n):
    refused(refusals, "POST", "/cohorts", json=_cohort(refusals, n_patients=n), status=422, field="body.n_patients")


@pytest.mark.parametrize("epochs", [6, 0, -3])
def test_epochs_outside_the_limits_are_refused(refusals, epochs):
    refused(refusals, "POST", "/training-jobs", json={"dataset_id": refusals["ids"]["dataset"], "epochs": epochs},
            status=422, field="body.epochs")


# --- distribution parameters and probabilities ----------------------------------------------------

RAW_BAD = {  # JSON text, so NaN and Infinity can be sent as the non-standard literals clients emit
    "sd-NaN": '"age": {"distribution": "normal", "mean": 60, "sd": NaN}',
    "mean-Infinity": '"age": {"distribution": "normal", "mean": Infinity, "sd": 5}',
    "sd-minus-Infinity": '"age": {"distribution": "normal", "mean": 60, "sd": -Infinity}',
    "sd-overflow": '"age": {"distribution": "normal", "mean": 60, "sd": 1e400}',
    "sd-negative": '"age": {"distribution": "normal", "mean": 60, "sd": -4}',
    "sd-zero": '"age": {"distribution": "normal", "mean": 60, "sd": 0}',
    "mean-negative": '"age": {"distribution": "normal", "mean": -10, "sd": 4}',
    "min-above-max": '"age": {"distribution": "normal", "mean": 60, "sd": 4, "min": 80, "max": 20}',
    "fixed-negative": '"age": {"distribution": "fixed", "value": -1}',
    "fixed-NaN": '"age": {"distribution": "fixed", "value": NaN}',
    "weights-negative": '"age": {"distribution": "histogram", "bins": [0, 50, 90], "weights": [-1, 2]}',
    "weights-NaN": '"age": {"distribution": "histogram", "bins": [0, 50, 90], "weights": [NaN, 1]}',
    "weights-all-zero": '"age": {"distribution": "histogram", "bins": [0, 50, 90], "weights": [0, 0]}',
    "bins-NaN": '"age": {"distribution": "histogram", "bins": [0, NaN, 90], "weights": [1, 1]}',
    "bins-decreasing": '"age": {"distribution": "histogram", "bins": [90, 50, 0], "weights": [1, 1]}',
    "female-above-1": '"sex": {"female": 1.5}',
    "female-negative": '"sex": {"female": -0.1}',
    "female-NaN": '"sex": {"female": NaN}',
    "female-Infinity": '"sex": {"female": Infinity}',
    "top_p-above-1": '"sampling": {"top_p": 1.01}',
    "top_p-zero": '"sampling": {"top_p": 0}',
    "top_p-NaN": '"sampling": {"top_p": NaN}',
    "temperature-negative": '"sampling": {"temperature": -1}',
    "temperature-Infinity": '"sampling": {"temperature": Infinity}',
    "top_k-negative": '"sampling": {"top_k": -1}',
    "precision-fp16": '"sampling": {"precision": "fp16"}',
}


@pytest.mark.parametrize("case", list(RAW_BAD))
def test_bad_distribution_parameters_and_probabilities_are_refused(refusals, case):
    base = _cohort(refusals)
    key = RAW_BAD[case].split(":", 1)[0].strip('"')
    base.pop(key, None)
    text = json.dumps(base)[:-1] + ", " + RAW_BAD[case] + "}"
    refused(refusals, "POST", "/cohorts", content=text.encode(), headers={"Content-Type": "application/json"},
            status=422, field=f"body.{key}")


@pytest.mark.parametrize("field,value", [("learning_rate", "NaN"), ("learning_rate", "-0.1"), ("learning_rate", "2"),
                                         ("batch_size", "0"), ("seed", "-1")])
def test_bad_training_options_are_refused(refusals, field, value):
    text = f'{{"dataset_id": "{refusals["ids"]["dataset"]}", "epochs": 1, "{field}": {value}}}'
    refused(refusals, "POST", "/training-jobs", content=text.encode(), headers={"Content-Type": "application/json"},
            status=422, field=f"body.{field}")


# --- things that do not exist, keys ---------------------------------------------------------------


def test_unknown_model_id_is_refused(refusals):
    refused(refusals, "POST", "/cohorts", json=_cohort(refusals, model_id="no-such-model"), status=422,
            field="body.model_id")


def test_unknown_dataset_id_is_refused(refusals):
    refused(refusals, "POST", "/training-jobs", json={"dataset_id": "no-such-dataset", "epochs": 1}, status=422,
            field="body.dataset_id")


@pytest.mark.parametrize("key", [None, "", "pehr_wrong", "x" * 300])
@pytest.mark.parametrize("route", ["/cohorts", "/training-jobs", "/datasets"])
def test_missing_or_wrong_key_is_401_and_nothing_runs(refusals, key, route):
    valid = {"/cohorts": _cohort(refusals),
             "/training-jobs": {"dataset_id": refusals["ids"]["dataset"], "epochs": 1},
             "/datasets": {"name": "d", "format": "mimic3", "path": "mimic3"}}[route]
    headers = {"X-API-Key": key} if key is not None else {}
    client = refusals["client"]
    saved = client.headers.pop("X-API-Key")
    try:
        body = refused(refusals, "POST", route, json=valid, headers=headers, status=401)
    finally:
        client.headers["X-API-Key"] = saved
    assert body["type"].endswith("/unauthorized")


def test_the_valid_requests_are_accepted_and_enqueued(refusals):
    """The control for all of the above: the same bodies with good values create rows and enqueue."""
    before, queued = counts(refusals["engine"]), len(refusals["enqueued"])
    r = refusals["client"].post("/cohorts", json=_cohort(refusals))
    assert r.status_code == 202, r.text
    r = refusals["client"].post("/training-jobs", json={"dataset_id": refusals["ids"]["dataset"], "epochs": 1})
    assert r.status_code == 202, r.text
    after = counts(refusals["engine"])
    assert after["cohorts"] == before["cohorts"] + 1 and after["training_jobs"] == before["training_jobs"] + 1
    assert [name for name, _ in refusals["enqueued"][queued:]] == ["promptehr.generate", "promptehr.train"]
