"""The API's common behaviour: keys, problem documents, body limit, idempotency, cursor pages, jobs."""
from __future__ import annotations

import json

import pytest

from promptehr.service import store
from promptehr.service.models import TrainingJob
from tests.support.service import assert_problem, make_model


def _dataset(session) -> str:
    return store.create_dataset(session, name="d", format="mimic3", path="mimic3-demo", stats={}).id


def test_probes_need_no_key(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["database"] == "ok"


@pytest.mark.parametrize("route", ["/datasets", "/models", "/training-jobs/x", "/cohorts/x", "/reports/x"])
def test_401_without_or_with_a_wrong_key(client, auth, route):
    assert_problem(client.get(route), 401)
    assert_problem(client.get(route, headers={"X-API-Key": "pehr_wrong"}), 401)
    assert_problem(client.get(route, headers={"X-API-Key": auth["X-API-Key"] + "x"}), 401)


def test_401_comes_before_body_validation(client):
    assert_problem(client.post("/cohorts", json={"n_patients": -1}), 401)


def test_unknown_route_and_method_are_problems(client, auth):
    body = assert_problem(client.get("/no/such/route", headers=auth), 404)
    assert body["instance"] == "/no/such/route"
    r = client.delete("/datasets", headers=auth)
    assert_problem(r, 405)
    assert r.headers["allow"]
    assert_problem(client.get("/models/unknown", headers=auth), 404)


def test_500_is_a_problem_without_a_trace(client, auth):
    def boom():
        raise RuntimeError("secret internals")

    client.app.add_api_route("/boom", boom)
    r = client.get("/boom", headers=auth)
    body = assert_problem(r, 500)
    assert "secret internals" not in r.text and "RuntimeError" not in r.text
    assert body["detail"]


def test_body_over_the_limit_is_413(client_for, auth, session):
    client = client_for(max_body_bytes=2048)
    big = {"model_id": "x" * 3000, "n_patients": 1}
    assert_problem(client.post("/cohorts", json=big, headers=auth), 413)

    def chunks():  # no Content-Length: the body is counted as it arrives
        yield b'{"model_id": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}'

    r = client.post("/cohorts", content=chunks(), headers={**auth, "content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_problem(r, 413)
    # within the limit, the body reaches the route (and fails validation there, not the limit)
    assert_problem(client.post("/cohorts", json={"n_patients": 1}, headers=auth), 422)


def test_training_job_is_queued_and_handed_to_the_runner(client, auth, session, runner):
    ds = _dataset(session)
    r = client.post("/training-jobs", json={"dataset_id": ds, "preset": "tiny", "epochs": 3, "seed": 1,
                                            "batch_size": 8}, headers=auth)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["model_id"] is None
    assert job["progress"] == {"done": 0, "total": 3, "unit": "epochs"}
    assert job["options"] == {"batch_size": 8} and job["mode"] == "hierarchical"
    assert job["created_at"] and job["started_at"] is None and job["finished_at"] is None and job["error"] is None
    assert r.headers["location"].endswith(f"/training-jobs/{job['id']}")
    assert runner == [("promptehr.train", job["id"])]
    assert client.get(f"/training-jobs/{job['id']}", headers=auth).json() == job


def test_training_job_validation(client, auth, session, runner):
    ds = _dataset(session)
    ok = {"dataset_id": ds, "preset": "tiny", "epochs": 3}
    assert_problem(client.post("/training-jobs", json={**ok, "epochs": 10_000}, headers=auth), 422, "body.epochs")
    assert_problem(client.post("/training-jobs", json={**ok, "preset": "huge"}, headers=auth), 422, "body.preset")
    assert_problem(client.post("/training-jobs", json={**ok, "dataset_id": "nope"}, headers=auth), 422, "body.dataset_id")
    assert_problem(client.post("/training-jobs", json={**ok, "learning_rate": -1}, headers=auth), 422,
                   "body.learning_rate")
    assert_problem(client.post("/training-jobs", json={**ok, "surprise": 1}, headers=auth), 422, "body.surprise")
    assert runner == []


def test_cancel_training_job(client, auth, session, runner):
    ds = _dataset(session)
    job = client.post("/training-jobs", json={"dataset_id": ds, "epochs": 1}, headers=auth).json()
    r = client.post(f"/training-jobs/{job['id']}/cancel", headers=auth)
    assert r.status_code == 202 and r.json()["status"] == "cancelled" and r.json()["finished_at"]
    running = client.post("/training-jobs", json={"dataset_id": ds, "epochs": 1}, headers=auth).json()
    store.claim_job(session, "train", running["id"], "w")
    r = client.post(f"/training-jobs/{running['id']}/cancel", headers=auth)
    assert r.json()["status"] == "running" and r.json()["cancel_requested"] is True
    store.mark_cancelled(session, "train", running["id"])
    assert client.get(f"/training-jobs/{running['id']}", headers=auth).json()["status"] == "cancelled"
    done = client.post("/training-jobs", json={"dataset_id": ds, "epochs": 1}, headers=auth).json()
    store.claim_job(session, "train", done["id"], "w")
    store.mark_failed(session, "train", done["id"], "boom")
    assert_problem(client.post(f"/training-jobs/{done['id']}/cancel", headers=auth), 409)
    assert_problem(client.post("/training-jobs/nope/cancel", headers=auth), 404)


def test_idempotency_key_replays_the_first_answer(client, auth, session, runner):
    ds = _dataset(session)
    body = {"dataset_id": ds, "preset": "tiny", "epochs": 2}
    headers = {**auth, "Idempotency-Key": "k-1"}
    first = client.post("/training-jobs", json=body, headers=headers)
    assert first.status_code == 202
    store.claim_job(session, "train", first.json()["id"], "w")  # the job moves on meanwhile
    again = client.post("/training-jobs", json=dict(reversed(body.items())), headers=headers)
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers.get("idempotent-replayed") == "true"
    assert len(runner) == 1
    assert session.query(TrainingJob).filter(TrainingJob.dataset_id == ds).count() == 1

    # the same key with another body is refused; another route counts as another body
    assert_problem(client.post("/training-jobs", json={**body, "epochs": 3}, headers=headers), 422)
    assert_problem(client.post("/cohorts", json={"model_id": make_model(session), "n_patients": 1, "age":
                   {"distribution": "fixed", "value": 40}, "sex": {"female": 0.5}}, headers=headers), 422)
    # without a key, or with another key, a second job is made
    assert client.post("/training-jobs", json=body, headers=auth).json()["id"] != first.json()["id"]
    other = client.post("/training-jobs", json=body, headers={**auth, "Idempotency-Key": "k-2"})
    assert other.json()["id"] != first.json()["id"]


def test_idempotency_key_after_a_failed_request_can_be_used_again(client, auth, session, runner):
    headers = {**auth, "Idempotency-Key": "k-retry"}
    assert_problem(client.post("/training-jobs", json={"dataset_id": "nope", "epochs": 1}, headers=headers), 422)
    ds = _dataset(session)
    r = client.post("/training-jobs", json={"dataset_id": ds, "epochs": 1}, headers=headers)
    assert r.status_code == 202


def test_cursor_pages(client, auth, session):
    ids = [store.create_dataset(session, name=f"d{i}", format="long", path="x", stats={}).id for i in range(8)]
    seen, url, pages = [], "/datasets?limit=3", 0
    while url:
        r = client.get(url, headers=auth)
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        assert len(page["items"]) <= 3
        seen += [d["id"] for d in page["items"]]
        url = page.get("next")
        if url is None:
            assert "next" not in page
        else:
            assert url.startswith("/datasets?") and "cursor=" in url and "limit=3" in url  # relative: no Host
    assert pages == 3 and seen == ids
    assert_problem(client.get("/datasets?cursor=garbage!", headers=auth), 422, "query.cursor")
    assert_problem(client.get("/datasets?limit=0", headers=auth), 422, "query.limit")
    # limits above the maximum are cut to it
    assert len(client.get("/datasets?limit=100000", headers=auth).json()["items"]) == 8


def test_models_list_and_read(client, auth, session):
    model_id = make_model(session)
    page = client.get("/models", headers=auth).json()
    assert [m["id"] for m in page["items"]] == [model_id] and "next" not in page
    m = client.get(f"/models/{model_id}", headers=auth).json()
    assert m["manifest_sha256"] == "0" * 64 and m["config"] == {"preset": "tiny"}
    assert "checkpoint_path" not in m


def test_openapi_has_examples_on_every_request_body(client):
    spec = client.get("/openapi.json").json()
    bodies = 0
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            if "requestBody" not in op:
                continue
            bodies += 1
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            name = schema["$ref"].rsplit("/", 1)[1]
            assert spec["components"]["schemas"][name].get("examples"), (method, path)
    assert bodies == 3
    assert client.get("/docs").status_code == 200
    assert "X-API-Key" in json.dumps(spec["components"]["securitySchemes"])


def test_idempotency_keys_expire(client_for, auth, session, runner):
    from datetime import timedelta

    import sqlalchemy as sa

    from promptehr.service.models import IdempotencyKey
    from promptehr.service.models.base import utcnow

    client = client_for(idempotency_ttl_seconds=60)
    ds = _dataset(session)
    headers = {**auth, "Idempotency-Key": "k-ttl"}
    first = client.post("/training-jobs", json={"dataset_id": ds, "epochs": 1}, headers=headers).json()
    session.execute(sa.update(IdempotencyKey).values(expires_at=utcnow() - timedelta(seconds=1)))
    session.commit()
    second = client.post("/training-jobs", json={"dataset_id": ds, "epochs": 2}, headers=headers)
    assert second.status_code == 202 and second.json()["id"] != first["id"]
