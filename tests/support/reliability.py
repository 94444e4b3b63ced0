"""Helpers for the reliability tests (tests/test_reliability_*.py; no tests here).

Private PostgreSQL and Redis servers that a test may stop and start at will (the machine's shared
ones on 5432/6379 are never touched), plus what tests/support/worker.py already gives: the API
under uvicorn, Celery workers, throwaway databases and an HTTP client. Every process is started as
a subprocess in a session of its own and stopped by its own pid (or process group) here.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import redis
from psycopg import sql

from promptehr.service.migrate import upgrade
from tests.support import REPO  # noqa: F401 - re-exported for the reliability tests
from tests.support.worker import (  # noqa: F401 - re-exported for the reliability tests
    CELERY,
    PYTHON,
    TERMINAL,
    Api,
    Process,
    app_env,
    create_api_key,
    free_port,
    pool_children,
    start_api,
    start_celery_worker,
)

RUN_AS_POSTGRES = os.geteuid() == 0  # initdb and postgres refuse to run as root


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: [int(x) if x.isdigit() else x
                                                                                  for x in p.split("/")[4].split(".")])
    if found:
        return found[-1]
    on_path = shutil.which(name)
    assert on_path, f"PostgreSQL's {name} not found (install postgresql): the reliability tests need it"
    return on_path


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if RUN_AS_POSTGRES else argv


def wait_port(port: int, *, up: bool, timeout: float = 30) -> None:
    """Until something accepts (up) or nothing accepts (not up) on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            accepting = s.connect_ex(("127.0.0.1", port)) == 0
        if accepting == up:
            return
        time.sleep(0.1)
    raise AssertionError(f"127.0.0.1:{port} still {'closed' if up else 'open'} after {timeout}s")


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb in a temp dir, trust auth, loopback, a free port)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="promptehr-pg-"))
        os.chmod(self.dir, 0o777)
        self.data = self.dir / "data"
        self.logfile = self.dir / "postgres.log"
        self.port = free_port()
        if RUN_AS_POSTGRES:
            shutil.chown(self.dir, "postgres", "postgres")
        out = subprocess.run(
            _as_postgres([_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                          "--no-sync", "--no-instructions"]),
            capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.dir}'\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
                    "shared_buffers = 32MB\n")
        self.start()

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        out = subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.logfile),
                                           "-w", "-t", "60", *args]), capture_output=True, text=True, timeout=90,
                             check=False)
        assert out.returncode == 0, (args, out.stdout, out.stderr, self.log()[-3000:])

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def start(self) -> None:
        self._ctl("start")
        wait_port(self.port, up=True)

    def stop(self) -> None:
        """Fast shutdown: every client connection is cut, as when the database server goes away."""
        self._ctl("stop", "-m", "fast")
        wait_port(self.port, up=False)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if (self.data / "postmaster.pid").exists():
                self._ctl("stop", "-m", "immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    try:
        yield pg
    finally:
        pg.close()


class PrivateRedis:
    """redis-server on a free loopback port, no persistence. stop() kills it; start() brings up an
    empty one on the same port (what a broker restart without persistence looks like)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="promptehr-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe, "redis-server not found (install redis-server): the reliability tests need it"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(self.port, up=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        wait_port(self.port, up=False)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    r = PrivateRedis()
    try:
        yield r
    finally:
        r.close()


def migrated(url: str) -> str:
    upgrade(url)
    return url


def kill_group(process: Process) -> None:
    """SIGKILL a process and everything in its process group (a Celery master and its pool child)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.proc.wait(20)


def wait_until(predicate, *, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll predicate() until it returns something truthy; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        time.sleep(interval)


def is_problem(response: httpx.Response, status: int | None = None) -> dict:
    """Assert an RFC 9457 problem document (optionally of `status`); returns its body."""
    assert response.headers.get("content-type", "").startswith("application/problem+json"), (
        response.status_code, response.headers.get("content-type"), response.text[:300])
    body = response.json()
    assert isinstance(body.get("title"), str) and body["status"] == response.status_code, body
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text[:500])
    assert "Traceback" not in response.text
    return body


def spawn_celery_worker(env: dict[str, str], log_path: Path, name: str) -> Process:
    """A Celery worker like tests.support.worker.start_celery_worker, without waiting for it to be
    ready (so that several can start at once); call .wait_for_log(" ready.", timeout) on it."""
    return Process([CELERY, "-A", "promptehr.worker.celery_app", "worker", "-Q", "gpu", "-c", "1", "-P", "prefork",
                    "--loglevel", "info", "--without-gossip", "--without-mingle", "-n", f"{name}@%h"], env, log_path)


def redis_messages_for(url: str, job_id: str) -> dict[str, int]:
    """How many Celery messages naming `job_id` sit in the broker: {"queued": n, "unacked": m}
    ("unacked": delivered to a worker that has not acknowledged them; kombu's `unacked` hash)."""
    client = redis.Redis.from_url(url)
    try:
        queued = sum(job_id.encode() in m for m in client.lrange("gpu", 0, -1))
        unacked = sum(job_id.encode() in m for m in client.hvals("unacked"))
    finally:
        client.close()
    return {"queued": queued, "unacked": unacked}
