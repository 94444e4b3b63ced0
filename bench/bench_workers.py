"""Generation that grows with workers: one cohort, 1 and then 2 Celery workers, same bytes.

A real stack: a throwaway PostgreSQL database, Redis (a private queue), the API under uvicorn and
Celery workers as production runs them (`celery -A worker.celery_app worker -c 1`, prefork, a fresh
pool child per shard, OMP_NUM_THREADS=1 each), all subprocesses (tests/support/worker.py). Steps:

1. a model: `--model DIR` registers an existing checkpoint (its dataset is registered too, for the
   report); otherwise one worker trains `--preset` for `--epochs` on `--data` through POST /training-jobs;
2. POST /cohorts of `--n` patients with 1 worker, then the same cohort (same seed) with 2 workers: wall
   time from the cohort's creation to its last shard's finish (database timestamps), the speedup, the
   sha256 of each export (`GET /cohorts/{id}/export`, JSONL) and which worker ran which shard;
3. `--sweep`: the shard sizes to compare with 2 workers at `--sweep-n` patients (time and spread).

Each cohort's evaluation (queued by its last shard) is waited for before the next cohort starts and
is not part of any wall time. Which worker ran a shard: a shard row's `claimed_by` names the pool
child's pid; a watcher thread records the parent (the worker) of every pool child it sees.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_workers.py [--model DIR] [--n 20000] [--shard-size N]
        [--sweep 250,500,1000,2000] [--sweep-n 8000] [--out FILE]

Prints one JSON object (and writes it to --out).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from promptehr.service import store

from tests.support.databases import throwaway_database
from tests.support.stack import Stack, get_model, home_folder
from tests.support.worker import Api

COHORT = {"age": {"distribution": "normal", "mean": 60, "sd": 15}, "sex": {"female": 0.55}}


def shard_rows(stack: Stack, cohort_id: str) -> list[dict]:
    with stack.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(
            "SELECT shard_index, count, claimed_by, attempt, started_at, finished_at FROM cohort_shards "
            "WHERE cohort_id = :c ORDER BY shard_index"), {"c": cohort_id}).mappings()]


def export_sha256(api: Api, cohort_id: str) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with api.client.stream("GET", f"/cohorts/{cohort_id}/export", params={"format": "jsonl"}) as r:
        assert r.status_code == 200, r.status_code
        for chunk in r.iter_bytes():
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def spread(stack: Stack, rows: list[dict], t0) -> dict:
    """Shards, patients and busy seconds per worker; each shard as [index, worker, start s, seconds]."""
    shards, per = [], defaultdict(lambda: {"shards": 0, "patients": 0, "busy_s": 0.0})
    for r in rows:
        pid = int(r["claimed_by"].split(":")[1]) if r["claimed_by"] else None
        name = stack.watcher.owner.get(pid, f"unseen pid {pid}")
        busy = (r["finished_at"] - r["started_at"]).total_seconds()
        per[name]["shards"] += 1
        per[name]["patients"] += r["count"]
        per[name]["busy_s"] = round(per[name]["busy_s"] + busy, 2)
        shards.append([r["shard_index"], name, round((r["started_at"] - t0).total_seconds(), 2), round(busy, 2)])
    return {"by_worker": dict(sorted(per.items())), "shards": shards,
            "retried": sum(1 for r in rows if r["attempt"] > 1)}


def run_cohort(stack: Stack, model_id: str, n: int, seed: int, shard_size: int) -> dict:
    """One cohort, start to last shard; then its evaluation is waited for (not timed) and it is exported."""
    api = stack.use_shard_size(shard_size)
    load = os.getloadavg()[0]
    cohort = api.post("/cohorts", {"model_id": model_id, "n_patients": n, "seed": seed, **COHORT}, 202)
    path = f"/cohorts/{cohort['id']}"
    while (body := api.get(path).json())["shards_done"] < body["n_shards"]:
        assert body["status"] not in ("failed", "cancelled"), body
        time.sleep(0.2)
    rows = shard_rows(stack, cohort["id"])
    with stack.sessions() as s:
        created = store.get_cohort(s, cohort["id"]).created_at
    wall = (max(r["finished_at"] for r in rows) - created).total_seconds()
    body, _ = api.poll(path, timeout=3600, interval=0.5)  # the evaluation; not timed
    assert body["status"] == "succeeded", body
    sha, size = export_sha256(api, cohort["id"])
    return {"workers": len(stack.workers), "n": n, "shard_size": shard_size, "n_shards": len(rows),
            "wall_s": round(wall, 2), "patients_per_s": round(n / wall, 1), "load_average_1m_at_start": load,
            "export_sha256": sha, "export_bytes": size, "spread": spread(stack, rows, created)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="an existing checkpoint directory (default: train one through the service)")
    p.add_argument("--data", default="desynpuf-sample/1-sample-10000", help="dataset path under the shared data")
    p.add_argument("--format", default="desynpuf")
    p.add_argument("--preset", default="small")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--shard-size", type=int, default=None, help="default: the service's cohort_shard_size")
    p.add_argument("--sweep", default="", help="comma-separated shard sizes to compare with 2 workers")
    p.add_argument("--sweep-n", type=int, default=8_000)
    p.add_argument("--max-tasks-per-child", type=int, default=None,
                   help="PROMPTEHR_WORKER_MAX_TASKS_PER_CHILD of the workers (default: the service's, 1)")
    p.add_argument("--out", type=Path)
    p.add_argument("--keep", type=Path, help="a folder to keep the API and worker logs in (default: a temporary one)")
    args = p.parse_args()
    if args.shard_size is None:
        from promptehr.service.settings import Settings

        args.shard_size = Settings().cohort_shard_size
    result = {"load_average_at_start": os.getloadavg(), "cpus": os.cpu_count()}
    with home_folder(args.keep, "bench-workers-") as home, throwaway_database() as db:
        stack = Stack(home, db, args.max_tasks_per_child)
        try:
            model_id = get_model(stack, data=args.data, data_format=args.format, shard_size=args.shard_size,
                                 model=args.model, preset=args.preset, epochs=args.epochs)
            runs = result["runs"] = []
            for k in (1, 2):
                stack.scale_to(k)
                runs.append(run_cohort(stack, model_id, args.n, args.seed, args.shard_size))
                save(result, args.out)
            result.update(speedup=round(runs[0]["wall_s"] / runs[1]["wall_s"], 3),
                          same_bytes=runs[0]["export_sha256"] == runs[1]["export_sha256"])
            result["sweep"] = []
            for size in (int(s) for s in args.sweep.split(",") if s):
                result["sweep"].append(summary(run_cohort(stack, model_id, args.sweep_n, args.seed, size)))
                save(result, args.out)
        finally:
            stack.close()
    result["load_average_at_end"] = os.getloadavg()
    print(save(result, args.out))


def save(result: dict, out: Path | None) -> str:
    """The result so far, to --out after every cohort (a long run stopped early keeps what it measured)."""
    text = json.dumps(result, indent=1)
    if out:
        out.write_text(text + "\n")
    print(json.dumps({"done": len(result.get("runs", [])) + len(result.get("sweep", []))}), file=sys.stderr)
    return text


def summary(run: dict) -> dict:
    """A sweep point without the per-shard list: wall time, rate and the per-worker spread."""
    by = run["spread"]["by_worker"]
    busy = [w["busy_s"] for w in by.values()]
    print(json.dumps({run["shard_size"]: run["wall_s"]}), file=sys.stderr)
    return {k: run[k] for k in ("shard_size", "n", "n_shards", "wall_s", "patients_per_s", "export_sha256")} | {
        "shards_per_worker": {k: v["shards"] for k, v in by.items()},
        "busy_s_per_worker": {k: v["busy_s"] for k, v in by.items()},
        "busy_imbalance": round(max(busy) / min(busy), 3) if len(busy) > 1 and min(busy) else None,
        # worker-seconds not spent inside a shard: forks, queue hand-offs, the tail's idle worker
        "idle_worker_s": round(run["wall_s"] * len(by) - sum(busy), 2),
        "median_shard_s": sorted(s[3] for s in run["spread"]["shards"])[len(run["spread"]["shards"]) // 2],
    }


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
