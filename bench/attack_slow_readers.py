"""Attack: slow export readers against clients polling GET /cohorts/{id} (issue 15, defect 1).

R slow readers (default 50) each download a large cohort's JSONL export a few KB at a time: read
--read-bytes, sleep --sleep seconds, again, through a socket with a small receive buffer, so that
what they have not read waits in the API (its write is blocked) rather than in the kernel. When a
download ends another starts. Meanwhile P pollers (default 50) loop over GET /cohorts/{id} for
--duration seconds. Before the fix each export held a pooled database connection for its whole
download: 15 slow readers left none (pool 5 + 10), and every database route answered 500 after 30 s.

Prints JSON: the pollers' requests, errors (anything but 200, or no answer) and latency percentiles;
the readers' downloads opened, refused, finished and bytes read; exits 1 when a poller saw an error.
Unless --database-url is given a private PostgreSQL is started (and removed) for the run; the API
runs under uvicorn on a free loopback port with the default pool unless --pool-size etc. say.

    .venv/bin/python bench/attack_slow_readers.py [--readers 50] [--pollers 50] [--duration 60]

`SlowReader` and `seed_cohort` also serve tests/test_hardening_slow_readers.py.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import h11

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from bench_load import backing_services, percentile  # after the path set-up above

RECEIVE_BUFFER = 4096  # bytes; the kernel doubles it and keeps a floor of a few KB
SEGMENT = 1400  # TCP maximum segment size of a reader, about an Internet client's


def synthetic_patients(n: int) -> list[dict]:
    """`n` patient records of about 300 bytes of JSONL each (eight visits of four codes)."""
    codes = ["4019", "25000", "V5861", "E8889", "41401", "4280", "42731", "5849"]
    return [{"patient_id": f"slow-{i:06d}", "age": float(20 + i % 70), "sex": "FM"[i % 2],
             "visits": [[codes[(i + v + k) % len(codes)] for k in range(4)] for v in range(8)]}
            for i in range(n)]


def seed_cohort(database_url: str, n_patients: int) -> dict:
    """An API key and one generated cohort of `n_patients` synthetic_patients (no worker needed)."""
    from promptehr.service import store
    from promptehr.service.auth import generate_key, hash_key
    from promptehr.service.db import make_engine, make_sessionmaker

    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as s:
            key = generate_key()
            # an admin key: it sees the cohort below, which is written with no tenant of its own
            store.create_api_key(s, name="slow-readers", key_hash=hash_key(key), prefix=key[:10], is_admin=True)
            ds = store.create_dataset(s, name="slow", format="mimic3", path="mimic3-demo", stats={})
            model = store.create_model(s, name="slow", dataset_id=ds.id, checkpoint_path="slow",
                                       manifest_sha256="0" * 64, config={"preset": "tiny"})
            cohort, (shard,) = store.create_cohort(s, model_id=model.id, n_patients=n_patients, seed=1, spec={},
                                                   shard_size=n_patients)
            assert store.claim_job(s, "generate", shard.id, "bench")
            patients = synthetic_patients(n_patients)
            for start in range(0, n_patients, 1000):
                store.insert_patients(s, cohort.id, start, patients[start:start + 1000])
            store.mark_succeeded(s, "generate", shard.id, worker_id="bench")
            return {"key": key, "cohort_id": cohort.id, "patients": patients}
    finally:
        engine.dispose()


class SlowReader:
    """One HTTP/1.1 GET whose body is read only when asked (h11 parses the bytes). The socket's
    receive buffer and the stream's buffer are small, so a reader that stops reading stops the
    server's writes within a few KB."""

    def __init__(self, base: str, path: str, headers: dict[str, str], rcvbuf: int = RECEIVE_BUFFER):
        host, port = base.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.path, self.headers, self.rcvbuf = path, headers, rcvbuf
        self.conn = h11.Connection(h11.CLIENT)
        self.status: int | None = None
        self.body = bytearray()
        self.done = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> int:
        """Send the request and read up to the response's head; returns its status."""
        sock = socket.socket()
        # Both before connect: the receive buffer sets the window the server may fill, and an
        # Ethernet-sized segment (loopback's is 64 KB) keeps the server's kernel send buffer, which
        # Linux sizes from the segment size, at tens of KB instead of megabytes.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, SEGMENT)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, self.address)
        self._reader, self._writer = await asyncio.open_connection(sock=sock, limit=self.rcvbuf)
        host = f"{self.address[0]}:{self.address[1]}"
        request = h11.Request(method="GET", target=self.path,
                              headers=[("Host", host), ("Connection", "close"), *self.headers.items()])
        self._writer.write(self.conn.send(request) + self.conn.send(h11.EndOfMessage()))
        while self.status is None and not self.done:
            await self._pump()
        return self.status or 0

    async def read(self, n: int) -> int:
        """Read at least `n` more body bytes (fewer at the end); returns how many."""
        before = len(self.body)
        while not self.done and len(self.body) - before < n:
            await self._pump()
        return len(self.body) - before

    async def read_all(self) -> bytes:
        """The rest of the body at full speed: a larger buffer (a window of 8 KB needs an
        acknowledgement, often delayed 40 ms, every 8 KB) and larger reads."""
        sock = self._writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        while not self.done:
            await self._pump(1 << 16)
        return bytes(self.body)

    async def _pump(self, size: int | None = None) -> None:
        data = await self._reader.read(size or self.rcvbuf)
        self.conn.receive_data(data)  # b"" is the end of the stream: h11 then says whether that was early
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Response):
                self.status = event.status_code
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self.done = True
                return

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


async def _slow_reader(base: str, seeded: dict, deadline: float, args, stats: dict) -> None:
    path = f"/cohorts/{seeded['cohort_id']}/export?format=jsonl"
    while time.monotonic() < deadline:
        reader = SlowReader(base, path, {"X-API-Key": seeded["key"]})
        try:
            stats["opened"] += 1
            status = await reader.open()
            if status != 200:
                stats["refused"].append(status)
                await asyncio.sleep(args.sleep)
                continue
            while not reader.done and time.monotonic() < deadline:
                stats["bytes"] += await reader.read(args.read_bytes)
                await asyncio.sleep(args.sleep)
            stats["finished"] += reader.done
        except (OSError, h11.ProtocolError) as e:
            stats["errors"].append(f"{type(e).__name__}: {e}")
        finally:
            reader.close()


async def _poller(client, cohort_id: str, deadline: float, interval: float, seen: dict) -> None:
    import httpx

    while time.monotonic() < deadline:
        t = time.perf_counter()
        try:
            r = await client.get(f"/cohorts/{cohort_id}")
        except httpx.HTTPError as e:
            seen["errors"].append(f"{type(e).__name__}: {e}")
            seen["unanswered"] += 1
            continue
        seen["latencies"].append(time.perf_counter() - t)
        if r.status_code != 200:
            seen["errors"].append(f"{r.status_code} {r.text[:200]}")
        if interval:
            await asyncio.sleep(interval)


async def run_attack(base: str, seeded: dict, args) -> dict:
    import httpx

    stats = {"opened": 0, "refused": [], "finished": 0, "bytes": 0, "errors": []}
    seen = {"latencies": [], "errors": [], "unanswered": 0}
    limits = httpx.Limits(max_connections=args.pollers, max_keepalive_connections=args.pollers)
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": seeded["key"]}, timeout=60,
                                 limits=limits) as client:
        readers = [asyncio.create_task(_slow_reader(base, seeded, time.monotonic() + args.duration, args, stats))
                   for _ in range(args.readers)]
        await asyncio.sleep(args.warmup)  # the readers hold their downloads open before the polling starts
        t0 = time.monotonic()
        deadline = t0 + args.duration
        await asyncio.gather(*(_poller(client, seeded["cohort_id"], deadline, args.poll_interval, seen)
                               for _ in range(args.pollers)))
        elapsed = time.monotonic() - t0
        await asyncio.gather(*readers)
    ms = [v * 1000 for v in seen["latencies"]]
    errors = seen["errors"]
    return {
        "readers": args.readers, "pollers": args.pollers, "duration_s": round(elapsed, 1),
        "poll_requests": len(ms) + seen["unanswered"],
        "poll_errors": len(errors), "poll_error_samples": errors[:10],
        "poll_p50_ms": _r(percentile(ms, 0.5)), "poll_p90_ms": _r(percentile(ms, 0.9)),
        "poll_p99_ms": _r(percentile(ms, 0.99)), "poll_max_ms": _r(max(ms) if ms else None),
        "poll_throughput_rps": round(len(ms) / elapsed, 1) if elapsed else None,
        "downloads_opened": stats["opened"], "downloads_refused": len(stats["refused"]),
        "refused_statuses": sorted(set(stats["refused"])), "downloads_finished": stats["finished"],
        "bytes_read": stats["bytes"], "reader_errors": len(stats["errors"]), "reader_error_samples": stats["errors"][:5],
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def attack(args) -> dict:
    from tests.support.reliability import app_env, start_api

    with backing_services(args.database_url, "redis://unused") as (db, _broker), \
            tempfile.TemporaryDirectory(prefix="attack-slow-") as tmp:
        seeded = seed_cohort(db, args.patients)
        pool = {f"PROMPTEHR_DATABASE_{name.upper()}": str(value) for name, value in
                (("pool_size", args.pool_size), ("max_overflow", args.max_overflow),
                 ("pool_timeout_seconds", args.pool_timeout)) if value is not None}
        env = app_env(home=Path(tmp), data_root=Path(tmp), database_url=db, **pool)
        api, base = start_api(env, Path(tmp) / "api.log")
        try:
            result = asyncio.run(run_attack(base, seeded, args))
        finally:
            api.stop()
        log = (Path(tmp) / "api.log").read_text(errors="replace")
        result["api_log_errors"] = sum(line.startswith("ERROR") for line in log.splitlines())
        result.update(patients=args.patients, cpus=os.cpu_count(), load_avg_1m=round(os.getloadavg()[0], 2))
        return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readers", type=int, default=50, help="slow export readers")
    p.add_argument("--pollers", type=int, default=50, help="clients looping over GET /cohorts/{id}")
    p.add_argument("--duration", type=float, default=60, help="seconds of polling")
    p.add_argument("--warmup", type=float, default=2, help="seconds the readers start ahead of the pollers")
    p.add_argument("--patients", type=int, default=20_000, help="size of the exported cohort (~300 B each)")
    p.add_argument("--read-bytes", type=int, default=4096, help="bytes a reader reads before each sleep")
    p.add_argument("--sleep", type=float, default=1.0, help="seconds a reader sleeps between reads")
    p.add_argument("--poll-interval", type=float, default=0, help="seconds between a poller's requests (0: closed loop)")
    p.add_argument("--pool-size", type=int, default=None, help="the API's pool (default: the settings' default)")
    p.add_argument("--max-overflow", type=int, default=None)
    p.add_argument("--pool-timeout", type=float, default=None, help="seconds")
    p.add_argument("--database-url", default=None, help="a migrated database (default: a private PostgreSQL)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = attack(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if result["poll_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
