"""A whole service stack for the scripts that measure it (bench/bench_workers.py, scripts/service_report.py):
a throwaway PostgreSQL database (tests/support/databases.py), a private Redis queue, the API under uvicorn
and Celery workers as production runs them, all subprocesses (tests/support/worker.py), and a model in it:
an existing checkpoint registered, or one trained through POST /training-jobs."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from promptehr.service import store
from promptehr.service.db import make_engine, make_sessionmaker

from tests.support import REPO
from tests.support.worker import (
    Api,
    app_env,
    create_api_key,
    delete_queue,
    pool_children,
    private_queue,
    start_api,
    start_celery_worker,
)

SHARED = Path(os.environ.get("PROMPTEHR_SHARED_DATA", REPO.parent / "shared" / "data"))
REDIS = os.environ.get("PROMPTEHR_TEST_REDIS", "redis://127.0.0.1:6379/15")


class ChildWatcher(threading.Thread):
    """pid of every pool child seen -> the name of its worker (the master's child list, every 50 ms:
    a child lives at least as long as the shard it runs, which takes seconds)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.masters: dict[int, str] = {}
        self.owner: dict[int, str] = {}
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.05):
            for master, name in list(self.masters.items()):
                for pid in pool_children(master):
                    self.owner.setdefault(pid, name)


class Stack:
    """The database, the queue, the API (restarted when the shard size changes) and the workers."""

    def __init__(self, home: Path, db_url: str, max_tasks_per_child: int | None = None):
        self.home, self.db_url, self.queue = home, db_url, private_queue()
        self.env = app_env(home=home, data_root=SHARED, database_url=db_url, broker_url=REDIS,
                           PROMPTEHR_CELERY_QUEUE=self.queue, PROMPTEHR_MODEL_ROOT=str(home / "models"),
                           PROMPTEHR_MAX_COHORT_PATIENTS="10000000")
        if max_tasks_per_child is not None:
            self.env["PROMPTEHR_WORKER_MAX_TASKS_PER_CHILD"] = str(max_tasks_per_child)
        self.engine = make_engine(db_url)
        self.sessions = make_sessionmaker(self.engine)
        self.api_proc, self.api, self.shard_size, self.key = None, None, None, None
        self.workers: list = []
        self.watcher = ChildWatcher()
        self.watcher.start()

    def use_shard_size(self, size: int) -> Api:
        if size != self.shard_size:
            self._stop_api()
            env = {**self.env, "PROMPTEHR_COHORT_SHARD_SIZE": str(size)}
            self.key = self.key or create_api_key(env)
            self.api_proc, base = start_api(env, self.home / f"api-{size}.log")
            self.api, self.shard_size = Api(base, self.key), size
            self.api.client.timeout = 600
        return self.api

    def scale_to(self, n: int) -> None:
        """Start workers w1, w2, ... until n run (each waits until it consumes)."""
        while len(self.workers) < n:
            name = f"w{len(self.workers) + 1}"
            proc = start_celery_worker(self.env, self.home / f"{name}.log", name=f"{name}@bench")
            self.workers.append(proc)
            self.watcher.masters[proc.pid] = name

    def _stop_api(self):
        if self.api is not None:
            self.api.close()
            self.api_proc.stop()
            self.api = None

    def close(self):
        self.watcher.done.set()
        self._stop_api()
        for w in self.workers:
            w.stop()
        self.engine.dispose()
        delete_queue(REDIS, self.queue)


@contextlib.contextmanager
def home_folder(keep: Path | None, prefix: str) -> Iterator[Path]:
    """The stack's home (logs, models): `keep` when given (left in place), else a temporary folder."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def manifest_sha256(directory: Path) -> str:
    return hashlib.sha256((directory / "manifest.json").read_bytes()).hexdigest()


def get_model(stack: Stack, *, data: str, data_format: str, shard_size: int, model: str | None = None,
              split_seed: int = 0, preset: str = "small", epochs: int = 1, name: str = "bench") -> str:
    """The id of a model on `data` (a path under the shared data, registered through POST /datasets).
    `model`: an existing checkpoint directory, registered as it is (its holdout is the split of
    `split_seed`, which a checkpoint does not record: the CLI's default is 0); otherwise one worker
    trains `preset` for `epochs` through POST /training-jobs."""
    api = stack.use_shard_size(shard_size)
    dataset = api.post("/datasets", {"name": name, "format": data_format, "path": data}, 201)
    if model:
        directory = Path(model).resolve()
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise SystemExit(f"--model {model}: no config.json in {directory} (expected a checkpoint directory)")
        train = json.loads(config_path.read_text()).get("train", {})
        with stack.sessions() as s:
            # the dataset's tenant (the API key's): a key sees only its tenant's models
            tenant = store.get_dataset(s, dataset["id"]).tenant
            row = store.create_model(s, name=name, dataset_id=dataset["id"], checkpoint_path=str(directory),
                                     manifest_sha256=manifest_sha256(directory), tenant=tenant,
                                     config={"preset": train.get("preset"), "mode": train.get("mode"),
                                             "split_seed": split_seed})
            return row.id
    stack.scale_to(1)
    t = time.perf_counter()
    job = api.post("/training-jobs", {"dataset_id": dataset["id"], "preset": preset, "epochs": epochs}, 202)
    body, _ = api.poll(f"/training-jobs/{job['id']}", timeout=3600, interval=1.0)
    assert body["status"] == "succeeded", body
    print(f"trained {preset} for {epochs} epoch(s) in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return body["model_id"]
