"""Helpers for the worker and end-to-end tests (test_worker_*, test_e2e_* and, through
tests/support/reliability.py, test_reliability_*): a real Celery worker process, the API under uvicorn
(or `promptehr serve`) in a subprocess on a free loopback port, and an HTTP client that polls jobs.
Every process a test starts is stopped by it, by its own pid."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import redis

from tests.support import REPO

PYTHON = sys.executable
CELERY = str(Path(PYTHON).with_name("celery"))
TERMINAL = ("succeeded", "failed", "cancelled")
TORCH_THREADS = "1"


def private_queue() -> str:
    """A queue name of the test's own: the shared test Redis may serve other workers at the same time,
    and a worker must not take (and drop, as unknown) another test's messages."""
    return f"gpu-test-{uuid.uuid4().hex[:10]}"


def delete_queue(url: str, queue: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.delete(queue, f"_kombu.binding.{queue}")
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_env(*, home: Path, data_root: Path, database_url: str | None = None, broker_url: str | None = None,
            **extra: str) -> dict[str, str]:
    """The environment of an API or worker process: only what the test says, nothing inherited."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PROMPTEHR_", "CELERY_")) and k != "DATABASE_URL"}
    # One torch thread per process: the test machine has 2 cores shared with other work, and OpenMP
    # threads spin-waiting on an oversubscribed CPU make the tiny model's steps ~70x slower (measured:
    # 38 steps in 78 s with 2 threads under load, 1.1 s with 1). Both back ends use the same count,
    # which the bit-identical comparisons need.
    env.update(PROMPTEHR_HOME=str(home), PROMPTEHR_DATA_ROOT=str(data_root), PYTHONUNBUFFERED="1",
               PROMPTEHR_DEVICE="cpu", OMP_NUM_THREADS=TORCH_THREADS, MKL_NUM_THREADS=TORCH_THREADS)
    if database_url:
        env["DATABASE_URL"] = database_url
    if broker_url:
        env["CELERY_BROKER_URL"] = broker_url
    env.update(extra)
    return env


@contextlib.contextmanager
def torch_threads(n: int = int(TORCH_THREADS)):
    """This process's torch at the thread count the test's subprocesses use."""
    # imported here, not at the top: torch takes 3-4 s to import (measured under load) and most
    # importers of this module never need it
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Process:
    """A subprocess with its output in a log file; stopped with SIGTERM, then SIGKILL, by its pid."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - held for the process's life
        self.proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited ({self.proc.returncode}) before {text!r}:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} within {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def start_celery_worker(env: dict[str, str], log_path: Path, *, name: str | None = None) -> Process:
    """`celery -A worker.celery_app worker -Q gpu -c 1` (the queue: PROMPTEHR_CELERY_QUEUE of `env`,
    as the API sends to), waiting until it consumes."""
    name = name or f"test-{uuid.uuid4().hex[:8]}@%h"
    queue = env.get("PROMPTEHR_CELERY_QUEUE", "gpu")
    worker = Process([CELERY, "-A", "promptehr.worker.celery_app", "worker", "-Q", queue, "-c", "1", "-P", "prefork",
                      "--loglevel", "info", "--without-gossip", "--without-mingle", "-n", name], env, log_path)
    worker.wait_for_log(" ready.", timeout=90)
    return worker


def pool_children(pid: int) -> list[int]:
    """Pids of the direct children of process `pid` (a prefork worker's pool processes)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(b")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def start_api(env: dict[str, str], log_path: Path, *, embedded: bool = False) -> tuple[Process, str]:
    """The API on a free loopback port: uvicorn with the app factory, or `promptehr serve` (embedded:
    migrates the SQLite file and runs jobs in-process). Returns (process, base URL)."""
    port = free_port()
    if embedded:
        argv = [PYTHON, "-m", "promptehr.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    else:
        argv = [PYTHON, "-m", "uvicorn", "--factory", "promptehr.service.app:create_app", "--host", "127.0.0.1",
                "--port", str(port), "--log-level", "warning"]
    api = Process(argv, env, log_path)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if api.proc.poll() is not None:
            raise AssertionError(f"API exited ({api.proc.returncode}):\n{api.log()[-4000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return api, base
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    api.stop()
    raise AssertionError(f"API not ready within 60s:\n{api.log()[-4000:]}")


def create_api_key(env: dict[str, str]) -> str:
    out = subprocess.run([PYTHON, "-m", "promptehr.cli", "apikey", "create", "--name", "e2e"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()[0].strip()


class Api:
    """An httpx client on the API with the key set, and job polling."""

    def __init__(self, base: str, key: str):
        self.client = httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30)

    def close(self) -> None:
        self.client.close()

    def post(self, path: str, body: dict, expect: int) -> dict:
        r = self.client.post(path, json=body)
        assert r.status_code == expect, (r.status_code, r.text)
        return r.json()

    def get(self, path: str, **kw) -> httpx.Response:
        r = self.client.get(path, **kw)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r

    def poll(self, path: str, *, until=TERMINAL, timeout: float = 300, interval: float = 0.25) -> tuple[dict, list]:
        """GET `path` until its status is in `until`. Returns (last body, distinct progress values seen)."""
        seen: list = []
        deadline = time.monotonic() + timeout
        while True:
            body = self.get(path).json()
            if body.get("progress") and (not seen or seen[-1] != body["progress"]):
                seen.append(body["progress"])
            if body["status"] in until:
                return body, seen
            assert time.monotonic() < deadline, f"{path} still {body['status']} after {timeout}s: {body}"
            time.sleep(interval)

    def all_patients(self, cohort_id: str, limit: int = 200) -> list[dict]:
        items, url = [], f"/cohorts/{cohort_id}/patients?limit={limit}"
        while url:
            page = self.get(url).json()
            items.extend(page["items"])
            url = page.get("next")
        return items
