"""Where the patients live: how many patients per second the store takes as rows, against how many
per second the sampler makes, in the same run.

1. The sampler: `generate_cohort` (what a worker's shard calls) makes `--sample-n` patients from a
   trained model at the worker's batch (256) on one thread: patients/s of one CPU worker.
2. The store: those patients, repeated to `--rows`, inserted through `service.store.insert_patients`
   (the worker's call: one transaction per batch of `--batch`, `ON CONFLICT DO NOTHING`) into a migrated
   SQLite file and a throwaway migrated PostgreSQL database; for PostgreSQL also with `--writers`
   processes at once (each a shard of its own, as concurrent workers write). Rows/s, and the bytes a
   patient takes as a row (table + indexes + TOAST) beside the same patients as gzip-compressed JSONL.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_store.py [--model DIR] [--sample-n 2000] [--rows 20000]
        [--batch 256] [--writers 2] [--out FILE]

Without --model it trains the small preset briefly on DE-SynPUF sample 1 (as bench_generate.py does).
Prints one JSON object: the rates, their ratio (`workers_per_store`: how many one-core sampler-workers
one database keeps up with)
and the storage figures.
"""
from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from promptehr.model.generation.options import DEFAULT_BATCH_SIZE  # the worker's: patients generated and stored at a time
from promptehr.service import store
from promptehr.service.db import make_engine, make_sessionmaker
from promptehr.service.migrate import upgrade
from tests.support.databases import throwaway_database

SHARED = Path(os.environ.get("PROMPTEHR_SHARED_DATA", REPO.parent / "shared" / "data"))
DATA = SHARED / "desynpuf-sample" / "1-sample-10000"
SPEC = {"age": {"distribution": "normal", "mean": 60, "sd": 15}, "sex": {"female": 0.55}}


def train_small(out: Path, steps: int) -> None:
    from promptehr.cli.main import main

    rc = main(["train", "--data", str(DATA), "--preset", "small", "--out", str(out), "--max-steps", str(steps),
               "--device", "cpu"])
    assert rc == 0


def sample(model_dir: Path, n: int, seed: int) -> tuple[list[dict], dict]:
    """n patients as the worker stores them (Patient.to_dict), and the sampler's rate."""
    # torch here, not at the top: the writer processes (spawned) import this module and need no torch
    import torch

    from promptehr.model.generation.cohort import generate_cohort
    from promptehr.model.nn.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    bundle = load_checkpoint(model_dir, device="cpu")
    generate_cohort(bundle, SPEC, n, seed, 0, min(n, 64), batch_size=DEFAULT_BATCH_SIZE)  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    patients = generate_cohort(bundle, SPEC, n, seed, batch_size=DEFAULT_BATCH_SIZE)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return [p.to_dict() for p in patients], {
        "patients": n, "batch_size": DEFAULT_BATCH_SIZE, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "patients_per_s": round(n / wall, 1), "patients_per_cpu_s": round(n / cpu, 1)}


def make_cohort(url: str, n: int) -> str:
    """A dataset, a model and a cohort row for the patients to belong to (foreign keys)."""
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as s:
            ds = store.create_dataset(s, name="bench", format="desynpuf", path="none", stats={})
            model = store.create_model(s, name="bench", dataset_id=ds.id, checkpoint_path="none",
                                       manifest_sha256="0" * 64)
            cohort, _ = store.create_cohort(s, model_id=model.id, n_patients=n, seed=0, spec=SPEC, shard_size=n)
            return cohort.id
    finally:
        engine.dispose()


def insert_range(url: str, cohort_id: str, start: int, patients: list[dict], batch: int) -> float:
    """Insert `patients` at indices start... a batch per transaction, as a worker does; wall seconds."""
    engine = make_engine(url)
    try:
        sessions = make_sessionmaker(engine)
        t = time.perf_counter()
        for i in range(0, len(patients), batch):
            with sessions() as s:
                store.insert_patients(s, cohort_id, start + i, patients[i:i + batch])
        return time.perf_counter() - t
    finally:
        engine.dispose()


def _writer(job) -> tuple[float, float]:
    """(start, end) on the shared monotonic clock of one writer process."""
    url, cohort_id, start, patients, batch = job
    t0 = time.monotonic()
    insert_range(url, cohort_id, start, patients, batch)
    return t0, time.monotonic()


def parallel_rate(url: str, rows: list[dict], batch: int, writers: int) -> dict:
    """`writers` processes inserting their own slice of one cohort at once (as concurrent shards do)."""
    cohort_id = make_cohort(url, len(rows))
    per = -(-len(rows) // writers)
    jobs = [(url, cohort_id, w * per, rows[w * per:(w + 1) * per], batch) for w in range(writers)]
    with multiprocessing.get_context("spawn").Pool(writers) as pool:
        spans = pool.map(_writer, jobs)
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    return {"writers": writers, "rows": len(rows), "wall_s": round(wall, 2), "rows_per_s": round(len(rows) / wall, 1)}


def pg_bytes_per_row(url: str, n: int) -> float:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            size = conn.exec_driver_sql("SELECT pg_total_relation_size('cohort_patients')").scalar()
        return round(size / n, 1)
    finally:
        engine.dispose()


def backend(name: str, url: str, rows: list[dict], batch: int, size_of) -> dict:
    cohort_id = make_cohort(url, len(rows))
    wall = insert_range(url, cohort_id, 0, rows, batch)
    return {"backend": name, "rows": len(rows), "batch": batch, "wall_s": round(wall, 2),
            "rows_per_s": round(len(rows) / wall, 1), "bytes_per_patient": size_of(url, len(rows))}


def repeat_to(patients: list[dict], n: int) -> list[dict]:
    return [patients[i % len(patients)] for i in range(n)]


def file_sizes(patients: list[dict]) -> dict:
    """The same patients as JSONL, plain and gzip-compressed (level 6): bytes per patient."""
    raw = "".join(json.dumps(p, separators=(",", ":")) + "\n" for p in patients).encode()
    return {"jsonl_bytes_per_patient": round(len(raw) / len(patients), 1),
            "jsonl_gz_bytes_per_patient": round(len(gzip.compress(raw, 6)) / len(patients), 1)}


def measure(args, model_dir: Path, tmp: Path) -> dict:
    patients, sampler = sample(model_dir, args.sample_n, args.seed)
    rows = repeat_to(patients, args.rows)
    sqlite_path = tmp / "store.sqlite3"
    sqlite_url = f"sqlite:///{sqlite_path}"
    upgrade(sqlite_url)
    out = {"sampler": sampler, "files": file_sizes(patients),
           "store": [backend("sqlite", sqlite_url, rows, args.batch, lambda _u, n: round(sqlite_path.stat().st_size / n, 1))]}
    with throwaway_database() as pg:
        out["store"].append(backend("postgresql", pg, rows, args.batch, pg_bytes_per_row))
        if args.writers > 1:
            out["postgresql_parallel"] = parallel_rate(pg, rows, args.batch, args.writers)
    # Sampler-workers one store keeps up with: against the sampler's rate per CPU second (what a worker
    # with a core of its own makes; on a shared machine its wall rate is mostly other people's load).
    rate = sampler["patients_per_cpu_s"]
    store_rates = {s["backend"]: s["rows_per_s"] for s in out["store"]}
    if "postgresql_parallel" in out:
        store_rates["postgresql_parallel"] = out["postgresql_parallel"]["rows_per_s"]
    out["workers_per_store"] = {name: round(r / rate, 1) for name, r in store_rates.items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help="trained checkpoint (default: train the small preset briefly)")
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--sample-n", type=int, default=2000, help="patients the sampler makes (timed)")
    p.add_argument("--rows", type=int, default=20_000, help="patients inserted per back end")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH_SIZE, help="patients per insert transaction")
    p.add_argument("--writers", type=int, default=2, help="concurrent PostgreSQL writer processes")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    result = {"load_average_at_start": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        model_dir = args.model
        if model_dir is None:
            model_dir = Path(tmp) / "model"
            train_small(model_dir, args.train_steps)
        result.update(measure(args, model_dir, Path(tmp)))
    result["load_average_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
