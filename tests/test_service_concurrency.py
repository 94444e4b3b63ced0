"""Races on real PostgreSQL with real commits: concurrent claims of one job, concurrent last shards."""
from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from promptehr.service import store
from promptehr.service.db import make_engine, make_sessionmaker
from promptehr.service.models import Cohort, Dataset, Model, TrainingJob
from tests.support.service import fake_patients

THREADS = 6


@pytest.fixture
def pg(pg_migrated_url):
    engine = make_engine(pg_migrated_url, pool_size=THREADS + 2)
    factory = make_sessionmaker(engine)
    made: dict[str, list[str]] = {"datasets": [], "models": [], "cohorts": []}
    yield factory, made
    with factory() as s:  # these rows were committed: remove them
        s.execute(sa.delete(Cohort).where(Cohort.id.in_(made["cohorts"])))
        s.execute(sa.delete(Model).where(Model.id.in_(made["models"])))
        s.execute(sa.delete(TrainingJob).where(TrainingJob.dataset_id.in_(made["datasets"])))
        s.execute(sa.delete(Dataset).where(Dataset.id.in_(made["datasets"])))
        s.commit()
    engine.dispose()


def _race(factory, fn) -> list:
    """Run fn(session, i) in THREADS threads released together; return their results."""
    barrier = threading.Barrier(THREADS)
    results: list = [None] * THREADS
    errors: list = []

    def run(i):
        try:
            with factory() as s:
                barrier.wait(timeout=10)
                results[i] = fn(s, i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    return results


def test_concurrent_claims_of_one_job_have_exactly_one_winner(pg):
    factory, made = pg
    with factory() as s:
        ds = store.create_dataset(s, name="race", format="mimic3", path="mimic3-demo", stats={})
        made["datasets"].append(ds.id)
        jobs = [store.create_training_job(s, dataset_id=ds.id, preset="tiny", mode="flat", epochs=1).id
                for _ in range(10)]
    for job_id in jobs:
        results = _race(factory, lambda s, i, job_id=job_id: store.claim_job(s, "train", job_id, f"worker-{i}"))
        assert results.count(True) == 1, results
        with factory() as s:
            job = store.get_training_job(s, job_id)
            assert job.status == "running" and job.attempt == 1
            assert job.claimed_by == f"worker-{results.index(True)}"


def test_concurrent_last_shards_queue_exactly_one_evaluation(pg):
    factory, made = pg
    with factory() as s:
        ds = store.create_dataset(s, name="race", format="mimic3", path="mimic3-demo", stats={})
        made["datasets"].append(ds.id)
        model = store.create_model(s, name="m", dataset_id=ds.id, checkpoint_path="/c", manifest_sha256="0" * 64)
        made["models"].append(model.id)
        cohort, shards = store.create_cohort(s, model_id=model.id, n_patients=THREADS * 3, seed=0, spec={},
                                             shard_size=3)
        made["cohorts"].append(cohort.id)
        cohort_id = cohort.id
        shard_ids = [shard.id for shard in shards]
        for shard_id in shard_ids:
            assert store.claim_job(s, "generate", shard_id, "w")
    # every shard finishes at once, and each is also delivered twice (two finishers per shard)
    results = _race(factory, lambda s, i: store.mark_succeeded(s, "generate", shard_ids[i]))
    again = _race(factory, lambda s, i: store.mark_succeeded(s, "generate", shard_ids[i]))
    report_ids = [r for r in results + again if r is not None]
    assert len(report_ids) == 1, results + again
    with factory() as s:
        cohort = store.get_cohort(s, cohort_id)
        assert cohort.shards_done == THREADS
        assert store.get_report(s, report_ids[0]).cohort_id == cohort.id


def test_embedded_sqlite_takes_concurrent_shard_workers(tmp_path):
    """The embedded runner's case: several threads writing one SQLite file at once, a reader paging."""
    from promptehr.service.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'embedded.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    with factory() as s:
        ds = store.create_dataset(s, name="d", format="mimic3", path="mimic3-demo", stats={})
        model = store.create_model(s, name="m", dataset_id=ds.id, checkpoint_path="/c", manifest_sha256="0" * 64)
        cohort, shards = store.create_cohort(s, model_id=model.id, n_patients=THREADS * 50, seed=0, spec={},
                                             shard_size=50)
        cohort_id, shard_ids = cohort.id, [sh.id for sh in shards]

    def work(s, i):
        shard = store.get_shard(s, shard_ids[i])
        assert store.claim_job(s, "generate", shard.id, f"w{i}")
        for b in range(5):
            start = shard.start_index + b * 10
            store.insert_patients(s, cohort_id, start, fake_patients(10, start))
            assert store.update_progress(s, "generate", shard.id, (b + 1) * 10, worker_id=f"w{i}")
            assert not store.is_cancel_requested(s, "generate", shard.id)
            store.list_patients(s, cohort_id, limit=20)
        return store.mark_succeeded(s, "generate", shard.id, worker_id=f"w{i}")

    results = _race(factory, work)
    assert len([r for r in results if r]) == 1
    with factory() as s:
        assert store.count_patients(s, cohort_id) == THREADS * 50
        assert store.get_cohort(s, cohort_id).shards_done == THREADS
    engine.dispose()
