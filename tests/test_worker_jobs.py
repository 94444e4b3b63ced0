"""The task code against real databases (PostgreSQL and the embedded SQLite file), without a broker:
claims (a second delivery while the first runs does nothing; a dead claimant is taken over; a job
whose worker keeps dying is given up), checkpoints refused when they fail their manifest, and the
embedded runner picking up what a previous process left."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from promptehr.service import store
from promptehr.service.models import CohortShard, TrainingJob
from promptehr.service.models.base import utcnow
from promptehr.service.settings import Settings
from tests.support.databases import throwaway_database
from promptehr.worker.claims import MAX_ATTEMPTS, claim, claimant_is_dead
from promptehr.worker.context import make_context, new_worker_id
from promptehr.worker.dispatch import GENERATE, TRAIN, run_task
from promptehr.worker.runner import LocalRunner

pytestmark = pytest.mark.services

SPEC = {"age": {"distribution": "normal", "mean": 70, "sd": 10, "min": 18, "max": 90}, "sex": {"female": 0.55},
        "required_codes": [], "sampling": {"temperature": 1.0, "top_p": 0.95, "top_k": 0}}


@pytest.fixture(scope="module")
def pg_url(postgres_url):
    with throwaway_database() as url:
        yield url


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def database_url(request, tmp_path_factory):
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    from promptehr.service.migrate import upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('worker-db') / 'promptehr.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture
def ctx(database_url, tmp_path, shared_data):
    settings = Settings(database_url=database_url, promptehr_home=tmp_path, data_root=shared_data,
                        model_root=tmp_path / "models")
    c = make_context(settings, device="cpu")
    yield c
    c.close()


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def dead_worker_id() -> str:
    host, _pid, rest = new_worker_id().rsplit(":", 2)
    return f"{host}:{dead_pid()}:{rest}"


def training_job(ctx, path="mimic3-demo", fmt="mimic3"):
    with ctx.session() as s:
        ds = store.create_dataset(s, name="m3", format=fmt, path=path, stats={})
        return store.create_training_job(s, dataset_id=ds.id, preset="tiny", mode="hierarchical", epochs=1, seed=0)


def fake_checkpoint(directory: Path) -> str:
    """A directory that passes manifest verification (its files are not a loadable model)."""
    from promptehr.model.nn.checkpoint import FILES, MANIFEST, sha256_of, write_manifest

    directory.mkdir(parents=True)
    for name in FILES:
        (directory / name).write_text(json.dumps({"file": name}))
    write_manifest(directory)
    return sha256_of(directory / MANIFEST)


def cohort_on(ctx, checkpoint: Path, manifest_sha: str, n=5, shard_size=2):
    with ctx.session() as s:
        ds = store.create_dataset(s, name="m3", format="mimic3", path="mimic3-demo", stats={})
        model = store.create_model(s, name="m", dataset_id=ds.id, checkpoint_path=str(checkpoint),
                                   manifest_sha256=manifest_sha)
        return store.create_cohort(s, model_id=model.id, n_patients=n, seed=1, spec=SPEC, shard_size=shard_size)


def test_claimant_liveness():
    assert not claimant_is_dead(new_worker_id())  # this process
    assert claimant_is_dead(dead_worker_id())
    assert not claimant_is_dead("another-host:1:1.abc")  # cannot tell for another host: not dead
    assert not claimant_is_dead(None)


def test_second_delivery_while_the_first_runs_does_nothing(ctx):
    job = training_job(ctx)
    first = new_worker_id()  # a live claimant: this process
    assert claim(ctx, "train", job.id, first)
    assert run_task(TRAIN, job.id, ctx) == "skipped"
    with ctx.session() as s:
        row = store.get_training_job(s, job.id)
        assert (row.status, row.claimed_by, row.attempt) == ("running", first, 1)
        store.mark_cancelled(s, "train", job.id)  # tidy: nothing left running


def test_a_dead_claimant_is_taken_over_once(ctx):
    job = training_job(ctx)
    with ctx.session() as s:
        assert store.claim_job(s, "train", job.id, dead_worker_id())
    a, b = new_worker_id(), new_worker_id()
    assert claim(ctx, "train", job.id, a)  # heartbeat fresh, but its process is gone
    assert not claim(ctx, "train", job.id, b)  # a holds it now and a is alive
    with ctx.session() as s:
        row = store.get_training_job(s, job.id)
        assert (row.claimed_by, row.attempt) == (a, 2)
        store.mark_cancelled(s, "train", job.id)


def test_a_stale_heartbeat_is_taken_over(ctx):
    job = training_job(ctx)
    with ctx.session() as s:
        assert store.claim_job(s, "train", job.id, "elsewhere:1:1.x")  # another host: liveness unknown
        assert not claim(ctx, "train", job.id, new_worker_id())
        old = utcnow() - timedelta(seconds=ctx.settings.job_stale_after_seconds + 5)
        s.execute(sa.update(TrainingJob).where(TrainingJob.id == job.id).values(heartbeat_at=old))
        s.commit()
    assert claim(ctx, "train", job.id, new_worker_id())
    with ctx.session() as s:
        store.mark_cancelled(s, "train", job.id)


def test_a_job_whose_worker_keeps_dying_is_given_up(ctx):
    job = training_job(ctx)
    for _ in range(MAX_ATTEMPTS):
        with ctx.session() as s:
            assert claim(ctx, "train", job.id, dead_worker_id())
    assert run_task(TRAIN, job.id, ctx) == "failed"
    with ctx.session() as s:
        row = store.get_training_job(s, job.id)
    assert row.status == "failed" and f"after {MAX_ATTEMPTS} attempts" in row.error


def test_a_missing_dataset_file_fails_the_job_naming_it(ctx, tmp_path):
    job = training_job(ctx, path=str(tmp_path / "gone"), fmt="long")
    assert run_task(TRAIN, job.id, ctx) == "failed"
    with ctx.session() as s:
        row = store.get_training_job(s, job.id)
    assert row.status == "failed" and str(tmp_path / "gone") in row.error and "Traceback" not in row.error


def test_bad_data_under_the_data_root_fails_the_job_naming_the_file_relative_to_it(database_url, tmp_path,
                                                                                    shared_data):
    """The stored error names the file as the user registered it (relative to the data root), with
    line, column and value, and shows nothing of the server's folders."""
    from tests.test_data_mimic3 import copy_demo

    root = tmp_path / "srv" / "data"
    folder = copy_demo(shared_data / "mimic3-demo", root / "hospital" / "m3")
    lines = (folder / "DIAGNOSES_ICD.csv").read_text().split("\n")
    lines[6] = lines[6].rsplit(",", 1)[0] + ",XYZ!!"
    (folder / "DIAGNOSES_ICD.csv").write_text("\n".join(lines))
    settings = Settings(database_url=database_url, promptehr_home=tmp_path, data_root=root,
                        model_root=tmp_path / "models")
    c = make_context(settings, device="cpu")
    try:
        job = training_job(c, path="hospital/m3")
        assert run_task(TRAIN, job.id, c) == "failed"
        with c.session() as s:
            error = store.get_training_job(s, job.id).error
    finally:
        c.close()
    assert error.startswith("hospital/m3/DIAGNOSES_ICD.csv, line 7, column 'icd9_code': not an ICD-9-CM"), error
    assert "(got 'XYZ!!')" in error and str(tmp_path) not in error and "srv" not in error


@pytest.mark.parametrize("text, expected", [
    ("/srv/data/m3/X.csv, line 7: bad", "m3/X.csv, line 7: bad"),
    ("missing file: expected X.csv in /srv/data/m3", "missing file: expected X.csv in m3"),
    ("No such file: '/srv/data/a/b'", "No such file: 'a/b'"),
    ("/srv/data: no files", ".: no files"),
    *[(other, other) for other in ("/srv/data2/x", "/srv/database", "/srv/data.old/x", "/backup/srv/data/x")],
    ("/elsewhere/x.csv: no such file", "/elsewhere/x.csv: no such file"),
])
def test_paths_under_the_data_root_are_made_relative(text, expected):
    from promptehr.service.data_paths import relative_to_data_root

    assert relative_to_data_root(text, "/srv/data/") == relative_to_data_root(text, Path("/srv/data")) == expected


def test_a_checkpoint_not_matching_the_registered_manifest_fails_the_cohort(ctx, tmp_path):
    directory = tmp_path / "ckpt"
    fake_checkpoint(directory)
    cohort, shards = cohort_on(ctx, directory, "0" * 64)
    assert run_task(GENERATE, shards[0].id, ctx) == "failed"
    with ctx.session() as s:
        shard, c = store.get_shard(s, shards[0].id), store.get_cohort(s, cohort.id)
    assert "manifest.json" in shard.error and "registered with the model" in shard.error
    assert c.status == "failed" and "manifest.json" in c.error
    assert run_task(GENERATE, shards[1].id, ctx) == "skipped"  # its cohort has failed


def test_a_tampered_checkpoint_file_fails_the_cohort_naming_it(ctx, tmp_path):
    directory = tmp_path / "ckpt"
    sha = fake_checkpoint(directory)
    (directory / "model.safetensors").write_text("not the weights that were trained")
    cohort, shards = cohort_on(ctx, directory, sha)
    assert run_task(GENERATE, shards[0].id, ctx) == "failed"
    with ctx.session() as s:
        c = store.get_cohort(s, cohort.id)
    assert c.status == "failed" and "model.safetensors" in c.error and "does not match the manifest" in c.error


def test_the_embedded_runner_picks_up_what_a_previous_process_left(ctx, tmp_path):
    directory = tmp_path / "ckpt"
    fake_checkpoint(directory)
    # A cohort whose shards were left: one queued, one running by a process that is gone, one running
    # by a live process (not ours to take).
    cohort, shards = cohort_on(ctx, directory, "0" * 64, n=6, shard_size=2)
    with ctx.session() as s:
        assert store.claim_job(s, "generate", shards[1].id, dead_worker_id())
        assert store.claim_job(s, "generate", shards[2].id, new_worker_id())
    runner = LocalRunner(ctx, recover=True)
    try:
        assert runner.wait_idle(60)
    finally:
        runner.stop()
        ctx.shutdown.clear()
    ours = {sh.id for sh in shards}
    picked = {job_id: outcome for _, job_id, outcome in runner.outcomes if job_id in ours}
    assert shards[2].id not in picked
    # the first one ran and failed (bad manifest), which fails the cohort; the other was then refused
    assert sorted(picked.values()) == ["failed", "skipped"] and set(picked) == {shards[0].id, shards[1].id}
    with ctx.session() as s:
        assert store.get_cohort(s, cohort.id).status == "failed"
        rows = {r.id: r for r in s.scalars(sa.select(CohortShard).where(CohortShard.cohort_id == cohort.id))}
        assert rows[shards[2].id].status == "running"
        store.mark_cancelled(s, "generate", shards[2].id)


def test_runner_runs_jobs_one_at_a_time_in_order(ctx, tmp_path):
    directory = tmp_path / "ckpt"
    fake_checkpoint(directory)
    runner = LocalRunner(ctx, recover=False)
    try:
        ids = []
        for _ in range(3):
            _, shards = cohort_on(ctx, directory, "0" * 64, n=1)
            ids.append(shards[0].id)
            runner(GENERATE, shards[0].id)
        t0 = time.monotonic()
        assert runner.wait_idle(60), "runner did not finish"
        assert time.monotonic() - t0 < 60
    finally:
        runner.stop()
        ctx.shutdown.clear()
    assert [(name, i) for name, i, _ in runner.outcomes] == [(GENERATE, i) for i in ids]
    assert {o for _, _, o in runner.outcomes} == {"failed"}


def test_losing_the_database_leaves_the_job_running_to_be_resumed(ctx):
    from sqlalchemy import exc as sa_exc

    from promptehr.worker.execution import run_job

    job = training_job(ctx)

    def body(_ctx, _lease):
        raise sa_exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    first = new_worker_id()
    assert run_job(ctx, "train", job.id, body, worker_id=first) == "retry"
    with ctx.session() as s:
        row = store.get_training_job(s, job.id)
    assert (row.status, row.claimed_by, row.error) == ("running", first, None)  # not failed: not its fault
    assert not claim(ctx, "train", job.id, new_worker_id())  # still looks held by a live process...
    second = new_worker_id()
    assert claim(ctx, "train", job.id, second, released=[first])  # ...until its holder says it let go
    with ctx.session() as s:
        assert store.get_training_job(s, job.id).attempt == 2
        store.mark_cancelled(s, "train", job.id)


def test_the_runner_takes_a_job_up_again_after_a_database_outage(ctx, monkeypatch):
    import promptehr.worker.runner

    calls = []

    def fake_run_task(task_name, job_id, _ctx, *, worker_id, released):
        calls.append((worker_id, list(released)))
        return "retry" if len(calls) == 1 else "succeeded"

    monkeypatch.setattr(promptehr.worker.runner, "run_task", fake_run_task)
    runner = LocalRunner(ctx, recover=False)
    try:
        runner(TRAIN, "some-job")
        assert runner.wait_idle(30)
    finally:
        runner.stop()
        ctx.shutdown.clear()
    assert runner.outcomes == [(TRAIN, "some-job", "succeeded")]
    assert len(calls) == 2 and calls[1][1] == [calls[0][0]]  # the second try may take over the first's claim
