"""Issue 15, the lifecycle of every resource, on both back ends (db_url): POST /cohorts/{id}/cancel,
DELETE /datasets|models|cohorts|reports/{id} (409 while in use, 204, then 404; files removed under
their root only), cancelling a finished training job twice (409), and a broker outage that left a
failed cohort's other shards `queued`. Jobs here are driven through the store as a worker would
(claim, succeed, fail); tests/test_hardening_lifecycle_jobs.py runs real ones."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from promptehr.service import store
from promptehr.service.auth import generate_key, hash_key
from promptehr.service.models import CohortPatient, CohortShard, Report
from promptehr.service.removal import confined, remove_under
from tests.support.service import assert_problem, fake_patients

NORMAL = {"distribution": "normal", "mean": 70, "sd": 10, "min": 18, "max": 90}
LIVE_WORKER = "lifecycle-test:1:1.x"  # another host: never taken for dead


def _key(session, name: str, *, admin: bool) -> dict[str, str]:
    key = generate_key()
    store.create_api_key(session, name=name, key_hash=hash_key(key), prefix=key[:10], is_admin=admin)
    return {"X-API-Key": key}


@pytest.fixture
def admin(session) -> dict[str, str]:
    """An admin key: it sees the rows these tests make through the store (they belong to no tenant)."""
    return _key(session, "lifecycle-admin", admin=True)


@pytest.fixture
def api(client_for, shared_data, tmp_path, runner):
    """The app with shards of 2 patients, a model root of the test's own, jobs recorded (not run)."""
    return client_for(data_root=shared_data, model_root=tmp_path / "models", cohort_shard_size=2)


def _model(session, checkpoint_path: str = "training-jobs/none") -> str:
    ds = store.create_dataset(session, name="d", format="mimic3", path="mimic3-demo", stats={"patients": 100})
    return store.create_model(session, name="m", dataset_id=ds.id, checkpoint_path=checkpoint_path,
                              manifest_sha256="0" * 64, config={"preset": "tiny"}).id


def _cohort(api, admin, model_id: str, n: int = 5) -> dict:
    body = {"model_id": model_id, "n_patients": n, "seed": 1, "age": NORMAL, "sex": {"female": 0.5}}
    r = api.post("/cohorts", json=body, headers=admin)
    assert r.status_code == 202, r.text
    return r.json()


def _shards(session, cohort_id: str) -> list[CohortShard]:
    session.expire_all()
    return list(session.scalars(sa.select(CohortShard).where(CohortShard.cohort_id == cohort_id)
                                .order_by(CohortShard.shard_index)))


def _generate(session, cohort_id: str) -> str:
    """Every shard of the cohort claimed, its patients stored and succeeded; the report's id."""
    report_id = None
    for shard in _shards(session, cohort_id):
        assert store.claim_job(session, "generate", shard.id, LIVE_WORKER)
        store.insert_patients(session, cohort_id, shard.start_index, fake_patients(shard.count, shard.start_index))
        report_id = store.mark_succeeded(session, "generate", shard.id) or report_id
    return report_id


def _evaluate(session, report_id: str) -> None:
    assert store.claim_job(session, "evaluate", report_id, LIVE_WORKER)
    store.save_report(session, report_id, content={"ok": True}, html="<p>ok</p>")
    store.mark_succeeded(session, "evaluate", report_id)


# --- cancelling a cohort --------------------------------------------------------------------------


def test_a_queued_cohort_is_cancelled_at_once_and_a_second_cancel_is_409(api, admin, session):
    cohort = _cohort(api, admin, _model(session))
    r = api.post(f"/cohorts/{cohort['id']}/cancel", headers=admin)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "cancelled" and r.json()["cancel_requested"] and r.json()["finished_at"]
    assert {s.status for s in _shards(session, cohort["id"])} == {"cancelled"}
    assert_problem(api.post(f"/cohorts/{cohort['id']}/cancel", headers=admin), 409)
    assert_problem(api.post("/cohorts/nope/cancel", headers=admin), 404)
    assert all(not store.claim_job(session, "generate", s.id, LIVE_WORKER) for s in _shards(session, cohort["id"]))


def test_a_running_cohort_stops_at_its_workers_next_check(api, admin, session):
    cohort = _cohort(api, admin, _model(session))
    first, *rest = _shards(session, cohort["id"])
    assert store.claim_job(session, "generate", first.id, LIVE_WORKER)
    r = api.post(f"/cohorts/{cohort['id']}/cancel", headers=admin)
    assert r.status_code == 202 and r.json()["status"] == "running" and r.json()["cancel_requested"], r.text
    assert [s.status for s in _shards(session, cohort["id"])] == ["running"] + ["cancelled"] * len(rest)
    assert store.is_cancel_requested(session, "generate", first.id)  # what the worker's lease polls
    assert api.post(f"/cohorts/{cohort['id']}/cancel", headers=admin).status_code == 202  # still stopping
    assert store.mark_cancelled(session, "generate", first.id, worker_id=LIVE_WORKER)  # the worker stopped
    assert api.get(f"/cohorts/{cohort['id']}", headers=admin).json()["status"] == "cancelled"
    assert_problem(api.post(f"/cohorts/{cohort['id']}/cancel", headers=admin), 409)


def test_a_shard_that_finishes_after_the_cancel_queues_no_evaluation(api, admin, session):
    cohort = _cohort(api, admin, _model(session), n=2)  # one shard
    (shard,) = _shards(session, cohort["id"])
    assert store.claim_job(session, "generate", shard.id, LIVE_WORKER)
    assert api.post(f"/cohorts/{cohort['id']}/cancel", headers=admin).status_code == 202
    store.insert_patients(session, cohort["id"], 0, fake_patients(2))
    assert store.mark_succeeded(session, "generate", shard.id) is None  # nothing to enqueue
    assert api.get(f"/cohorts/{cohort['id']}", headers=admin).json()["status"] == "cancelled"
    reports = session.scalars(sa.select(Report).where(Report.cohort_id == cohort["id"])).all()
    assert [r.status for r in reports] in ([], ["cancelled"])


def test_a_finished_cohort_cannot_be_cancelled(api, admin, session):
    cohort = _cohort(api, admin, _model(session), n=2)
    _evaluate(session, _generate(session, cohort["id"]))
    assert api.get(f"/cohorts/{cohort['id']}", headers=admin).json()["status"] == "succeeded"
    assert_problem(api.post(f"/cohorts/{cohort['id']}/cancel", headers=admin), 409)


def test_a_failed_shard_cancels_the_queued_ones_and_stops_the_running_ones(api, admin, session):
    cohort = _cohort(api, admin, _model(session), n=6)
    a, b, _ = _shards(session, cohort["id"])
    assert store.claim_job(session, "generate", a.id, LIVE_WORKER)
    assert store.claim_job(session, "generate", b.id, LIVE_WORKER)
    assert store.mark_failed(session, "generate", a.id, "boom")
    assert [s.status for s in _shards(session, cohort["id"])] == ["failed", "running", "cancelled"]
    assert store.is_cancel_requested(session, "generate", b.id)  # its cohort failed: stop
    body = api.get(f"/cohorts/{cohort['id']}", headers=admin).json()
    assert body["status"] == "failed" and "boom" in body["error"]


def test_after_a_broker_outage_no_shard_of_the_failed_cohort_stays_queued(client_for, shared_data, admin, session):
    # A broker nobody listens on (port 1 refuses at once): the real enqueue path fails.
    api = client_for(data_root=shared_data, cohort_shard_size=2, celery_broker_url="redis://127.0.0.1:1/0")
    model_id = _model(session)
    body = {"model_id": model_id, "n_patients": 6, "seed": 1, "age": NORMAL, "sex": {"female": 0.5}}
    r = api.post("/cohorts", json=body, headers=admin)
    assert assert_problem(r, 503)["type"].endswith("/queue-unavailable")
    (cohort,) = [c for c in store.list_cohorts(session, limit=100) if c.model_id == model_id]
    assert cohort.status == "failed" and "broker" in cohort.error
    assert [s.status for s in _shards(session, cohort.id)] == ["failed", "cancelled", "cancelled"]


# --- training jobs --------------------------------------------------------------------------------


def test_cancelling_a_cancelled_training_job_is_409(api, admin, session):
    ds = store.create_dataset(session, name="d", format="mimic3", path="mimic3-demo", stats={})
    job = api.post("/training-jobs", json={"dataset_id": ds.id, "epochs": 1}, headers=admin).json()
    assert api.post(f"/training-jobs/{job['id']}/cancel", headers=admin).json()["status"] == "cancelled"
    body = assert_problem(api.post(f"/training-jobs/{job['id']}/cancel", headers=admin), 409)
    assert "cancelled" in body["detail"]


# --- deleting ---------------------------------------------------------------------------------------


def test_deleting_a_cohort_removes_its_patients_shards_and_report(api, admin, session):
    cohort = _cohort(api, admin, _model(session), n=4)
    assert_problem(api.delete(f"/cohorts/{cohort['id']}", headers=admin), 409)  # queued: cancel it first
    report_id = _generate(session, cohort["id"])
    assert_problem(api.delete(f"/cohorts/{cohort['id']}", headers=admin), 409)  # being evaluated
    _evaluate(session, report_id)
    r = api.delete(f"/cohorts/{cohort['id']}", headers=admin)
    assert r.status_code == 204 and r.content == b"", r.text
    assert_problem(api.get(f"/cohorts/{cohort['id']}", headers=admin), 404)
    assert_problem(api.get(f"/reports/{report_id}", headers=admin), 404)
    assert_problem(api.delete(f"/cohorts/{cohort['id']}", headers=admin), 404)
    for table in (CohortPatient, CohortShard, Report):
        assert session.scalar(sa.select(sa.func.count()).select_from(table).where(table.cohort_id == cohort["id"])) == 0


def test_a_cancelled_cohort_is_deletable_once_its_running_shard_has_stopped(api, admin, session):
    cohort = _cohort(api, admin, _model(session))
    first = _shards(session, cohort["id"])[0]
    assert store.claim_job(session, "generate", first.id, LIVE_WORKER)
    store.mark_failed(session, "generate", _shards(session, cohort["id"])[1].id, "boom")  # cohort failed
    assert_problem(api.delete(f"/cohorts/{cohort['id']}", headers=admin), 409)  # its shard still runs
    store.mark_cancelled(session, "generate", first.id)
    assert api.delete(f"/cohorts/{cohort['id']}", headers=admin).status_code == 204


def test_deleting_a_report_keeps_its_cohort(api, admin, session):
    cohort = _cohort(api, admin, _model(session), n=2)
    report_id = _generate(session, cohort["id"])
    assert_problem(api.delete(f"/reports/{report_id}", headers=admin), 409)  # queued
    _evaluate(session, report_id)
    assert api.delete(f"/reports/{report_id}", headers=admin).status_code == 204
    assert_problem(api.get(f"/reports/{report_id}", headers=admin), 404)
    assert_problem(api.delete(f"/reports/{report_id}", headers=admin), 404)
    after = api.get(f"/cohorts/{cohort['id']}", headers=admin).json()
    assert after["status"] == "succeeded" and after["report_id"] is None
    assert len(api.get(f"/cohorts/{cohort['id']}/patients", headers=admin).json()["items"]) == 2


def test_deleting_a_model_removes_its_checkpoint_under_the_model_root(api, admin, session, tmp_path):
    folder = tmp_path / "models" / "training-jobs" / "job1"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "weights.bin").write_bytes(b"w")
    (tmp_path / "models" / "training-jobs" / "job1.resume").mkdir()
    model_id = _model(session, "training-jobs/job1")
    cohort = _cohort(api, admin, model_id, n=2)
    body = assert_problem(api.delete(f"/models/{model_id}", headers=admin), 409)  # a queued cohort uses it
    assert "cohort" in body["detail"]
    api.post(f"/cohorts/{cohort['id']}/cancel", headers=admin)
    assert_problem(api.delete(f"/models/{model_id}", headers=admin), 409)  # its cohort is still there
    assert api.delete(f"/cohorts/{cohort['id']}", headers=admin).status_code == 204
    assert api.delete(f"/models/{model_id}", headers=admin).status_code == 204
    assert not folder.exists() and not (folder.parent / "job1.resume").exists()
    assert (tmp_path / "models" / "training-jobs").is_dir()
    assert_problem(api.get(f"/models/{model_id}", headers=admin), 404)
    assert_problem(api.delete(f"/models/{model_id}", headers=admin), 404)


def test_a_model_whose_checkpoint_path_leaves_the_root_keeps_those_files(api, admin, session, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "link").symlink_to(outside, target_is_directory=True)
    for path in (str(outside), "../outside", "link/../../outside"):
        model_id = _model(session, path)
        assert api.delete(f"/models/{model_id}", headers=admin).status_code == 204
    model_id = _model(session, "link")  # a link under the root: the link goes, never its target
    assert api.delete(f"/models/{model_id}", headers=admin).status_code == 204
    assert (outside / "keep.txt").read_text() == "mine" and not (tmp_path / "models" / "link").exists()


def test_deleting_a_dataset_drops_its_registration_never_its_files(api, admin, session, shared_data):
    ds_id = store.create_dataset(session, name="d", format="mimic3", path="mimic3-demo", stats={}).id
    job = api.post("/training-jobs", json={"dataset_id": ds_id, "epochs": 1}, headers=admin).json()
    assert_problem(api.delete(f"/datasets/{ds_id}", headers=admin), 409)  # its training job is queued
    api.post(f"/training-jobs/{job['id']}/cancel", headers=admin)
    model = store.create_model(session, name="m", dataset_id=ds_id, checkpoint_path="x", manifest_sha256="0" * 64)
    assert "model" in assert_problem(api.delete(f"/datasets/{ds_id}", headers=admin), 409)["detail"]
    assert api.delete(f"/models/{model.id}", headers=admin).status_code == 204
    before = sorted(p.name for p in (shared_data / "mimic3-demo").iterdir())
    assert api.delete(f"/datasets/{ds_id}", headers=admin).status_code == 204
    assert sorted(p.name for p in (shared_data / "mimic3-demo").iterdir()) == before
    assert_problem(api.get(f"/datasets/{ds_id}", headers=admin), 404)
    assert_problem(api.get(f"/training-jobs/{job['id']}", headers=admin), 404)  # its finished job went with it
    assert_problem(api.delete(f"/datasets/{ds_id}", headers=admin), 404)


def test_another_tenant_can_neither_cancel_nor_delete(api, admin, session):
    other = _key(session, "someone-else", admin=False)
    cohort = _cohort(api, admin, _model(session), n=2)
    assert_problem(api.post(f"/cohorts/{cohort['id']}/cancel", headers=other), 404)
    assert_problem(api.delete(f"/cohorts/{cohort['id']}", headers=other), 404)
    assert_problem(api.delete(f"/models/{cohort['model_id']}", headers=other), 404)
    assert api.get(f"/cohorts/{cohort['id']}", headers=admin).json()["status"] == "queued"


# --- confinement ------------------------------------------------------------------------------------


def test_removal_is_confined_to_its_root(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "up").symlink_to(tmp_path, target_is_directory=True)
    for path in ("", ".", "..", "a/..", "../elsewhere", str(tmp_path / "elsewhere"), "up/elsewhere"):
        assert confined(root, path) is None, path
        assert not remove_under(root, path)
    assert (tmp_path / "elsewhere").is_dir() and (root / "a").is_dir()
    assert confined(root, "a") == root.resolve() / "a" and remove_under(root, "a") and not (root / "a").exists()
    assert not remove_under(root, "a")  # nothing there any more


def test_a_model_deleted_while_its_cohort_is_created_is_a_409(api, admin, session, monkeypatch):
    """DELETE /models/{id} between POST /cohorts' model check and its insert: the insert's foreign key
    refused the cohort and the client got a 500. Simulated by a model check that sees a model the
    database no longer holds; now a 409 (the request's transaction, cohort and shards, rolled back)."""
    from types import SimpleNamespace

    from promptehr.service.routes import cohorts as route

    model_id = _model(session)
    row = store.get_model(session, model_id)
    seen = SimpleNamespace(**{a.key: getattr(row, a.key) for a in sa.inspect(row).mapper.column_attrs})
    assert api.delete(f"/models/{model_id}", headers=admin).status_code == 204
    monkeypatch.setattr(route.store, "get_model", lambda *a, **k: seen)
    body = {"model_id": model_id, "n_patients": 3, "seed": 1, "age": NORMAL, "sex": {"female": 0.5}}
    problem = assert_problem(api.post("/cohorts", json=body, headers=admin), 409)
    assert "deleted meanwhile" in problem["detail"]
