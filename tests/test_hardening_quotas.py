"""Issue 15, defect 7: no quota. 50 requests for 100,000 patients each were all accepted (5 million
patients, about 12 h of CPU). Now each tenant may have at most `max_active_jobs_per_tenant` training
jobs and cohorts queued or running, and `max_queued_patients_per_tenant` patients waiting to be
generated; over either, POST answers 429 problem+json with Retry-After and writes nothing. Both back
ends, through the real app; the race on real commits with real threads."""
from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa

from promptehr.service import store
from promptehr.service.db import make_engine, make_sessionmaker
from promptehr.service.models import Cohort, CohortShard, Dataset, Model
from promptehr.service.settings import Settings
from tests.conftest import tenant_key
from tests.support.service import assert_problem, make_model

AGE = {"distribution": "normal", "mean": 70, "sd": 10, "min": 18, "max": 90}


def cohort(model_id: str, n: int) -> dict:
    return {"model_id": model_id, "n_patients": n, "seed": 1, "age": AGE, "sex": {"female": 0.5}}


def _fifty_large_cohorts(client, headers, model_id) -> list:
    return [client.post("/cohorts", json=cohort(model_id, 100_000), headers=headers) for _ in range(50)]


@pytest.mark.slow  # 6-9 s: 100 POSTs of 100,000 patients (the attack as it was run), 50 of them refused
def test_fifty_cohorts_of_100000_patients_reproduced_then_refused(client_for, session, runner):
    model_id = make_model(session)
    # shards of 10,000: the same refusals with 10 shard rows a cohort instead of 100 (5 s less)
    unlimited = client_for(max_active_jobs_per_tenant=0, max_queued_patients_per_tenant=0, cohort_shard_size=10_000)
    answers = _fifty_large_cohorts(unlimited, tenant_key(session, "careless", admin=True), model_id)
    assert [r.status_code for r in answers] == [202] * 50  # the defect, with the quotas switched off
    assert store.queued_patients(session, "careless") == 5_000_000

    client = client_for(cohort_shard_size=10_000)  # the quotas' defaults: 200,000 patients waiting, 10 jobs
    headers = tenant_key(session, "hostile", admin=True)
    runner.clear()
    answers = _fifty_large_cohorts(client, headers, model_id)
    assert [r.status_code for r in answers] == [202] * 2 + [429] * 48
    body = assert_problem(answers[-1], 429)
    assert answers[-1].headers["retry-after"] == str(Settings().quota_retry_after_seconds)
    assert (body["quota"], body["limit"], body["current"]) == ("queued_patients", 200_000, 200_000)
    assert body["type"].endswith("/quota-exceeded") and "patients" in body["detail"]
    assert store.queued_patients(session, "hostile") == 200_000  # the refused ones wrote nothing
    assert len(runner) == 20  # and enqueued nothing: 2 cohorts of 10 shards
    listed = client.get("/cohorts?limit=500", headers=headers).json()["items"]
    assert sum(c["id"] in {r.json()["id"] for r in answers[:2]} for c in listed) == 2


def test_active_jobs_quota_counts_training_jobs_and_cohorts_and_frees_up(client_for, session, runner):
    client = client_for(max_active_jobs_per_tenant=3)
    a, b = tenant_key(session, "a", admin=True), tenant_key(session, "b", admin=True)
    model_id = make_model(session)
    dataset_id = store.get_model(session, model_id).dataset_id
    train = {"dataset_id": dataset_id, "preset": "tiny", "epochs": 1}
    job_ids = [client.post("/training-jobs", json=train, headers=a).json()["id"] for _ in range(2)]
    assert client.post("/cohorts", json=cohort(model_id, 10), headers=a).status_code == 202
    for path, payload in (("/training-jobs", train), ("/cohorts", cohort(model_id, 10))):
        body = assert_problem(client.post(path, json=payload, headers=a), 429)
        assert (body["quota"], body["limit"], body["current"]) == ("active_jobs", 3, 3)
    assert client.post("/training-jobs", json=train, headers=b).status_code == 202  # b has its own quota

    retry = {**a, "Idempotency-Key": "once"}
    assert_problem(client.post("/training-jobs", json=train, headers=retry), 429)  # does not use up the key
    assert client.post(f"/training-jobs/{job_ids[0]}/cancel", headers=a).json()["status"] == "cancelled"
    r = client.post("/training-jobs", json=train, headers=retry)  # a finished job frees its place
    assert r.status_code == 202, r.text
    assert client.post("/training-jobs", json=train, headers=retry).headers["idempotent-replayed"] == "true"
    assert store.active_jobs(session, "a") == 3


def test_patients_already_generated_no_longer_count(client_for, session, runner):
    client = client_for(max_queued_patients_per_tenant=20, cohort_shard_size=10)
    headers = tenant_key(session, "a", admin=True)
    model_id = make_model(session)
    first = client.post("/cohorts", json=cohort(model_id, 20), headers=headers).json()
    assert_problem(client.post("/cohorts", json=cohort(model_id, 1), headers=headers), 429)
    shard = session.scalars(sa.select(store.JOB_KINDS["generate"].model)
                            .where(store.JOB_KINDS["generate"].model.cohort_id == first["id"])).first()
    assert store.claim_job(session, "generate", shard.id, "w")
    store.mark_succeeded(session, "generate", shard.id, worker_id="w")
    assert store.queued_patients(session, "a") == 10
    assert client.post("/cohorts", json=cohort(model_id, 10), headers=headers).status_code == 202


def test_a_cohort_larger_than_the_quota_is_a_422_naming_n_patients(client_for, session):
    client = client_for(max_queued_patients_per_tenant=500)
    r = client.post("/cohorts", json=cohort(make_model(session), 501), headers=tenant_key(session, "a", admin=True))
    body = assert_problem(r, 422, "body.n_patients")
    assert "500" in body["errors"][0]["message"]  # it could never be queued: change it, do not retry


# ---- the race: concurrent requests of one tenant cannot all pass the check

THREADS = 8


@pytest.fixture
def committed(db_url):
    """Sessions on their own connections, committing for real; the rows are removed afterwards."""
    engine = make_engine(db_url, **({"pool_size": THREADS + 2} if db_url.startswith("postgresql") else {}))
    factory = make_sessionmaker(engine)
    tenant = f"race-{uuid.uuid4().hex[:8]}"
    with factory() as s:
        model_id = make_model(s)
    yield factory, tenant, model_id
    with factory() as s:
        cohorts = sa.select(Cohort.id).where(Cohort.tenant == tenant)
        s.execute(sa.delete(CohortShard).where(CohortShard.cohort_id.in_(cohorts)))  # no CASCADE on SQLite
        s.execute(sa.delete(Cohort).where(Cohort.tenant == tenant))
        dataset_id = s.get(Model, model_id).dataset_id
        s.execute(sa.delete(Model).where(Model.id == model_id))
        s.execute(sa.delete(Dataset).where(Dataset.id == dataset_id))
        s.commit()
    engine.dispose()


def test_concurrent_requests_cannot_overshoot_the_quota(committed):
    factory, tenant, model_id = committed
    limits = store.QuotaLimits(max_active_jobs=3, max_queued_patients=0)
    barrier, outcomes = threading.Barrier(THREADS), []

    def request():
        with factory() as s:
            barrier.wait(timeout=30)
            try:
                store.create_cohort(s, model_id=model_id, n_patients=5, seed=0, spec={}, shard_size=5,
                                    tenant=tenant, quota=limits)
                outcomes.append("created")
            except store.QuotaExceeded:
                outcomes.append("refused")

    threads = [threading.Thread(target=request) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(outcomes) == ["created"] * 3 + ["refused"] * (THREADS - 3)
    with factory() as s:
        assert store.active_jobs(s, tenant) == 3
