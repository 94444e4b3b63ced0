"""Benchmark: the API under concurrent load on loopback, against PostgreSQL.

N clients (default 50) for D seconds (default 60) each loop over a weighted mix of requests:
POST /cohorts (20%: a cohort row, its shard rows and a message to the broker), GET /cohorts/{id}
(40%: a random cohort, seeded or created during the run) and GET /reports/{id} (40%: a stored
report of ~40 KB of JSON). Every answer must be the expected status (202 / 200); anything else, or
a transport error, counts as an error. Prints JSON: requests, errors, throughput and latency
percentiles per operation and overall; exits 1 when there were errors.

Unless --database-url/--broker-url are given, a private PostgreSQL and a private Redis are started
(and removed) for the run; the API runs under uvicorn (--api-workers processes) on a free loopback
port; nothing consumes the queue (the API's work is what is measured).

    .venv/bin/python bench/bench_load.py [--clients 50] [--duration 60] [--api-workers 1] [--out result.json]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MIX = (("post_cohort", 0.2), ("get_cohort", 0.4), ("get_report", 0.4))
COHORT_BODY = {"n_patients": 50, "seed": 7, "age": {"distribution": "normal", "mean": 70, "sd": 10, "min": 18, "max": 90},
               "sex": {"female": 0.55}, "sampling": {"temperature": 1.0, "top_p": 0.95}}


def fake_report(cohort_id: str) -> dict:
    """A report-shaped document (four sections of measures, plus curve data) of about 40 KB."""
    rng = random.Random(cohort_id)
    section = {f"measure_{i}": {"value": rng.random(), "limit": rng.random(), "threshold": 0.5, "pass": True}
               for i in range(25)}
    return {"schema_version": 1, "cohort_id": cohort_id, "fidelity": section, "validity": section,
            "privacy": section, "utility": section,
            "plots": {"prevalence": [[rng.random(), rng.random()] for _ in range(700)]}}


def seed(database_url: str, n_cohorts: int = 20) -> dict:
    """An API key, a dataset, a model and `n_cohorts` finished cohorts with reports (no worker needed)."""
    from promptehr.service import store
    from promptehr.service.auth import generate_key, hash_key
    from promptehr.service.db import make_engine, make_sessionmaker

    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as s:
            key = generate_key()
            # admin: the rows made below through the store belong to no tenant
            store.create_api_key(s, name="bench", key_hash=hash_key(key), prefix=key[:10], is_admin=True)
            ds = store.create_dataset(s, name="bench", format="mimic3", path="mimic3-demo", stats={"patients": 100})
            model = store.create_model(s, name="bench", dataset_id=ds.id, checkpoint_path="bench",
                                       manifest_sha256="0" * 64, config={"preset": "tiny"})
            cohorts, reports = [], []
            for i in range(n_cohorts):
                cohort, shards = store.create_cohort(s, model_id=model.id, n_patients=5, seed=i, spec={},
                                                     shard_size=1000)
                (shard,) = shards
                assert store.claim_job(s, "generate", shard.id, "bench")
                store.insert_patients(s, cohort.id, 0, [{"patient_id": f"b{i}-{j}", "age": 60.0, "sex": "F",
                                                         "visits": [["4019", "25000"]]} for j in range(5)])
                report_id = store.mark_succeeded(s, "generate", shard.id, worker_id="bench")
                assert store.claim_job(s, "evaluate", report_id, "bench")
                store.save_report(s, report_id, content=fake_report(cohort.id), html="<html></html>")
                store.mark_succeeded(s, "evaluate", report_id, worker_id="bench")
                cohorts.append(cohort.id)
                reports.append(report_id)
            return {"key": key, "model_id": model.id, "cohorts": cohorts, "reports": reports}
    finally:
        engine.dispose()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def run_load(base: str, seeded: dict, clients: int, duration: float, rng_seed: int = 0) -> dict:
    import httpx

    cohorts = list(seeded["cohorts"])
    reports = list(seeded["reports"])
    latencies: dict[str, list[float]] = {name: [] for name, _ in MIX}
    errors: list[str] = []
    transport_errors = [0]  # requests that got no answer at all
    names = [name for name, _ in MIX]
    weights = [w for _, w in MIX]
    deadline = time.monotonic() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": seeded["key"]}, timeout=60,
                                 limits=limits) as client:

        async def one_client(i: int) -> None:
            rng = random.Random(rng_seed * 1000 + i)
            while time.monotonic() < deadline:
                op = rng.choices(names, weights)[0]
                t = time.perf_counter()
                try:
                    if op == "post_cohort":
                        r = await client.post("/cohorts", json={**COHORT_BODY, "model_id": seeded["model_id"],
                                                                "seed": rng.randrange(10**9)})
                        expected = 202
                    elif op == "get_cohort":
                        r = await client.get(f"/cohorts/{rng.choice(cohorts)}")
                        expected = 200
                    else:
                        r = await client.get(f"/reports/{rng.choice(reports)}")
                        expected = 200
                except httpx.HTTPError as e:
                    errors.append(f"{op}: {type(e).__name__}: {e}")
                    transport_errors[0] += 1
                    continue
                latencies[op].append(time.perf_counter() - t)
                if r.status_code != expected:
                    errors.append(f"{op}: {r.status_code} {r.text[:200]}")
                elif op == "post_cohort":
                    cohorts.append(r.json()["id"])

        t0, cpu0 = time.monotonic(), time.process_time()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        elapsed, client_cpu = time.monotonic() - t0, time.process_time() - cpu0

    def summary(values: list[float]) -> dict:
        ms = [v * 1000 for v in values]
        return {"requests": len(ms), "p50_ms": _r(percentile(ms, 0.5)), "p90_ms": _r(percentile(ms, 0.9)),
                "p99_ms": _r(percentile(ms, 0.99)), "max_ms": _r(max(ms) if ms else None),
                "mean_ms": _r(statistics.fmean(ms) if ms else None)}

    every = [v for values in latencies.values() for v in values]
    return {
        "clients": clients,
        "duration_s": round(elapsed, 2),
        "requests": len(every) + transport_errors[0],
        "errors": len(errors),
        "error_samples": errors[:10],
        "throughput_rps": round(len(every) / elapsed, 1),
        "overall": summary(every),
        "by_operation": {name: summary(values) for name, values in latencies.items()},
        "cohorts_created": len(cohorts) - len(seeded["cohorts"]),
        "client_cpu_s": round(client_cpu, 1),  # CPU the load generator itself used (same machine)
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` and its children (uvicorn's worker processes)."""
    from tests.support.reliability import pool_children

    total = 0.0
    for p in [pid, *pool_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_bytes().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


@contextlib.contextmanager
def backing_services(database_url: str | None, broker_url: str | None):
    """(database URL, broker URL): the given ones, or a private PostgreSQL / Redis for the run."""
    from tests.support.reliability import migrated, private_postgres, private_redis

    with contextlib.ExitStack() as stack:
        if database_url is None:
            pg = stack.enter_context(private_postgres())
            database_url = migrated(pg.create_database("bench_load"))
        if broker_url is None:
            broker_url = stack.enter_context(private_redis()).url
        yield database_url, broker_url


def bench(clients: int = 50, duration: float = 60, *, api_workers: int = 1, database_url: str | None = None,
          broker_url: str | None = None) -> dict:
    from tests.support.reliability import app_env, start_api

    with backing_services(database_url, broker_url) as (db, broker), \
            tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        seeded = seed(db)
        env = app_env(home=Path(tmp), data_root=Path(tmp), database_url=db, broker_url=broker,
                      WEB_CONCURRENCY=str(api_workers),
                      # no quotas: the load queues thousands of cohorts (no worker runs them) on purpose
                      PROMPTEHR_MAX_ACTIVE_JOBS_PER_TENANT="0", PROMPTEHR_MAX_QUEUED_PATIENTS_PER_TENANT="0")
        api, base = start_api(env, Path(tmp) / "api.log")
        try:
            api_cpu0 = cpu_seconds(api.pid)
            result = asyncio.run(run_load(base, seeded, clients, duration))
            result["api_cpu_s"] = round(cpu_seconds(api.pid) - api_cpu0, 1)  # CPU the API used during the load
        finally:
            api.stop()
        log = (Path(tmp) / "api.log").read_text(errors="replace")
        result["api_log_errors"] = sum(line.startswith("ERROR") for line in log.splitlines())
        result.update(api_workers=api_workers, cpus=os.cpu_count(), load_avg_1m=round(os.getloadavg()[0], 2))
        return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--duration", type=float, default=60, help="seconds of load")
    p.add_argument("--api-workers", type=int, default=1, help="uvicorn worker processes")
    p.add_argument("--database-url", default=None, help="a migrated database (default: a private PostgreSQL)")
    p.add_argument("--broker-url", default=None, help="a Redis URL (default: a private Redis)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    result = bench(args.clients, args.duration, api_workers=args.api_workers, database_url=args.database_url,
                   broker_url=args.broker_url)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
