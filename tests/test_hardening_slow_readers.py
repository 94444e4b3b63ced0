"""Issue 15, defect 1: slow export readers and pool exhaustion, on PostgreSQL and SQLite.

- Slow readers: the API under uvicorn with a pool of 2 + 1 connections; more slow readers than that
  start a large export each, read a few KB and stop reading (a small socket receive buffer, so their
  unread bytes wait in the API). GET /cohorts/{id} and /readyz still answer 200, and each reader then
  reads its export to the end: the same bytes as model/data/export.py gives for the stored patients.
  (Before the fix an export held its connection for the whole download: the fourth reader and every
  other request waited for the pool and got a 500.)
- Pool exhaustion: an app with a pool of one connection, that connection checked out by the test:
  requests are a 503 problem+json `database-busy` with Retry-After (not a 500), and /readyz says
  "busy", while an unreachable database makes it say "unreachable".
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.util

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from promptehr.model.data.export import export_bytes
from promptehr.model.patient import Patient
from promptehr.service.app import create_app
from promptehr.service.migrate import upgrade
from promptehr.service.settings import Settings
from tests.support import REPO
from tests.support.databases import throwaway_database
from tests.support.service import assert_problem
from tests.support.worker import app_env, free_port, start_api

pytestmark = [pytest.mark.services, pytest.mark.timeout(300)]

PATIENTS = 3000  # about 1 MB of JSONL: several times more than the socket buffers between a stalled reader and the API
POOL = {"database_pool_size": 2, "database_max_overflow": 1, "database_pool_timeout_seconds": 2}
READERS = POOL["database_pool_size"] + POOL["database_max_overflow"] + 3


def _attack_module():
    spec = importlib.util.spec_from_file_location("attack_slow_readers", REPO / "bench" / "attack_slow_readers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


attack = _attack_module()


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def seeded(request, tmp_path_factory):
    """A migrated database of the module's own (PostgreSQL or a SQLite file) holding an API key and one
    generated cohort of PATIENTS patients; with its URL and the expected JSONL export."""
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            url = stack.enter_context(throwaway_database())
        else:
            url = f"sqlite:///{tmp_path_factory.mktemp('slow-readers') / 'db.sqlite3'}"
            upgrade(url)
        data = attack.seed_cohort(url, PATIENTS)
        jsonl = b"".join(export_bytes((Patient.from_dict(p) for p in data["patients"]), "jsonl"))
        yield {**data, "url": url, "jsonl": jsonl}


async def _stall_readers_then_poll(base: str, seeded: dict) -> list[bytes]:
    auth = {"X-API-Key": seeded["key"]}
    path = f"/cohorts/{seeded['cohort_id']}/export?format=jsonl"
    readers = [attack.SlowReader(base, path, auth) for _ in range(READERS)]
    try:
        for reader in readers:  # one after the other: each is mid-download before the next starts
            assert await reader.open() == 200
            assert await reader.read(4096) >= 4096
            assert not reader.done
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as client:
            for _ in range(5):
                r = await client.get(f"/cohorts/{seeded['cohort_id']}")
                assert r.status_code == 200, r.text
                assert r.json()["shards_done"] == 1
            r = await client.get("/readyz")
            assert r.status_code == 200 and r.json()["checks"]["database"] == "ok", r.text
        assert not any(reader.done for reader in readers)  # all of them were still downloading
        return await asyncio.gather(*(reader.read_all() for reader in readers))
    finally:
        for reader in readers:
            reader.close()


@pytest.mark.slow
def test_slow_readers_do_not_hold_the_pool(seeded, tmp_path):
    pool = {f"PROMPTEHR_{k.upper()}": str(v) for k, v in POOL.items()}
    # One export making a chunk at a time (service/export.gated): at most one of the 3 connections is an
    # export's at any moment, so /readyz must find the pool with room whatever the readers do.
    env = app_env(home=tmp_path, data_root=tmp_path, database_url=seeded["url"], PROMPTEHR_EXPORT_CHUNK_ROWS="50",
                  PROMPTEHR_EXPORT_CONCURRENCY="1", **pool)
    api, base = start_api(env, tmp_path / "api.log")
    try:
        bodies = asyncio.run(_stall_readers_then_poll(base, seeded))
    finally:
        api.stop()
    assert all(body == seeded["jsonl"] for body in bodies), [len(b) for b in bodies]
    assert "Traceback" not in api.log(), api.log()[-3000:]


def _app(url: str, home) -> TestClient:
    settings = Settings(database_url=url, promptehr_home=home, data_root=home, database_pool_size=1,
                        database_max_overflow=0, database_pool_timeout_seconds=0.5)
    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_pool_exhaustion_is_503_with_retry_after(seeded, tmp_path):
    auth = {"X-API-Key": seeded["key"]}
    cohort = f"/cohorts/{seeded['cohort_id']}"
    with _app(seeded["url"], tmp_path) as client:
        assert client.get(cohort, headers=auth).status_code == 200
        with client.app.state.engine.connect() as held:  # the pool's only connection
            held.execute(sa.text("SELECT 1"))
            for path in (cohort, f"{cohort}/patients", f"{cohort}/export", "/cohorts", "/datasets"):
                r = client.get(path, headers=auth)
                problem = assert_problem(r, 503)
                assert problem["type"].endswith("/database-busy") and int(r.headers["retry-after"]) >= 1, path
            ready = client.get("/readyz")
            assert assert_problem(ready, 503)["checks"]["database"].startswith("busy"), ready.text
            assert "database busy" in ready.json()["detail"] and ready.headers["retry-after"]
        # the connection back in the pool: everything answers again
        assert client.get(cohort, headers=auth).status_code == 200
        assert client.get("/readyz").json()["checks"]["database"] == "ok"


def test_readyz_tells_an_outage_from_a_busy_pool(seeded, tmp_path):
    if seeded["url"].startswith("sqlite"):
        (tmp_path / "db").mkdir()
        url = f"sqlite:///{tmp_path / 'db'}"  # a folder: the database file cannot be opened
    else:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"  # nothing listens there
    with _app(url, tmp_path) as client:
        ready = client.get("/readyz")
        assert assert_problem(ready, 503)["checks"]["database"].startswith("unreachable ("), ready.text
        assert "database unreachable" in ready.json()["detail"]
        r = client.get(f"/cohorts/{seeded['cohort_id']}", headers={"X-API-Key": seeded["key"]})
        assert assert_problem(r, 503)["type"].endswith("/database-unavailable")


def test_exports_make_their_chunks_through_the_gate():
    """At most `export_concurrency` exports make a chunk at once (50 exports reading pages back to back
    starved the other routes: docs/reliability.md §7); the others wait without a thread."""
    import asyncio
    import threading
    import time as _time

    from promptehr.service.export import gated

    busy, peak, lock = [0], [0], threading.Lock()

    def chunks(n):
        for i in range(n):
            with lock:
                busy[0] += 1
                peak[0] = max(peak[0], busy[0])
            _time.sleep(0.01)  # a page read
            with lock:
                busy[0] -= 1
            yield b"%d" % i

    async def main(width):
        gate = asyncio.Semaphore(width)

        async def drain(it):
            return [c async for c in gated(it, gate)]
        return await asyncio.gather(*(drain(chunks(5)) for _ in range(6)))

    for width in (1, 2):
        peak[0] = 0
        out = asyncio.run(main(width))
        assert out == [[b"0", b"1", b"2", b"3", b"4"]] * 6
        assert peak[0] == width
