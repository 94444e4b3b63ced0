"""Jobs survive what production throws at them (issue 7), in the production shape: a private PostgreSQL,
a private Redis (visibility timeout 3 s), the API under uvicorn and real Celery workers, on the
MIMIC-III demo copied into a data root of the test's own.

- A worker SIGKILLed (master and pool child) mid-training: its unacknowledged message comes back
  (visibility timeout), a replacement worker takes the job over from the last resume snapshot, the
  job finishes exactly once, and the duplicate deliveries are refused by the claim.
- The API SIGKILLed right after accepting a cohort, and a worker SIGKILLed mid-cohort: the cohort is
  still there, ends with exactly N patients, indices 0..N-1 once each.
- Bad data files behind a registered dataset: the training job fails with a reason naming the file,
  the worker stays up and runs the next job to success.
- A checkpoint whose bytes no longer match its manifest: the generation job fails with a clear reason.
"""
from __future__ import annotations

import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.reliability import (
    Api,
    Process,
    app_env,
    create_api_key,
    kill_group,
    migrated,
    pool_children,
    private_postgres,
    private_redis,
    redis_messages_for,
    spawn_celery_worker,
    start_api,
    wait_until,
)

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(600)]

MIMIC_FILES = ("PATIENTS.csv", "ADMISSIONS.csv", "DIAGNOSES_ICD.csv")
# 80 training patients in batches of 40: 2 steps an epoch, a resume snapshot at each epoch end.
STEPS_PER_EPOCH = 2
TRAINING = {"preset": "tiny", "mode": "hierarchical", "epochs": 5, "seed": 0, "batch_size": 40,
            "early_stopping_patience": 100}
COHORT = {"n_patients": 40, "seed": 5, "age": {"distribution": "normal", "mean": 65, "sd": 12, "min": 18, "max": 90},
          "sex": {"female": 0.5}}
SHARD_SIZE = 20  # 40 patients -> 2 shards, each stored 2 patients at a time
BATCH = 2
# A running job whose claimant is gone is sent again by the surviving workers' sweep every
# STALE_AFTER / 2 seconds; a live worker refreshes its heartbeat every STALE_AFTER / 4 seconds.
STALE_AFTER = 12


@dataclass
class Stack:
    root: Path
    data: Path
    home: Path
    env: dict
    db: str
    broker: str
    key: str
    api_proc: Process
    api: Api
    workers: list[Process]
    engine: sa.Engine
    retired: list = field(default_factory=list)  # processes to stop at the end

    def row(self, model, job_id: str):
        with self.engine.connect() as conn:
            return conn.execute(sa.select(model.__table__).where(model.__table__.c.id == job_id)).mappings().one()

    def restart_api(self, *, kill: bool) -> None:
        """SIGKILL (or SIGTERM) the API process and start a new one on the same database and broker."""
        if kill:
            kill_group(self.api_proc)
        self.api_proc.stop()
        self.api.close()
        self.api_proc, base = start_api(self.env, self.root / f"api-{uuid.uuid4().hex[:6]}.log")
        self.api = Api(base, self.key)

    def new_workers(self, *names: str) -> list[Process]:
        procs = [spawn_celery_worker(self.env, self.root / f"worker-{n}.log", n) for n in names]
        for p in procs:
            p.wait_for_log(" ready.", timeout=180)
        self.workers.extend(procs)
        return procs

    def worker_running(self, claimed_by: str) -> Process | None:
        """The worker whose pool child holds a claim (claimed_by is host:pid:start.token); None when
        that child is gone already."""
        pid = int(claimed_by.split(":")[1])
        found = [w for w in self.workers if w.proc.poll() is None and pid in pool_children(w.pid)]
        return found[0] if found else None

    def kill_worker(self, worker: Process) -> None:
        kill_group(worker)  # SIGKILL the master and its pool child together
        worker.stop()
        self.workers.remove(worker)
        self.retired.append(worker)


def copy_mimic(shared_data: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in MIMIC_FILES:
        shutil.copyfile(shared_data / "mimic3-demo" / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("reliability-jobs")
    data = root / "data"
    copy_mimic(shared_data, data / "mimic3")
    with private_postgres() as pg, private_redis() as rd:
        db = migrated(pg.create_database("reliability"))
        env = app_env(home=root / "home", data_root=data, database_url=db, broker_url=rd.url,
                      PROMPTEHR_CELERY_VISIBILITY_TIMEOUT_SECONDS="3",
                      PROMPTEHR_COHORT_SHARD_SIZE=str(SHARD_SIZE),
                      PROMPTEHR_GENERATION_BATCH_SIZE=str(BATCH),
                      PROMPTEHR_JOB_STALE_AFTER_SECONDS=str(STALE_AFTER))
        key = create_api_key(env)
        workers = [spawn_celery_worker(env, root / f"worker-{n}.log", n) for n in ("a", "b")]
        api_proc, base = start_api(env, root / "api.log")
        for w in workers:
            w.wait_for_log(" ready.", timeout=180)
        engine = sa.create_engine(db, pool_pre_ping=True)
        s = Stack(root, data, root / "home", env, db, rd.url, key, api_proc, Api(base, key), workers, engine)
        try:
            yield s
        finally:
            s.api.close()
            s.api_proc.stop()
            for p in [*s.workers, *s.retired]:
                p.stop()
            engine.dispose()


def _dataset(stack: Stack, name: str, path: str) -> str:
    return stack.api.post("/datasets", {"name": name, "format": "mimic3", "path": path}, 201)["id"]


# --- a worker killed in the middle of training ---------------------------------------------------


@pytest.fixture(scope="module")
def killed_training(stack):
    from promptehr.model.nn.checkpoint import load_resume, resume_dir
    from promptehr.service.models import Model, TrainingJob

    dataset_id = _dataset(stack, "mimic3-demo", "mimic3")
    job_id = stack.api.post("/training-jobs", {**TRAINING, "dataset_id": dataset_id}, 202)["id"]
    out = stack.home / "models" / "training-jobs" / job_id

    def past_first_snapshot():
        row = stack.row(TrainingJob, job_id)
        assert row["status"] in ("queued", "running"), dict(row)
        progress = row["progress"] or {}
        if (resume_dir(out) / "state.pt").is_file() and progress.get("unit") == "steps" \
                and progress["done"] > STEPS_PER_EPOCH:
            worker = stack.worker_running(row["claimed_by"])
            return worker is not None and (row, worker)
        return None

    t0 = time.monotonic()
    first, running = wait_until(past_first_snapshot, timeout=240, interval=0.05,
                                what="training past its first snapshot")
    standby = [w for w in stack.workers if w is not running]
    stack.kill_worker(running)
    killed = stack.row(TrainingJob, job_id)
    state = load_resume(out)
    broker_after_kill = redis_messages_for(stack.broker, job_id)

    # The standby worker's sweep sends the orphaned job again within STALE_AFTER / 2 seconds; a
    # replacement worker (what a supervisor restarting the killed one does) takes the killed worker's
    # unacknowledged message back from Redis once its visibility timeout (3 s) is over. The claim
    # lets exactly one delivery run the job.
    samples = []

    def sample():
        row = stack.row(TrainingJob, job_id)
        samples.append((row["attempt"], row["claimed_by"], row["status"], dict(row["progress"] or {})))
        return row

    replacement = spawn_celery_worker(stack.env, stack.root / "worker-c.log", "c")
    stack.workers.append(replacement)
    while "ready." not in replacement.log():
        sample()
        assert replacement.proc.poll() is None and time.monotonic() - t0 < 400, replacement.log()[-3000:]
        time.sleep(0.1)
    final = wait_until(lambda: (row := sample())["status"] in ("succeeded", "failed", "cancelled") and row,
                       timeout=300, interval=0.1, what="training to finish")
    with stack.engine.connect() as conn:
        models = conn.execute(sa.select(Model.__table__).where(Model.__table__.c.training_job_id == job_id)).mappings().all()
    wait_until(lambda: redis_messages_for(stack.broker, job_id) == {"queued": 0, "unacked": 0}, timeout=60,
               what="every message of the job consumed and acknowledged")
    logs = {p.log_path.name: p.log() for p in [*standby, replacement]}
    return {"job_id": job_id, "first": dict(first), "killed": dict(killed), "state": state,
            "killed_log": running.log(),
            "broker_after_kill": broker_after_kill, "samples": samples, "final": dict(final),
            "models": [dict(m) for m in models], "logs": logs, "seconds": round(time.monotonic() - t0, 1)}


def test_training_killed_with_sigkill_is_redelivered_and_resumed_from_its_snapshot(killed_training):
    k = killed_training
    assert k["killed"]["status"] == "running" and k["killed"]["attempt"] == 1
    assert k["killed"]["progress"]["done"] < k["killed"]["progress"]["total"], "killed before the end"
    # The killed worker had not acknowledged the message: it was still in the broker...
    assert k["broker_after_kill"]["unacked"] >= 1, k["broker_after_kill"]
    # ...and that very message (same Celery task id) was delivered again once its visibility timeout
    # was over, and acknowledged: nothing is left in the broker (checked by the fixture).
    (task_id,) = re.findall(r"Task promptehr\.train\[([0-9a-f-]+)\] received", k["killed_log"])
    assert any(f"Task promptehr.train[{task_id}] received" in text for text in k["logs"].values()), k["logs"]
    state = k["state"]
    assert state is not None and state["step"] >= STEPS_PER_EPOCH and state["step"] % STEPS_PER_EPOCH == 0
    assert k["final"]["status"] == "succeeded", k["final"]
    # Resumed, not restarted: after the take-over, progress never went below the snapshot's step...
    second = [s for s in k["samples"] if s[0] == 2]
    assert second and all(s[3]["done"] >= state["step"] for s in second if s[3].get("unit") == "steps"), second
    # ...the epochs logged before the snapshot are the killed run's lines, timings included...
    (model,) = k["models"]
    log = model["metrics"]["log"]
    assert log[: len(state["log"])] == state["log"] and len(state["log"]) >= 1
    assert [line["epoch"] for line in log] == list(range(1, TRAINING["epochs"] + 1))
    assert log[-1]["step"] == TRAINING["epochs"] * STEPS_PER_EPOCH
    # ...and the worker that finished it says so.
    assert model["metrics"]["resumed"] is True
    assert sum(f"train {k['job_id']}: resuming from" in text for text in k["logs"].values()) == 1, k["logs"]
    print(f"\ntraining with a SIGKILL and a take-over: {k['seconds']} s; snapshot at step {state['step']}, "
          f"killed at step {k['killed']['progress']['done']}")


def test_training_finishes_exactly_once_and_never_runs_twice_at_once(killed_training):
    k = killed_training
    # Exactly one take-over: attempt 1 (killed), attempt 2 (finished); another claim would make it 3.
    assert k["final"]["attempt"] == 2 and len(k["models"]) == 1
    assert k["final"]["model_id"] == k["models"][0]["id"]
    claimants = {s[1] for s in k["samples"] if s[0] == 2}
    assert len(claimants) == 1 and k["killed"]["claimed_by"] not in claimants
    # The job was delivered again more than once (the returned message, the sweep) and every other
    # delivery was refused by the claim instead of running the job a second time.
    refused = sum(text.count(f"train {k['job_id']}: not claimed") for text in k["logs"].values())
    assert refused >= 1, k["logs"]


# --- the API and a worker killed in the middle of a cohort ----------------------------------------


@pytest.fixture(scope="module")
def killed_cohort(stack, killed_training):
    from promptehr.service.models import Cohort, CohortPatient, CohortShard

    model_id = killed_training["final"]["model_id"]
    headers = {"Idempotency-Key": f"cohort-{uuid.uuid4().hex}"}
    body = {**COHORT, "model_id": model_id}
    r = stack.api.client.post("/cohorts", json=body, headers=headers)
    assert r.status_code == 202, r.text
    cohort_id = r.json()["id"]
    t0 = time.monotonic()
    stack.restart_api(kill=True)  # SIGKILL the API right after it accepted the cohort
    after_restart = stack.api.get(f"/cohorts/{cohort_id}").json()
    replay = stack.api.client.post("/cohorts", json=body, headers=headers)

    def stored():
        with stack.engine.connect() as conn:
            return conn.scalar(sa.select(sa.func.count()).select_from(CohortPatient.__table__)
                               .where(CohortPatient.__table__.c.cohort_id == cohort_id))

    def running_shard():
        with stack.engine.connect() as conn:
            return conn.execute(sa.select(CohortShard.__table__).where(
                CohortShard.__table__.c.cohort_id == cohort_id, CohortShard.__table__.c.status == "running")
            ).mappings().first()

    # Kill the worker of a shard that has stored some of its patients but not all.
    def mid_shard():
        shard = running_shard()
        if shard is None:
            return None
        with stack.engine.connect() as conn:
            n = conn.scalar(sa.select(sa.func.count()).select_from(CohortPatient.__table__).where(
                CohortPatient.__table__.c.cohort_id == cohort_id,
                CohortPatient.__table__.c.index >= shard["start_index"],
                CohortPatient.__table__.c.index < shard["start_index"] + shard["count"]))
        if not 0 < n < shard["count"]:
            return None
        worker = stack.worker_running(shard["claimed_by"])
        return worker is not None and (shard, worker)

    shard, worker = wait_until(mid_shard, timeout=300, interval=0.02, what="a shard half stored")
    stack.kill_worker(worker)
    stored_at_kill = stored()
    final, _ = stack.api.poll(f"/cohorts/{cohort_id}", timeout=300, interval=0.3)
    patients = stack.api.all_patients(cohort_id, limit=5)
    with stack.engine.connect() as conn:
        shards = conn.execute(sa.select(CohortShard.__table__).where(CohortShard.__table__.c.cohort_id == cohort_id)
                              ).mappings().all()
        cohorts = conn.scalar(sa.select(sa.func.count()).select_from(Cohort.__table__))
    export = stack.api.client.get(f"/cohorts/{cohort_id}/export", params={"format": "jsonl"})
    return {"cohort_id": cohort_id, "after_restart": after_restart, "replay": replay, "stored_at_kill": stored_at_kill,
            "killed_shard": dict(shard), "final": final, "patients": patients, "shards": [dict(s) for s in shards],
            "cohorts": cohorts, "export": export, "seconds": round(time.monotonic() - t0, 1)}


def test_api_killed_after_accepting_a_cohort_loses_nothing(killed_cohort):
    k = killed_cohort
    assert k["after_restart"]["id"] == k["cohort_id"]
    assert k["replay"].status_code == 202 and k["replay"].json()["id"] == k["cohort_id"]
    assert k["replay"].headers.get("idempotent-replayed") == "true"
    assert k["cohorts"] == 1  # no second cohort from the retried request
    assert all(s["status"] == "succeeded" for s in k["shards"]), k["shards"]


def test_interrupted_cohort_is_evaluated_and_succeeds(killed_cohort):
    final = killed_cohort["final"]
    assert final["status"] == "succeeded" and final["report_id"], final


def test_cohort_interrupted_by_a_worker_sigkill_has_exactly_n_patients(killed_cohort):
    import json

    k = killed_cohort
    n = COHORT["n_patients"]
    assert 0 < k["stored_at_kill"] < n, "the worker was killed in the middle of the cohort"
    indices = [p["index"] for p in k["patients"]]
    assert indices == list(range(n))  # exactly N, no duplicates, no gaps
    assert len({p["patient_id"] for p in k["patients"]}) == n
    assert all(s["status"] == "succeeded" for s in k["shards"]), k["shards"]
    (taken_over,) = [s for s in k["shards"] if s["id"] == k["killed_shard"]["id"]]
    assert taken_over["attempt"] == 2  # the shard cut off mid-way was taken over once
    assert k["final"]["shards_done"] == n // SHARD_SIZE
    assert k["export"].status_code == 200, k["export"].text
    exported = [json.loads(line) for line in k["export"].text.splitlines() if line.strip()]
    assert exported == [{key: v for key, v in p.items() if key != "index"} for p in k["patients"]]  # no index
    print(f"\ncohort with an API SIGKILL and a worker SIGKILL: {k['seconds']} s; {k['stored_at_kill']} of {n} "
          "patients stored at the kill")


# --- bad data files --------------------------------------------------------------------------------


def _edit(path: Path, change) -> None:
    path.write_bytes(change(path.read_bytes()))


def _truncate(b: bytes) -> bytes:
    return b[: len(b) // 2 - 3]


def _drop_code_column(b: bytes) -> bytes:
    lines = b.decode().splitlines()
    return ("\n".join(",".join(line.split(",")[:-1]) for line in lines) + "\n").encode()


def _non_utf8(b: bytes) -> bytes:
    lines = b.split(b"\n")
    lines[10] = lines[10][:-2] + b"\xff\xfe"
    return b"\n".join(lines)


def _huge_line(b: bytes) -> bytes:
    return b + b"1,10006,142345,99," + b"4" * 4_000_000 + b"\n"


def _unknown_codes(b: bytes) -> bytes:
    lines = b.decode().splitlines()
    return ("\n".join([lines[0]] + [",".join(line.split(",")[:-1] + ["XYZ!!"]) for line in lines[1:]]) + "\n").encode()


def _dob_after_admission(b: bytes) -> bytes:  # an impossible (negative) age
    lines = b.decode().splitlines()
    cols = lines[1].split(",")
    cols[3] = "2199-01-01 00:00:00"
    lines[1] = ",".join(cols)
    return ("\n".join(lines) + "\n").encode()


def _impossible_date(b: bytes) -> bytes:
    lines = b.decode().splitlines()
    cols = lines[5].split(",")
    cols[3] = "2150-13-45 25:61:00"
    lines[5] = ",".join(cols)
    return ("\n".join(lines) + "\n").encode()


BAD_DATA = {
    "truncated": ("DIAGNOSES_ICD.csv", _truncate),
    "missing-column": ("DIAGNOSES_ICD.csv", _drop_code_column),
    "non-utf8": ("DIAGNOSES_ICD.csv", _non_utf8),
    "huge-line": ("DIAGNOSES_ICD.csv", _huge_line),
    "impossible-age": ("PATIENTS.csv", _dob_after_admission),
    "impossible-date": ("ADMISSIONS.csv", _impossible_date),
    "empty-folder": ("PATIENTS.csv", None),
    "unknown-codes": ("DIAGNOSES_ICD.csv", _unknown_codes),
}


@pytest.fixture(scope="module")
def bad_data_runs(stack, shared_data, killed_cohort):
    """Each bad case: a good copy registered (POST /datasets checks the files), then the files go bad
    behind the service's back, then a training job. Then one good job on the same worker."""
    (worker,) = stack.workers  # the one worker left
    master = worker.pid
    jobs, refused_at_registration = {}, {}
    for case, (name, change) in BAD_DATA.items():
        folder = copy_mimic(shared_data, stack.data / case)
        dataset_id = _dataset(stack, case, case)
        if change is None:
            for f in folder.iterdir():
                f.unlink()
        else:
            _edit(folder / name, change)
        r = stack.api.client.post("/datasets", json={"name": case + "-again", "format": "mimic3", "path": case})
        refused_at_registration[case] = r
        jobs[case] = stack.api.post("/training-jobs", {**TRAINING, "epochs": 1, "dataset_id": dataset_id}, 202)["id"]
    results = {case: stack.api.poll(f"/training-jobs/{job_id}", timeout=240, interval=0.3)[0]
               for case, job_id in jobs.items()}
    alive_after_bad = worker.proc.poll() is None
    good = stack.api.post("/training-jobs", {**TRAINING, "epochs": 1, "dataset_id": _dataset(stack, "good", "mimic3")},
                          202)
    good, _ = stack.api.poll(f"/training-jobs/{good['id']}", timeout=240, interval=0.3)
    return {"results": results, "registration": refused_at_registration, "alive_after_bad": alive_after_bad,
            "good": good, "master": master, "alive_after_good": worker.proc.poll() is None}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_fails_the_training_job_with_a_reason_naming_the_file(bad_data_runs, case):
    name = BAD_DATA[case][0]
    job = bad_data_runs["results"][case]
    assert job["status"] == "failed", job
    assert name in job["error"] and "Traceback" not in job["error"], job["error"]
    registration = bad_data_runs["registration"][case]
    assert registration.status_code == 422 and name in registration.text, registration.text


def test_unknown_codes_are_refused_naming_line_column_and_value_relative_to_the_data_root(stack, bad_data_runs):
    errors = {case: job["error"] for case, job in bad_data_runs["results"].items()}
    assert errors["unknown-codes"].startswith("unknown-codes/DIAGNOSES_ICD.csv, line 2, column 'icd9_code': "
                                              "not an ICD-9-CM diagnosis code"), errors["unknown-codes"]
    assert "(got 'XYZ!!')" in errors["unknown-codes"]
    assert not [e for e in errors.values() if str(stack.data) in e], errors  # the server's folders stay private


def test_worker_stays_up_after_bad_data_and_runs_the_next_job(bad_data_runs):
    for case, job in bad_data_runs["results"].items():
        print(f"\n{case}: {job['status']}: {job['error']}"[:300])
    assert bad_data_runs["alive_after_bad"] and bad_data_runs["alive_after_good"]
    assert bad_data_runs["good"]["status"] == "succeeded", bad_data_runs["good"]


# --- a checkpoint whose bytes no longer match its manifest ---------------------------------------


def test_generation_from_a_tampered_checkpoint_fails_with_a_clear_reason(stack, killed_training, bad_data_runs):
    model = stack.api.get(f"/models/{killed_training['final']['model_id']}").json()
    weights = stack.home / "models" / "training-jobs" / killed_training["job_id"] / "model.safetensors"
    original = weights.read_bytes()
    tampered = bytearray(original)
    tampered[-1] ^= 0xFF  # one bit pattern in the last weight changes; the size stays the same
    weights.write_bytes(bytes(tampered))
    try:
        cohort = stack.api.post("/cohorts", {**COHORT, "n_patients": 5, "model_id": model["id"]}, 202)
        cohort, _ = stack.api.poll(f"/cohorts/{cohort['id']}", timeout=120, interval=0.3)
    finally:
        weights.write_bytes(original)
    assert cohort["status"] == "failed", cohort
    assert "model.safetensors" in cohort["error"] and ("sha256" in cohort["error"] or "manifest" in cohort["error"]), \
        cohort["error"]
    assert stack.api.get(f"/cohorts/{cohort['id']}/patients").json()["items"] == []
