"""Issue 15, defects 3, 4 and 6: data files and job time limits.

- POST /datasets reads a file only if it is a regular file inside the data root, within the size,
  decompression and time limits: a FIFO, a socket, a gzip bomb, an oversized file, a header field
  over csv.field_size_limit() are 422s naming the file, never a hung or swollen API worker or a 500;
- the data-root check is made again when a job reads the data set: a symlink repointed out of the
  root after registration, or a file swapped for a FIFO, fails the job with the reason;
- a job past its time limit is failed with the reason, and a job that ignores a cancel (or its time
  limit) while stuck has its row finished for it: it does not stay running with fresh heartbeats.
Both database back ends where a row is written; the worker side through run_task / run_job, the
code the embedded runner and Celery run.
"""
from __future__ import annotations

import gzip
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from promptehr.model.data import ReadLimits, load_patients
from promptehr.model.data.opening import open_data_file, read_limits
from promptehr.model.errors import DataError
from promptehr.service import store
from promptehr.service.settings import Settings
from tests.support.service import assert_problem
from promptehr.worker.context import make_context, new_worker_id
from promptehr.worker.dispatch import TRAIN, run_task
from promptehr.worker.execution import Stopped, run_job

HEADER = "patient_id,visit_id,visit_time,code,age,sex\n"
ROWS = "".join(f"p{i},v{i}-{j},2020-0{j + 1}-01,{code},{40 + i},{'MF'[i % 2]}\n"
               for i in range(12) for j, code in enumerate(("4019", "25000", "41401")))


def long_csv(path: Path) -> Path:
    """A small valid long-format file (12 patients, 3 visits each)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + ROWS)
    return path


def gzip_bomb(path: Path, decompressed_mb: int) -> Path:
    """A valid long-format .csv.gz that expands about a thousandfold (the same row over and over)."""
    block = (ROWS.splitlines(keepends=True)[0] * 20_000).encode()
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(HEADER.encode())
        for _ in range(decompressed_mb * (1 << 20) // len(block) + 1):
            f.write(block)
    return path


@contextmanager
def unblocked_later(fifo: Path):
    """Safety net: should a regression open the FIFO and wait for a writer, one comes after a minute,
    so that the test fails with a wrong answer instead of hanging the suite."""
    done = threading.Event()

    def writer():
        if not done.wait(60):
            with open(fifo, "wb"):
                pass

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()


def post_dataset(client, auth, path: str, fmt: str = "long"):
    return client.post("/datasets", json={"name": "x", "format": fmt, "path": path}, headers=auth)


def path_message(body: dict) -> str:
    return " ".join(e["message"] for e in body["errors"] if e["field"] == "body.path")


# ---- POST /datasets ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_a_fifo_or_socket_in_the_data_root_is_a_422_naming_it(client_for, auth, tmp_path, kind):
    root = tmp_path / "data"
    root.mkdir()
    client = client_for(data_root=root)
    target = root / "records.csv"
    if kind == "fifo":
        os.mkfifo(target)
        with unblocked_later(target):
            r = post_dataset(client, auth, "records.csv")
    else:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(target))
            r = post_dataset(client, auth, "records.csv")
    body = assert_problem(r, 422, "body.path")
    message = path_message(body)
    assert "records.csv" in message and str(root) not in message, message
    assert ("FIFO" if kind == "fifo" else "cannot open") in message, message


def test_a_gzip_bomb_is_a_422_at_the_decompression_limit(client_for, auth, tmp_path, session):
    root = tmp_path / "data"
    root.mkdir()
    bomb = gzip_bomb(root / "bomb.csv.gz", decompressed_mb=64)
    assert bomb.stat().st_size < 1 << 20  # a small file on disk
    client = client_for(data_root=root, data_max_decompressed_bytes=8 << 20)
    before = len(store.list_datasets(session, limit=1000))
    body = assert_problem(post_dataset(client, auth, "bomb.csv.gz"), 422, "body.path")
    assert "bomb.csv.gz" in path_message(body) and "over the limit of 8,388,608 bytes" in path_message(body)
    assert len(store.list_datasets(session, limit=1000)) == before


def test_a_file_over_the_size_limit_is_a_422(client_for, auth, tmp_path):
    root = tmp_path / "data"
    long_csv(root / "big.csv")
    client = client_for(data_root=root, data_max_file_bytes=100)
    body = assert_problem(post_dataset(client, auth, "big.csv"), 422, "body.path")
    assert "big.csv" in path_message(body) and "expected at most 100 bytes" in path_message(body)
    # The same file within the default limits registers.
    r = post_dataset(client_for(data_root=root), auth, "big.csv")
    assert r.status_code == 201, r.text
    assert r.json()["stats"]["patients"] == 12


@pytest.mark.parametrize("fmt, name", [("long", "records.csv"), ("mimic3", "m3/PATIENTS.csv")])
def test_a_csv_header_field_over_131072_characters_is_a_422_naming_the_file(client_for, auth, tmp_path, shared_data,
                                                                             fmt, name):
    root = tmp_path / "data"
    if fmt == "mimic3":
        for f in ("PATIENTS.csv", "ADMISSIONS.csv", "DIAGNOSES_ICD.csv"):
            (root / "m3").mkdir(parents=True, exist_ok=True)
            (root / "m3" / f).write_bytes((shared_data / "mimic3-demo" / f).read_bytes())
    target = root / name
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = (target.read_text() if target.exists() else HEADER + ROWS).split("\n", 1)
    target.write_text(lines[0] + "," + "x" * 131_073 + "\n" + lines[1])
    r = post_dataset(client_for(data_root=root), auth, name.split("/")[0] if fmt == "mimic3" else name, fmt)
    body = assert_problem(r, 422, "body.path")
    assert name in path_message(body) and "line 1" in path_message(body), path_message(body)


def test_a_file_symlinked_out_of_the_root_inside_a_registered_folder_is_a_422(client_for, auth, tmp_path):
    root, outside = tmp_path / "data", tmp_path / "outside"
    long_csv(root / "folder" / "a.csv")
    os.symlink(long_csv(outside / "secret.csv"), root / "folder" / "b.csv")
    body = assert_problem(post_dataset(client_for(data_root=root), auth, "folder"), 422, "body.path")
    assert "folder/b.csv" in path_message(body) and "outside the data root" in path_message(body)
    assert "secret" not in path_message(body) and str(tmp_path) not in path_message(body)


# ---- the reading layer (model/, plain limits) -----------------------------------------------------


def test_a_gzip_bomb_is_refused_while_streaming_not_after_inflating_it(tmp_path):
    bomb = gzip_bomb(tmp_path / "bomb.csv.gz", decompressed_mb=64)
    limit, handed_out = 4 << 20, 0
    limits = ReadLimits(max_decompressed_bytes=limit)
    with read_limits(limits), pytest.raises(DataError, match="over the limit"), open_data_file(bomb) as f:
        while chunk := f.read(1 << 16):
            handed_out += len(chunk)
    assert handed_out <= limit  # what a reader got before the refusal: never the 64 MiB


def test_a_parquet_file_whose_row_groups_expand_past_the_limit_is_refused(tmp_path):
    path = tmp_path / "records.parquet"
    table = pa.table({"patient_id": ["p1"] * 200_000, "visit_id": ["v1"] * 200_000,
                      "visit_time": ["2020-01-01"] * 200_000, "code": ["4019"] * 200_000})
    pq.write_table(table, path, compression="zstd")
    assert len(load_patients(path)) == 1
    with pytest.raises(DataError, match="decoded data over the limit of 100,000 bytes"):
        load_patients(path, limits=ReadLimits(max_decompressed_bytes=100_000))


def test_the_read_time_limit_stops_a_load(shared_data):
    with pytest.raises(DataError, match="reading took longer than the limit of 0 s"):
        load_patients(shared_data / "mimic3-demo", limits=ReadLimits(max_seconds=0))


def test_a_directory_or_device_is_not_read_as_a_file(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataError, match="a folder, not a regular file"):
        open_data_file(tmp_path / "dir.csv")
    with pytest.raises(DataError, match="a character device, not a regular file"):
        open_data_file("/dev/zero")


# ---- jobs ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[pytest.param("postgresql", marks=pytest.mark.services), "sqlite"])
def job_database(request, tmp_path_factory):
    if request.param == "postgresql":
        request.getfixturevalue("postgres_url")  # fails, never skips, when PostgreSQL is down
        # Imported here, not at the top: a module importing it is marked `services` as a whole, and
        # the SQLite half of this module belongs to the fast subset.
        from tests.support.databases import throwaway_database

        with throwaway_database() as url:
            yield url
        return
    from promptehr.service.migrate import upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('files-db') / 'promptehr.sqlite3'}"
    upgrade(url)
    yield url


@pytest.fixture
def make_ctx(job_database, tmp_path):
    contexts = []

    def make(**overrides):
        settings = Settings(database_url=job_database, promptehr_home=tmp_path, data_root=tmp_path / "data",
                            model_root=tmp_path / "models", **overrides)
        contexts.append(make_context(settings, device="cpu"))
        return contexts[-1]

    yield make
    for c in contexts:
        c.close()


def training_job(ctx, path: str):
    with ctx.session() as s:
        ds = store.create_dataset(s, name="d", format="long", path=path, stats={"patients": 12})
        return store.create_training_job(s, dataset_id=ds.id, preset="tiny", mode="hierarchical", epochs=1, seed=0)


def job_row(ctx, job_id: str):
    with ctx.session() as s:
        return store.get_training_job(s, job_id)


def test_a_symlink_repointed_out_of_the_root_after_registration_fails_the_job(make_ctx, tmp_path):
    ctx = make_ctx()
    root, outside = tmp_path / "data", tmp_path / "outside"
    os.symlink(long_csv(root / "real.csv"), root / "records.csv")  # inside the root when registered
    job = training_job(ctx, "records.csv")
    (root / "records.csv").unlink()
    os.symlink(long_csv(outside / "secret.csv"), root / "records.csv")
    assert run_task(TRAIN, job.id, ctx) == "failed"
    row = job_row(ctx, job.id)
    assert row.status == "failed" and row.error.startswith("records.csv: resolves outside the data root"), row.error
    assert "secret" not in row.error and str(tmp_path) not in row.error
    assert not (ctx.model_root / "training-jobs" / job.id / "config.json").exists()


def test_a_dataset_swapped_for_a_fifo_fails_the_job_naming_it(make_ctx, tmp_path):
    ctx = make_ctx()
    path = long_csv(tmp_path / "data" / "records.csv")
    job = training_job(ctx, "records.csv")
    path.unlink()
    os.mkfifo(path)
    with unblocked_later(path):
        assert run_task(TRAIN, job.id, ctx) == "failed"
    row = job_row(ctx, job.id)
    assert row.status == "failed" and row.error == "records.csv: a FIFO, not a regular file: expected a data file"


def test_a_job_past_its_time_limit_is_failed_with_the_reason(make_ctx, tmp_path):
    ctx = make_ctx(train_time_limit_seconds=0.001)  # loading alone takes longer
    long_csv(tmp_path / "data" / "records.csv")
    job = training_job(ctx, "records.csv")
    assert run_task(TRAIN, job.id, ctx) == "failed"
    row = job_row(ctx, job.id)
    assert row.status == "failed"
    assert row.error == "ran longer than the time limit of 0.001 s of a train job (PROMPTEHR_TRAIN_TIME_LIMIT_SECONDS)"


def stuck_body(release: threading.Event, started: threading.Event):
    """A body that never polls should_stop (as one blocked in a read would), until released."""
    def body(_ctx, _lease):
        started.set()
        release.wait(120)
        raise Stopped

    return body


@pytest.mark.parametrize("how", ["cancel", "time limit"])
def test_a_stuck_job_has_its_row_finished_for_it(make_ctx, tmp_path, how):
    """Cancelled (or past its time limit) and not stopping: after the grace the watchdog finishes
    the row, so it does not stay running with fresh heartbeats; the body's late return changes nothing."""
    ctx = make_ctx(job_stop_grace_seconds=0.5, **({"train_time_limit_seconds": 1} if how == "time limit" else {}))
    job = training_job(ctx, "records.csv")
    release, started, outcome = threading.Event(), threading.Event(), []
    worker = threading.Thread(target=lambda: outcome.append(
        run_job(ctx, "train", job.id, stuck_body(release, started), worker_id=new_worker_id())))
    worker.start()
    try:
        assert started.wait(60)
        if how == "cancel":
            with ctx.session() as s:
                store.request_cancel_training_job(s, job.id)
        for _ in range(120):  # polled, not timed: at most a minute
            if job_row(ctx, job.id).status != "running":
                break
            time.sleep(0.5)
        row = job_row(ctx, job.id)
        assert worker.is_alive()  # the body is still stuck ...
    finally:
        release.set()
        worker.join(60)
    # ... yet its row is finished
    if how == "cancel":
        assert row.status == "cancelled" and outcome == ["cancelled"]
    else:
        assert row.status == "failed" and outcome == ["failed"]
        assert row.error.startswith("ran longer than the time limit of 1 s of a train job")
        assert row.error.endswith("it did not stop within 0.5 s")
    assert job_row(ctx, job.id).status == row.status


def test_celery_time_limits_stand_behind_the_runners(tmp_path):
    from promptehr.worker.celery_app import time_limits

    settings = Settings(promptehr_home=tmp_path, train_time_limit_seconds=100, generate_time_limit_seconds=50,
                        evaluate_time_limit_seconds=20, job_stop_grace_seconds=10)
    assert time_limits(settings) == {
        "promptehr.train": {"soft_time_limit": 120, "time_limit": 130},
        "promptehr.generate": {"soft_time_limit": 70, "time_limit": 80},
        "promptehr.evaluate": {"soft_time_limit": 40, "time_limit": 50},
    }
