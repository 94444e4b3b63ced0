"""Issue 15's lifecycle with real jobs, on both back ends (a PostgreSQL database of its own and a SQLite
file): cancelling a cohort while its worker generates stops the worker at its next batch; a cancelled
training job, and a failed one, leave no scratch (`<model_root>/training-jobs/<id>.resume/`, nor the
partial checkpoint no model came of). The jobs run through worker.dispatch.run_task, the code Celery
and the embedded runner run, on a thread of the test."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from promptehr.model.nn.checkpoint import resume_dir
from promptehr.service import store
from promptehr.service.settings import Settings
from tests.support.databases import throwaway_database
from tests.test_worker_jobs import SPEC, dead_worker_id
from promptehr.worker.claims import MAX_ATTEMPTS, claim, new_worker_id
from promptehr.worker.context import make_context
from promptehr.worker.dispatch import GENERATE, TRAIN, run_task
from promptehr.worker.train_task import job_dir

pytestmark = [pytest.mark.services, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def database_url(request, tmp_path_factory):
    if request.param == "sqlite":
        from promptehr.service.migrate import upgrade

        url = f"sqlite:///{tmp_path_factory.mktemp('lifecycle-db') / 'promptehr.sqlite3'}"
        upgrade(url)
        yield url
        return
    with throwaway_database() as url:
        yield url


@pytest.fixture(scope="module")
def model_root(database_url, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lifecycle-models")


@pytest.fixture
def ctx(database_url, model_root, shared_data, tmp_path):
    # One patient per batch: a cancel has many batch boundaries to land on.
    settings = Settings(database_url=database_url, promptehr_home=tmp_path, data_root=shared_data,
                        model_root=model_root, generation_batch_size=1)
    c = make_context(settings, device="cpu")
    yield c
    c.close()


def _training_job(ctx, epochs: int = 1, **options):
    with ctx.session() as s:
        ds = store.create_dataset(s, name="m3", format="mimic3", path="mimic3-demo", stats={})
        return store.create_training_job(s, dataset_id=ds.id, preset="tiny", mode="hierarchical", epochs=epochs,
                                         seed=0, options=options)


@pytest.fixture(scope="module")
def model_id(database_url, model_root, shared_data, tmp_path_factory, one_thread) -> str:
    """A tiny model trained for one epoch (enough to generate with)."""
    settings = Settings(database_url=database_url, promptehr_home=tmp_path_factory.mktemp("home"),
                        data_root=shared_data, model_root=model_root)
    c = make_context(settings, device="cpu")
    try:
        job = _training_job(c)
        assert run_task(TRAIN, job.id, c) == "succeeded"
        with c.session() as s:
            return store.get_training_job(s, job.id).model_id
    finally:
        c.close()


def _in_thread(fn, *args) -> tuple[threading.Thread, list]:
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    t.start()
    return t, out


def _wait_for(what: str, check, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_cancelling_a_cohort_stops_its_worker_at_the_next_batch(ctx, model_id):
    n = 5000
    with ctx.session() as s:
        cohort, (shard,) = store.create_cohort(s, model_id=model_id, n_patients=n, seed=1, spec=SPEC, shard_size=n)

    def stored() -> int:
        with ctx.session() as s:
            return store.count_patients(s, cohort.id)

    thread, outcome = _in_thread(run_task, GENERATE, shard.id, ctx)
    _wait_for("patient stored", lambda: stored() >= 1)
    with ctx.session() as s:
        assert store.request_cancel_cohort(s, cohort.id)
    thread.join(120)
    assert outcome == ["cancelled"]
    with ctx.session() as s:
        row, sh = store.get_cohort(s, cohort.id), store.get_shard(s, shard.id)
        assert (row.status, sh.status) == ("cancelled", "cancelled") and row.finished_at is not None
    done = stored()
    assert 1 <= done < n
    time.sleep(1.5)  # a worker still writing would have stored more by now
    assert stored() == done


@pytest.mark.slow
def test_a_cancelled_training_job_leaves_no_scratch(ctx):
    # Long enough to be cancelled: no early stop, a snapshot (the scratch) at every epoch end.
    job = _training_job(ctx, epochs=500, early_stopping_patience=1000, max_val_patients=5)
    out = job_dir(ctx.model_root, job.id)
    thread, outcome = _in_thread(run_task, TRAIN, job.id, ctx)
    _wait_for("resume snapshot", resume_dir(out).is_dir)
    with ctx.session() as s:
        assert store.request_cancel_training_job(s, job.id).cancel_requested
    thread.join(120)
    assert outcome == ["cancelled"]
    assert not resume_dir(out).exists() and not out.exists(), sorted(p.name for p in out.parent.iterdir())
    with ctx.session() as s:
        assert store.get_training_job(s, job.id).status == "cancelled"


def test_a_failed_training_job_leaves_no_scratch(ctx):
    job = _training_job(ctx)
    out = job_dir(ctx.model_root, job.id)
    for _ in range(MAX_ATTEMPTS):  # each attempt's worker died, leaving its snapshot
        assert claim(ctx, "train", job.id, dead_worker_id())
    resume_dir(out).mkdir(parents=True)
    (resume_dir(out) / "state.pt").write_bytes(b"\0" * 1024)
    (out / "model.safetensors").parent.mkdir(parents=True, exist_ok=True)
    (out / "model.safetensors").write_bytes(b"\0" * 1024)
    assert run_task(TRAIN, job.id, ctx) == "failed"
    assert not resume_dir(out).exists() and not out.exists()


def test_a_failed_job_whose_model_was_registered_keeps_the_checkpoint(ctx):
    job = _training_job(ctx)
    out = job_dir(ctx.model_root, job.id)
    out.mkdir(parents=True)
    (out / "manifest.json").write_text("{}")
    resume_dir(out).mkdir()
    with ctx.session() as s:
        ds_id = store.get_training_job(s, job.id).dataset_id
        store.register_trained_model(s, training_job_id=job.id, name="m", dataset_id=ds_id,
                                     checkpoint_path=str(out.relative_to(ctx.model_root)), manifest_sha256="0" * 64)
    for _ in range(MAX_ATTEMPTS):
        assert claim(ctx, "train", job.id, dead_worker_id())
    assert run_task(TRAIN, job.id, ctx) == "failed"  # given up: the model row stays, and its files
    assert (out / "manifest.json").is_file() and not resume_dir(out).exists()


@pytest.mark.slow
def test_a_model_whose_validation_leaves_measures_undefined_is_registered(ctx):
    """Five validation patients leave some measures NaN; PostgreSQL's JSON refused the model's metrics
    ("invalid input syntax for type json") and a 202-accepted job failed. They are stored as null."""
    import json

    job = _training_job(ctx, max_val_patients=5)
    assert run_task(TRAIN, job.id, ctx) == "succeeded"
    with ctx.session() as s:
        model = store.get_model(s, store.get_training_job(s, job.id).model_id)
        text = json.dumps(model.metrics, allow_nan=False)  # raises on any NaN left
    assert '"log"' in text


def test_a_job_asked_to_stop_whose_worker_died_is_finished_by_the_sweep(ctx):
    """Claims and the orphan sweep skip a job with cancel_requested, so one whose worker died after the
    cancel stayed `running` with its scratch forever; the sweep now cancels it and removes the scratch."""
    from promptehr.worker.dispatch import finish_abandoned

    job = _training_job(ctx)
    out = job_dir(ctx.model_root, job.id)
    assert claim(ctx, "train", job.id, dead_worker_id())
    resume_dir(out).mkdir(parents=True)
    with ctx.session() as s:
        assert store.request_cancel_training_job(s, job.id).cancel_requested
        assert store.get_training_job(s, job.id).status == "running"
    alive = _training_job(ctx)  # asked to stop, its claimant (this process) alive: left to it
    assert claim(ctx, "train", alive.id, new_worker_id())
    with ctx.session() as s:
        store.request_cancel_training_job(s, alive.id)
    assert finish_abandoned(ctx) == 1
    with ctx.session() as s:
        assert store.get_training_job(s, job.id).status == "cancelled"
        assert store.get_training_job(s, alive.id).status == "running"
    assert not resume_dir(out).exists()
    assert finish_abandoned(ctx) == 0
