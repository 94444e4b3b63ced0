"""Cohorts: request validation, sharded jobs, patient pages, streamed exports, reports."""
from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest

from promptehr.service import store
from promptehr.service.models import Report
from tests.support.service import assert_problem, fake_patients, make_model

NORMAL = {"distribution": "normal", "mean": 70, "sd": 10, "min": 18, "max": 90}


@pytest.fixture
def body(session) -> dict:
    return {"model_id": make_model(session), "n_patients": 25, "seed": 7, "age": NORMAL, "sex": {"female": 0.55},
            "required_codes": ["25000", "V5861", "E8889"], "sampling": {"temperature": 1.0, "top_p": 0.95}}


def _post_raw(client, auth, text: str):
    return client.post("/cohorts", content=text, headers={**auth, "content-type": "application/json"})


def test_cohort_is_queued_as_shards(client_for, auth, body, runner):
    client = client_for(cohort_shard_size=10)
    r = client.post("/cohorts", json=body, headers=auth)
    assert r.status_code == 202, r.text
    c = r.json()
    assert (c["status"], c["report_id"], c["n_shards"], c["shards_done"]) == ("queued", None, 3, 0)
    assert c["progress"] == {"done": 0, "total": 25, "unit": "patients"}
    assert c["spec"]["age"] == NORMAL and c["spec"]["sampling"]["top_k"] == 0
    assert r.headers["location"].endswith(f"/cohorts/{c['id']}")
    assert [name for name, _ in runner] == ["promptehr.generate"] * 3
    assert client.get(f"/cohorts/{c['id']}", headers=auth).json()["id"] == c["id"]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"age": {**NORMAL, "mean": "NaN"}}, "body.age.normal.mean"),
        ({"age": {**NORMAL, "sd": -1}}, "body.age.normal.sd"),
        ({"age": {**NORMAL, "sd": 0}}, "body.age.normal.sd"),
        ({"age": {**NORMAL, "min": 90, "max": 18}}, "body.age.normal"),
        ({"age": {**NORMAL, "max": "Infinity"}}, "body.age.normal.max"),
        ({"age": {"distribution": "histogram", "bins": [0, 18, 10], "weights": [1, 1]}}, "body.age.histogram"),
        ({"age": {"distribution": "histogram", "bins": [0, 18, 45], "weights": [1]}}, "body.age.histogram"),
        ({"age": {"distribution": "histogram", "bins": [0, 18, 45], "weights": [0, 0]}}, "body.age.histogram"),
        ({"age": {"distribution": "histogram", "bins": [0, 18, 45], "weights": [1, -1]}}, "body.age.histogram.weights"),
        ({"age": {"distribution": "fixed", "value": -3}}, "body.age.fixed.value"),
        # Over the model's age limit (90, model/cohort.py): refused here, not by a failed job.
        ({"age": {"distribution": "fixed", "value": 91}}, "body.age.fixed.value"),
        ({"age": {"distribution": "fixed", "value": 120}}, "body.age.fixed.value"),
        ({"age": {**NORMAL, "max": 120}}, "body.age.normal.max"),
        ({"age": {**NORMAL, "min": 95, "max": 100}}, "body.age.normal.min"),
        ({"age": {**NORMAL, "mean": 100}}, "body.age.normal.mean"),
        ({"age": {"distribution": "histogram", "bins": [0, 50, 120], "weights": [1, 1]}}, "body.age.histogram.bins.2"),
        ({"age": {"distribution": "histogram", "bins": [0, 50, 91.5], "weights": [1, 1]}}, "body.age.histogram.bins.2"),
        ({"age": {"distribution": "poisson", "value": 3}}, "body.age"),
        ({"sex": {"female": 1.5}}, "body.sex.female"),
        ({"sex": {"female": -0.1}}, "body.sex.female"),
        ({"n_patients": 0}, "body.n_patients"),
        ({"n_patients": 10**9}, "body.n_patients"),
        ({"required_codes": ["250.00"]}, "body.required_codes.0"),
        ({"required_codes": ["X123"]}, "body.required_codes.0"),
        ({"required_codes": ["\u0664\u0660\u0661\u0669"]}, "body.required_codes.0"),  # Arabic-Indic digits
        ({"sampling": {"temperature": 0}}, "body.sampling.temperature"),
        ({"sampling": {"top_p": 1.5}}, "body.sampling.top_p"),
        ({"sampling": {"top_p": 0}}, "body.sampling.top_p"),
        ({"sampling": {"top_k": -1}}, "body.sampling.top_k"),
        ({"seed": -1}, "body.seed"),
        ({"model_id": "no-such-model"}, "body.model_id"),
    ],
)
def test_invalid_cohort_requests_are_422_naming_the_field(client, auth, body, runner, session, change, field):
    text = json.dumps({**body, **change}).replace('"NaN"', "NaN").replace('"Infinity"', "Infinity")
    problem = assert_problem(_post_raw(client, auth, text), 422, field)
    assert field.split(".")[1] in problem["detail"]
    assert runner == [] and store.list_cohorts(session, limit=10) == []


def test_valid_age_forms(client, auth, body, runner):
    for age in ({"distribution": "histogram", "bins": [0, 18, 45, 65, 90], "weights": [0, 1, 2.5, 3]},
                {"distribution": "fixed", "value": 40}, NORMAL):
        r = client.post("/cohorts", json={**body, "age": age}, headers=auth)
        assert r.status_code == 202, r.text


# The edges of what the model takes (model.cohort.AgeSpec) and just past them.
AGES_AT_THE_LIMIT = [
    {"distribution": "fixed", "value": 0},
    {"distribution": "fixed", "value": 90},
    {"distribution": "normal", "mean": 90, "sd": 5, "min": 0, "max": 90},
    {"distribution": "normal", "mean": 0, "sd": 5, "min": 0, "max": 1},
    {"distribution": "histogram", "bins": [0, 91], "weights": [1]},  # [90, 91) is age 90
    {"distribution": "histogram", "bins": [0, 65, 85, 91], "weights": [1, 1, 1]},
]
AGES_PAST_THE_LIMIT = [
    {"distribution": "fixed", "value": 90.5},
    {"distribution": "fixed", "value": -0.5},
    {"distribution": "normal", "mean": 60, "sd": 5, "min": 18, "max": 90.01},
    {"distribution": "normal", "mean": 60, "sd": 5, "min": -1, "max": 90},
    {"distribution": "histogram", "bins": [0, 91.01], "weights": [1]},
    {"distribution": "histogram", "bins": [-1, 50], "weights": [1]},
]


def test_age_limits_are_the_models(client, auth, body, runner):
    """What POST /cohorts accepts the generating worker accepts too (model.cohort.AgeSpec), and an age
    the model would refuse is a 422 naming the age field at POST time rather than a failed job."""
    from promptehr.model.generation.cohort import MAX_AGE, AgeSpec
    from promptehr.service.schemas import cohorts as schema

    assert schema.MAX_AGE == MAX_AGE
    for age in AGES_AT_THE_LIMIT:
        r = client.post("/cohorts", json={**body, "age": age}, headers=auth)
        assert r.status_code == 202, (age, r.text)
        AgeSpec.from_dict(r.json()["spec"]["age"])  # the spec as stored, as the worker reads it
    for age in AGES_PAST_THE_LIMIT:
        with pytest.raises(ValueError):
            AgeSpec.from_dict(age)
        assert_problem(client.post("/cohorts", json={**body, "age": age}, headers=auth), 422,
                       f"body.age.{age['distribution']}")
    assert len(runner) == len(AGES_AT_THE_LIMIT)


def _cohort_with_patients(session, n: int) -> str:
    cohort, shards = store.create_cohort(session, model_id=make_model(session), n_patients=n, seed=1, spec={},
                                         shard_size=10)
    for shard in shards:
        store.claim_job(session, "generate", shard.id, "w")
        store.insert_patients(session, cohort.id, shard.start_index, fake_patients(shard.count, shard.start_index))
        store.mark_succeeded(session, "generate", shard.id)
    return cohort.id


def _pages(client, auth, url):
    items, pages = [], 0
    while url:
        page = client.get(url, headers=auth).json()
        items += page["items"]
        pages += 1
        url = page.get("next")
    return items, pages


def test_patient_pages(client, auth, session):
    cid = _cohort_with_patients(session, 23)
    items, pages = _pages(client, auth, f"/cohorts/{cid}/patients?limit=7")
    assert pages == 4 and [p["index"] for p in items] == list(range(23))
    assert items[5] == {"index": 5, **fake_patients(10, 0)[5]}
    assert_problem(client.get("/cohorts/nope/patients", headers=auth), 404)


def test_exports_stream_exactly_the_pages(client_for, auth, session, tmp_path):
    client = client_for(export_chunk_rows=4)
    cid = _cohort_with_patients(session, 23)
    pages, _ = _pages(client, auth, f"/cohorts/{cid}/patients?limit=5")
    patients = [{k: v for k, v in p.items() if k != "index"} for p in pages]  # the export is the CLI's: no index

    r = client.get(f"/cohorts/{cid}/export?format=jsonl", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in r.headers["content-disposition"]
    assert [json.loads(line) for line in r.text.splitlines()] == patients

    r = client.get(f"/cohorts/{cid}/export?format=csv", headers=auth)
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == ["patient_id", "visit_id", "visit_time", "code", "age", "sex"]
    expected = [(p["patient_id"], c) for p in patients for v in p["visits"] for c in v]
    assert [(row["patient_id"], row["code"]) for row in rows] == expected

    r = client.get(f"/cohorts/{cid}/export?format=mimic3", headers=auth)
    assert r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.namelist() == ["DIAGNOSES_ICD.csv", "PATIENTS.csv", "ADMISSIONS.csv"]
        zf.extractall(tmp_path / "mimic")
        diag = list(csv.DictReader(io.StringIO(zf.read("DIAGNOSES_ICD.csv").decode())))
    assert [d["ICD9_CODE"] for d in diag] == [c for _, c in expected]

    # the MIMIC-III loader reads the export back: same visits, sexes and whole-year ages
    from promptehr.model.data import load_patients

    back = load_patients([tmp_path / "mimic"], format="mimic3")
    by_id = {int(p.id): p for p in back}
    for i, p in enumerate(patients):
        got = by_id[i + 1]
        assert (got.visits, got.sex, got.age) == (p["visits"], p["sex"], float(int(p["age"])))

    assert_problem(client.get(f"/cohorts/{cid}/export?format=xml", headers=auth), 422, "query.format")


def test_export_waits_for_generation(client, auth, body, runner):
    cid = client.post("/cohorts", json=body, headers=auth).json()["id"]
    assert_problem(client.get(f"/cohorts/{cid}/export", headers=auth), 409)


def test_reports_json_and_html(client, auth, session):
    cid = _cohort_with_patients(session, 5)
    report = session.query(Report).filter_by(cohort_id=cid).one()
    report_id = report.id
    assert_problem(client.get(f"/reports/{report_id}", headers=auth), 404)  # not evaluated yet
    content = {"schema_version": 1, "fidelity": {"unigram_r2": {"value": 0.9, "limit": 0.95, "threshold": 0.8,
                                                                 "pass": True}},
               "validity": {}, "privacy": {}, "utility": {}}
    store.claim_job(session, "evaluate", report_id, "w")
    store.save_report(session, report_id, content=content, html="<!doctype html><title>r</title>")
    store.mark_succeeded(session, "evaluate", report_id)

    cohort = client.get(f"/cohorts/{cid}", headers=auth).json()
    assert cohort["status"] == "succeeded" and cohort["report_id"] == report_id
    assert cohort["progress"] == {"done": 5, "total": 5, "unit": "patients"}
    r = client.get(f"/reports/{report_id}", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json" and r.json() == content
    r = client.get(f"/reports/{report_id}", headers={**auth, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert r.headers["content-type"].startswith("text/html") and "<title>r</title>" in r.text
    r = client.get(f"/reports/{report_id}", headers={**auth, "Accept": "application/json, text/html;q=0.5"})
    assert r.json() == content
    r = client.get(f"/reports/{report_id}.html", headers=auth)
    assert r.headers["content-type"].startswith("text/html") and "<title>r</title>" in r.text
    assert_problem(client.get("/reports/nope.html", headers=auth), 404)
