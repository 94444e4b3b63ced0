"""Benchmark: latency and throughput of POST /cohorts and GET /reports/{id}, one endpoint at a time,
at 50 concurrent clients, against PostgreSQL, with the API under uvicorn on loopback.

Set-up (not timed): a throwaway PostgreSQL database (created from PROMPTEHR_TEST_POSTGRES's admin URL,
migrated, dropped at the end), an API key, a dataset, a model row (no worker runs: the cohorts'
generation messages wait in the broker, which is what "jobs queued" means here) and one finished
cohort with a report built by model.evaluation from the MIMIC-III demo (real JSON of realistic size).
The API runs as production runs it, `promptehr serve` (uvicorn; one process, or `--api-workers N`), in
a subprocess with CELERY_BROKER_URL set, so each POST /cohorts writes the cohort, its shard and sends
a message to Redis. The Redis queue is deleted afterwards.

Two measurements per endpoint, each `--warmup` seconds unrecorded then `--seconds` recorded, with
`--clients` asyncio clients in this process, one keep-alive connection each (`RawClient`, a minimal
HTTP/1.1 client, or `--client httpx`, which costs about ten times its CPU per request):
- saturated: every client sends its next request as soon as the last one is answered (closed loop,
  no think time): the throughput the API sustains, and the latency at that throughput (by Little's
  law about clients / throughput);
- paced: the clients together offer `--rate` requests/s, each on a fixed schedule; latency counts
  from the scheduled send time (so a server falling behind shows up, no coordinated omission).
Prints JSON; targets: p99 < 50 ms for POST /cohorts, < 20 ms for GET /reports/{id}, judged on the
paced run (a closed loop of 50 clients only meets them above 1,000 and 2,500 requests/s). Loopback
only; under a minute by default.

    .venv/bin/python bench/bench_api.py [--clients 50] [--seconds 7] [--warmup 2] [--rate 50]
                                        [--only post_cohorts|get_report] [--client raw|httpx] [--api-workers N]

Figures and how to read them: docs/performance.md.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_P99_MS = {"post_cohorts": 50.0, "get_report": 20.0}
COHORT = {"n_patients": 1000, "seed": 7, "age": {"distribution": "normal", "mean": 70, "sd": 10, "min": 18, "max": 90},
          "sex": {"female": 0.55}, "sampling": {"temperature": 1.0, "top_p": 0.95}}


def loopback_only(url: str) -> None:
    from sqlalchemy.engine import make_url

    host = make_url(url).host if "://" in url else None
    if host not in (None, "", "127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"bench_api: {url!r} is not on loopback; this benchmark only runs locally")


@contextlib.contextmanager
def throwaway_database(admin: str):
    import psycopg
    from psycopg import sql

    name = f"promptehr_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{admin.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def real_report(shared_data: Path):
    """A report as the evaluation makes it, on real records (MIMIC-III demo split against itself)."""
    from promptehr.model.data import load_patients
    from promptehr.model.evaluation import build_report
    from promptehr.model.evaluation.html import render_html
    from promptehr.model.split import split_patients

    patients = load_patients(shared_data / "mimic3-demo")
    train, validation, holdout = split_patients(patients, 0)
    report = build_report(validation + holdout, train, holdout)
    return report.to_dict(), render_html(report)


def seed(url: str, shared_data: Path) -> dict:
    """API key, dataset, model and one cohort with a finished report; returns their ids and the key."""
    from promptehr.service import store
    from promptehr.service.auth import generate_key, hash_key
    from promptehr.service.db import make_engine, make_sessionmaker
    from promptehr.service.migrate import upgrade

    upgrade(url)
    content, html = real_report(shared_data)
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as s:
            key = generate_key()
            # admin: the rows made below through the store belong to no tenant
            store.create_api_key(s, name="bench", key_hash=hash_key(key), prefix=key[:10], is_admin=True)
            ds = store.create_dataset(s, name="mimic3-demo", format="mimic3", path="mimic3-demo", stats={})
            model = store.create_model(s, name="bench", dataset_id=ds.id, checkpoint_path="none", manifest_sha256="0" * 64)
            model_id = model.id
            _cohort, (shard,) = store.create_cohort(s, model_id=model.id, n_patients=10, seed=1, spec={}, shard_size=10)
            assert store.claim_job(s, "generate", shard.id, "bench")
            report_id = store.mark_succeeded(s, "generate", shard.id, worker_id="bench")
            assert store.claim_job(s, "evaluate", report_id, "bench")
            store.save_report(s, report_id, content=content, html=html)
            store.mark_succeeded(s, "evaluate", report_id, worker_id="bench")
        return {"key": key, "model_id": model_id, "report_id": report_id,
                "report_bytes": len(json.dumps(content).encode())}
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_api(database_url: str, broker_url: str, log_path: Path, workers: int = 1) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTEHR_", "CELERY_")) and k != "DATABASE_URL"}
    env.update(DATABASE_URL=database_url, CELERY_BROKER_URL=broker_url, PROMPTEHR_HOME=str(log_path.parent),
               # no quotas: the benchmark queues hundreds of cohorts (no worker runs them) on purpose
               PROMPTEHR_MAX_ACTIVE_JOBS_PER_TENANT="0", PROMPTEHR_MAX_QUEUED_PATIENTS_PER_TENANT="0")
    with open(log_path, "wb") as log:  # the child has its own copy of the file descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "promptehr.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning", "--workers", str(workers)],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"bench_api: the API exited:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("bench_api: the API did not become ready")


def percentile(sorted_ms: list[float], q: float) -> float | None:
    if not sorted_ms:
        return None
    i = min(len(sorted_ms) - 1, max(0, round(q / 100 * len(sorted_ms) + 0.5) - 1))
    return round(sorted_ms[i], 2)


class RawClient:
    """One keep-alive HTTP/1.1 connection over asyncio streams: writes the request, reads the status
    line, the headers and the body (Content-Length or chunked). The measuring instrument should cost
    the shared CPUs little: httpx spends about 4.8 ms of CPU per request here, this about 0.4 ms, and
    on 2 cores shared with the API under test that difference shows up as the API's latency."""

    def __init__(self, base: str, headers: dict[str, str], timeout: float = 30.0):
        from urllib.parse import urlsplit

        url = urlsplit(base)
        self.host, self.port, self.timeout = url.hostname, url.port or 80, timeout
        self.head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{self.host}:{self.port}", **headers}.items())
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> int:
        """The response's status code (its body is read and dropped)."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._request(method, path, body)
        except BaseException:
            await self.aclose()  # the connection is in an unknown state
            raise

    async def _request(self, method: str, path: str, body: bytes | None) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\n{self.head}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode("latin-1") + b"\r\n" + (body or b""))
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")  # no trailers from uvicorn: the empty line
        else:
            raise ConnectionError("response with neither Content-Length nor chunked encoding")
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return status

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


class HttpxClient:
    """The same through httpx.AsyncClient (one connection): `--client httpx`, for comparison."""

    def __init__(self, base: str, headers: dict[str, str], timeout: float = 30.0):
        import httpx

        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self.client = httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=timeout)

    async def request(self, method: str, path: str, body: bytes | None = None) -> int:
        headers = {"Content-Type": "application/json"} if body is not None else None
        return (await self.client.request(method, path, content=body, headers=headers)).status_code

    async def aclose(self) -> None:
        await self.client.aclose()


CLIENTS = {"raw": RawClient, "httpx": HttpxClient}


async def phase(base: str, key: str, clients: int, warmup: float, seconds: float, request: tuple, expect: int,
                rate: float | None = None, client_kind: str = "raw") -> dict:
    """`clients` clients for warmup + seconds; closed loop, or paced at `rate` requests/s in all.
    `request` is (method, path, body bytes or None)."""
    import random

    latencies: list[float] = []
    errors: dict[str, int] = {}
    start = time.perf_counter()
    record_from, stop_at = start + warmup, start + warmup + seconds

    async def client(i: int) -> None:
        period = clients / rate if rate else 0.0
        due = start + random.Random(i).uniform(0, period)
        c = CLIENTS[client_kind](base, {"X-API-Key": key})
        try:
            while True:
                if rate:
                    wait = due - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    t0, due = due, due + period
                else:
                    t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                try:
                    status = await c.request(*request)
                    ok, why = status == expect, str(status)
                except Exception as e:  # noqa: BLE001 - refused, reset, timed out, httpx.HTTPError: all count
                    ok, why = False, type(e).__name__
                t1 = time.perf_counter()
                if t0 >= record_from:
                    if ok:
                        latencies.append((t1 - t0) * 1000)
                    else:
                        errors[why] = errors.get(why, 0) + 1
        finally:
            await c.aclose()

    await asyncio.gather(*(client(i) for i in range(clients)))
    latencies.sort()
    n = len(latencies)
    return {"mode": f"paced at {rate:g} requests/s" if rate else "saturated (closed loop)",
            "requests": n, "errors": errors, "throughput_rps": round(n / seconds, 1),
            "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90),
            "p99_ms": percentile(latencies, 99), "max_ms": round(latencies[-1], 2) if latencies else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=7.0, help="recorded seconds per measurement")
    p.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds before each measurement")
    p.add_argument("--rate", type=float, default=50.0, help="requests/s offered in all by the paced run")
    p.add_argument("--postgres-admin", default=os.environ.get("PROMPTEHR_TEST_POSTGRES",
                                                              "postgresql://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--broker-url", default=os.environ.get("PROMPTEHR_BENCH_REDIS", "redis://127.0.0.1:6379/14"))
    p.add_argument("--shared-data", type=Path, default=Path(os.environ.get(
        "PROMPTEHR_SHARED_DATA", REPO.parent / "shared" / "data")))
    p.add_argument("--only", choices=["post_cohorts", "get_report"], help="measure one endpoint")
    p.add_argument("--client", choices=sorted(CLIENTS), default="raw",
                   help="the load generator's HTTP client (default raw: see RawClient)")
    p.add_argument("--api-workers", type=int, default=1,
                   help="API processes: `promptehr serve --workers N`, as in production (default 1)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args()
    if 4 * (args.seconds + args.warmup) > 45:
        raise SystemExit("bench_api: keep 4 * (seconds + warmup) <= 45 so the run stays under a minute")
    loopback_only(args.postgres_admin)
    loopback_only(args.broker_url)

    import tempfile

    import redis

    t_start = time.perf_counter()
    load_before = os.getloadavg()
    with throwaway_database(args.postgres_admin) as url, tempfile.TemporaryDirectory() as tmp:
        ids = seed(url, args.shared_data)
        api, base = start_api(url, args.broker_url, Path(tmp) / "api.log", args.api_workers)
        try:
            body = json.dumps({**COHORT, "model_id": ids["model_id"]}).encode()
            requests = {"post_cohorts": (("POST", "/cohorts", body), 202),
                        "get_report": (("GET", f"/reports/{ids['report_id']}", None), 200)}
            results = {}
            for name, (request, expect) in requests.items():
                if args.only and name != args.only:
                    continue
                results[name] = {
                    mode: asyncio.run(phase(base, ids["key"], args.clients, args.warmup, args.seconds, request, expect,
                                            rate, args.client))
                    for mode, rate in (("saturated", None), ("paced", args.rate))
                }
        finally:
            api.terminate()
            api.wait(20)
            queue = redis.Redis.from_url(args.broker_url)
            queued = queue.llen("gpu")
            queue.delete("gpu")  # the generation messages nobody was meant to consume
            queue.close()
    for name, r in results.items():
        paced = r["paced"]
        r["target_p99_ms"] = TARGET_P99_MS[name]
        r["pass_at_paced_rate"] = paced["p99_ms"] is not None and paced["p99_ms"] < TARGET_P99_MS[name] \
            and not paced["errors"] and paced["throughput_rps"] >= 0.9 * args.rate
    out = {
        "clients": args.clients, "seconds_per_endpoint": args.seconds, "warmup_s": args.warmup,
        "api": f"promptehr serve --workers {args.api_workers} (uvicorn), PostgreSQL, Redis broker (no worker)",
        "client": args.client, "report_json_bytes": ids["report_bytes"],
        "messages_left_in_queue": queued, "cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()], "wall_s": round(time.perf_counter() - t_start, 1),
        **results,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
