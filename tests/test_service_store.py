"""The store the API and the worker share, on PostgreSQL and SQLite (per-test rolled-back transaction)."""
from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from promptehr.service import store
from promptehr.service.models import CohortPatient, TrainingJob
from promptehr.service.models.base import utcnow
from tests.support.service import fake_patients, make_model


def _job(session) -> TrainingJob:
    ds = store.create_dataset(session, name="d", format="mimic3", path="mimic3-demo", stats={})
    return store.create_training_job(session, dataset_id=ds.id, preset="tiny", mode="flat", epochs=2)


def test_claim_moves_queued_to_running_once(session):
    job = _job(session)
    assert job.status == "queued" and job.progress == {"done": 0, "total": 2, "unit": "epochs"}
    assert store.claim_job(session, "train", job.id, "w1") is True
    assert store.claim_job(session, "train", job.id, "w2") is False  # a second delivery does nothing
    job = store.get_training_job(session, job.id)
    assert (job.status, job.claimed_by, job.attempt) == ("running", "w1", 1)
    assert job.started_at is not None and job.heartbeat_at is not None
    assert store.claim_job(session, "train", "no-such-id", "w1") is False


def test_stale_running_job_is_taken_over(session):
    job = _job(session)
    assert store.claim_job(session, "train", job.id, "w1")
    session.execute(sa.update(TrainingJob).where(TrainingJob.id == job.id)
                    .values(heartbeat_at=utcnow() - timedelta(hours=1)))
    session.commit()
    assert store.claim_job(session, "train", job.id, "w2", stale_after=timedelta(minutes=10)) is True
    job = store.get_training_job(session, job.id)
    assert (job.claimed_by, job.attempt) == ("w2", 2)
    # the first worker lost the job: its heartbeat and progress say so
    assert store.heartbeat(session, "train", job.id, "w1") is False
    assert store.update_progress(session, "train", job.id, 1, worker_id="w1") is False
    assert store.heartbeat(session, "train", job.id, "w2") is True


def test_progress_success_and_model(session):
    job = _job(session)
    store.claim_job(session, "train", job.id, "w1")
    assert store.update_progress(session, "train", job.id, 1) is True
    assert store.get_training_job(session, job.id).progress == {"done": 1, "total": 2, "unit": "epochs"}
    model = store.create_model(session, name="m", dataset_id=job.dataset_id, checkpoint_path="/c",
                               manifest_sha256="a" * 64, config={"x": 1}, metrics={"loss": 0.5},
                               training_job_id=job.id)
    store.mark_succeeded(session, "train", job.id, model_id=model.id)
    job = store.get_training_job(session, job.id)
    assert (job.status, job.model_id, job.progress["done"]) == ("succeeded", model.id, 2)
    assert job.finished_at is not None
    assert store.claim_job(session, "train", job.id, "w3") is False
    assert store.mark_failed(session, "train", job.id, "late") is False  # finished jobs stay finished


def test_cancel(session):
    queued = _job(session)
    assert store.request_cancel_training_job(session, queued.id).status == "cancelled"
    assert store.claim_job(session, "train", queued.id, "w") is False
    running = _job(session)
    store.claim_job(session, "train", running.id, "w")
    job = store.request_cancel_training_job(session, running.id)
    assert (job.status, job.cancel_requested) == ("running", True)
    assert store.is_cancel_requested(session, "train", running.id) is True
    assert store.mark_cancelled(session, "train", running.id) is True
    assert store.get_training_job(session, running.id).status == "cancelled"


def test_failure_message(session):
    job = _job(session)
    store.claim_job(session, "train", job.id, "w")
    assert store.mark_failed(session, "train", job.id, "out of memory") is True
    job = store.get_training_job(session, job.id)
    assert (job.status, job.error) == ("failed", "out of memory")


def test_insert_patients_twice_for_a_shard_adds_nothing(session):
    cohort, _ = store.create_cohort(session, model_id=make_model(session), n_patients=30, seed=1, spec={},
                                    shard_size=10)
    store.insert_patients(session, cohort.id, 10, fake_patients(10, 10))
    store.insert_patients(session, cohort.id, 10, fake_patients(10, 10))  # redelivered shard
    store.insert_patients(session, cohort.id, 15, fake_patients(10, 15))  # overlapping: only 20..24 new
    assert store.count_patients(session, cohort.id) == 15
    idx = session.scalars(sa.select(CohortPatient.index).where(CohortPatient.cohort_id == cohort.id)
                          .order_by(CohortPatient.index)).all()
    assert idx == list(range(10, 25))
    # a row keeps its first content
    first = store.list_patients(session, cohort.id, after_index=14, limit=1)[0]
    assert first.index == 15 and first.patient["patient_id"] == "s15"


def test_patient_pages_follow_the_index(session):
    cohort, _ = store.create_cohort(session, model_id=make_model(session), n_patients=23, seed=1, spec={},
                                    shard_size=100)
    store.insert_patients(session, cohort.id, 0, fake_patients(23))
    seen, after = [], -1
    while rows := store.list_patients(session, cohort.id, after_index=after, limit=5):
        seen += [r.index for r in rows]
        after = rows[-1].index
    assert seen == list(range(23))
    chunks = list(store.iter_patients(session, cohort.id, chunk=7))
    assert [len(c) for c in chunks] == [7, 7, 7, 2]


def test_shards_last_one_queues_the_evaluation(session):
    cohort, shards = store.create_cohort(session, model_id=make_model(session), n_patients=25, seed=3,
                                         spec={"sex": {"female": 0.5}}, shard_size=10)
    assert [(s.shard_index, s.start_index, s.count) for s in shards] == [(0, 0, 10), (1, 10, 10), (2, 20, 5)]
    assert cohort.n_shards == 3 and cohort.status == "queued"

    assert store.claim_job(session, "generate", shards[0].id, "w1")
    assert store.get_cohort(session, cohort.id).status == "running"
    report_ids = []
    for shard in shards:
        store.claim_job(session, "generate", shard.id, "w1")
        store.insert_patients(session, cohort.id, shard.start_index, fake_patients(shard.count, shard.start_index))
        report_ids.append(store.mark_succeeded(session, "generate", shard.id))
        # a redelivered shard after success: no claim, no second count
        assert store.claim_job(session, "generate", shard.id, "w2") is False
        assert store.mark_succeeded(session, "generate", shard.id) is None
    assert report_ids[:2] == [None, None] and report_ids[2] is not None
    cohort = store.get_cohort(session, cohort.id)
    assert (cohort.shards_done, cohort.status, cohort.report_id) == (3, "running", None)
    assert store.cohort_progress(session, cohort) == {"done": 25, "total": 25, "unit": "patients"}

    report_id = report_ids[2]
    assert store.claim_job(session, "evaluate", report_id, "w3")
    store.save_report(session, report_id, content={"fidelity": {}}, html="<html></html>")
    store.mark_succeeded(session, "evaluate", report_id)
    cohort = store.get_cohort(session, cohort.id)
    assert (cohort.status, cohort.report_id) == ("succeeded", report_id)
    assert store.get_report(session, report_id).status == "succeeded"


def test_failed_shard_fails_the_cohort_and_stops_its_other_shards(session):
    cohort, shards = store.create_cohort(session, model_id=make_model(session), n_patients=20, seed=3, spec={},
                                         shard_size=10)
    store.claim_job(session, "generate", shards[0].id, "w1")
    store.mark_failed(session, "generate", shards[0].id, "CUDA out of memory")
    cohort = store.get_cohort(session, cohort.id)
    assert cohort.status == "failed" and "CUDA out of memory" in cohort.error
    assert store.claim_job(session, "generate", shards[1].id, "w2") is False


def test_unknown_kind_is_an_error(session):
    with pytest.raises(ValueError):
        store.claim_job(session, "bake", "x", "w")


def test_unknown_task_or_kind_in_the_registry(session):
    assert store.kind_of_task("promptehr.bake") is None
    assert store.kind_of_task("promptehr.generate").name == "generate"
    assert [store.task_name(k) for k in store.JOB_KINDS] == ["promptehr.train", "promptehr.generate",
                                                           "promptehr.evaluate"]
    with pytest.raises(store.UnknownJobKind, match="expected one of"):
        store.task_name("bake")


def test_a_trained_model_is_registered_once_per_job(session):
    job = _job(session)
    fields = {"dataset_id": job.dataset_id, "checkpoint_path": "c", "manifest_sha256": "a" * 64}
    first = store.register_trained_model(session, training_job_id=job.id, name="first", **fields)
    # a second attempt of the same job that got as far: the first registration stands
    second = store.register_trained_model(session, training_job_id=job.id, name="second", **fields)
    assert (second.id, second.name) == (first.id, "first")
    assert store.get_model_of_training_job(session, job.id).id == first.id
    assert store.get_model_of_training_job(session, "no-such-job") is None


def test_stored_prefix_stops_at_the_first_gap(session):
    cohort, _ = store.create_cohort(session, model_id=make_model(session), n_patients=30, seed=1, spec={},
                                    shard_size=10)
    assert store.stored_prefix(session, cohort.id, 10, 10) == 0
    store.insert_patients(session, cohort.id, 10, fake_patients(4, 10))
    store.insert_patients(session, cohort.id, 15, fake_patients(2, 15))  # 14 is missing
    store.insert_patients(session, cohort.id, 20, fake_patients(3, 20))  # the next shard's
    assert store.stored_prefix(session, cohort.id, 10, 10) == 4
    assert store.stored_prefix(session, cohort.id, 20, 10) == 3


def test_live_jobs_are_what_nobody_stopped_in_kind_order(session):
    train = _job(session)
    _cohort, shards = store.create_cohort(session, model_id=make_model(session), n_patients=20, seed=1, spec={},
                                          shard_size=10)
    stopped = _job(session)
    store.request_cancel_training_job(session, stopped.id)
    assert store.claim_job(session, "generate", shards[1].id, "w")
    queued = store.live_jobs(session, statuses=["queued"])
    ours = {train.id, stopped.id, *(s.id for s in shards)}
    assert [(j.kind, j.id) for j in queued if j.id in ours] == [("train", train.id), ("generate", shards[0].id)]
    running = [j for j in store.live_jobs(session, statuses=["running"]) if j.id in ours]
    assert [(j.kind, j.id, j.claimed_by) for j in running] == [("generate", shards[1].id, "w")]
    assert running[0].heartbeat_at is not None
    before = store.get_training_job(session, train.id).created_at
    assert train.id not in {j.id for j in store.live_jobs(session, statuses=["queued"], created_before=before)}
    # a failed shard ends its cohort: its other shards are no longer live
    store.mark_failed(session, "generate", shards[1].id, "boom")
    assert not {s.id for s in shards} & {j.id for j in store.live_jobs(session, statuses=["queued", "running"])}
    assert store.get_job(session, "generate", shards[1].id).status == "failed"
    assert store.get_job(session, "train", "no-such-id") is None
