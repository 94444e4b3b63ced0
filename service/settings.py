"""Service settings: one class, read from the environment, built lazily by `get_settings()`.

Environment variables: `DATABASE_URL`, `CELERY_BROKER_URL`, `PROMPTEHR_HOME`, `PROMPTEHR_DATA_ROOT`,
`PROMPTEHR_MODEL_ROOT` and `PROMPTEHR_<FIELD>` for the limits (for example `PROMPTEHR_MAX_EPOCHS`) and
for the workers' settings (`PROMPTEHR_DEVICE`, `PROMPTEHR_WORKER_MAX_TASKS_PER_CHILD`, ...): worker/
reads every setting through this class, never from the environment itself.

With no `DATABASE_URL` the service runs embedded: a SQLite file under `PROMPTEHR_HOME`
(`database_is_embedded` is then true) and, with no `CELERY_BROKER_URL`, an in-process job runner.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import AliasChoices, Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("promptehr"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROMPTEHR_", extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    promptehr_home: Path = Field(
        default_factory=_default_home, validation_alias=AliasChoices("PROMPTEHR_HOME", "promptehr_home")
    )
    # None means the embedded SQLite file <promptehr_home>/promptehr.sqlite3 (filled in below).
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "PROMPTEHR_DATABASE_URL", "database_url")
    )
    # The API's connection pool (service/db.py: api_pool_options; workers keep SQLAlchemy's defaults).
    # A request that finds every connection in use waits this long, then is a 503 database-busy with
    # Retry-After: SQLAlchemy's own 30 s outlasts most clients' timeouts, and requests hold a
    # connection for milliseconds, so a pool still full after 5 s is overloaded, not about to free up.
    database_pool_size: int = Field(default=5, ge=1)
    database_max_overflow: int = Field(default=10, ge=0)
    database_pool_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    # None means jobs run in this process (the embedded runner); otherwise e.g. redis://host:6379/0.
    celery_broker_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CELERY_BROKER_URL", "PROMPTEHR_CELERY_BROKER_URL", "celery_broker_url"),
    )
    celery_queue: str = "gpu"
    # Redis visibility timeout of the workers (seconds; None: worker.celery_app's default of a week).
    # An unacknowledged message (its worker died) is handed out again after this long.
    celery_visibility_timeout_seconds: int | None = Field(default=None, ge=1)
    # Dataset paths in POST /datasets are relative to this folder and may not leave it.
    data_root: Path | None = Field(default=None, validation_alias=AliasChoices("PROMPTEHR_DATA_ROOT", "data_root"))
    # Where trained checkpoints are written (default <promptehr_home>/models).
    model_root: Path | None = Field(default=None, validation_alias=AliasChoices("PROMPTEHR_MODEL_ROOT", "model_root"))
    # The URL clients reach the API at (e.g. https://ehr.example.org): `next` links and Location
    # headers are absolute on it. Unset, they are relative: never built from the request's Host
    # header, which the client chooses (service/links.py).
    public_base_url: str | None = Field(default=None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    # Data files (POST /datasets and the jobs reading them, model/data/opening.py): a file is read only
    # if it is a regular file inside the data root, at most this large on disk (1 GiB: the full
    # MIMIC-IV diagnoses table is about 0.15 GiB uncompressed) ...
    data_max_file_bytes: int = Field(default=1 << 30, ge=1)
    # ... and at most this much once decompressed (2 GiB): a gzip bomb stops here, streamed, not in memory;
    data_max_decompressed_bytes: int = Field(default=2 << 30, ge=1)
    # a whole data set read in at most this long (seconds): a slow or stalled mount cannot hold a request.
    data_read_timeout_seconds: float = Field(default=300.0, gt=0)

    # Limits.
    max_cohort_patients: int = Field(default=100_000, ge=1)
    max_epochs: int = Field(default=200, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    default_page_limit: int = Field(default=100, ge=1)
    max_page_limit: int = Field(default=500, ge=1)
    # Patients per shard (one Celery message and job each). 1000 by measurement (bench/bench_workers.py,
    # docs/scaling.md; small preset, 2 CPU workers): 20,000 patients in 1000s ran at 89.2 patients/s, 4,000
    # in 2000s at 89.0 (no gain, and half the workers a cohort can use), in 500s at 83.2 (each shard's
    # fresh pool child and model load left a worker idle ~4.5 s).
    cohort_shard_size: int = Field(default=1000, ge=1)
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    # A running job whose heartbeat is older than this may be claimed again (the worker died).
    job_stale_after_seconds: int = Field(default=600, ge=1)
    export_chunk_rows: int = Field(default=500, ge=1)
    # Exports making a chunk (a page read and its encoding) at once, per API process; the others wait
    # on the event loop, holding no thread and no connection. Without it 50 exports read pages as fast
    # as loopback sockets took them and starved every other route of connections and CPU (pollers:
    # 181 of 355 requests a 503, p99 16.9 s; bench/attack_slow_readers.py, docs/reliability.md).
    export_concurrency: int = Field(default=2, ge=1)
    # Quotas per tenant (service/store/quotas.py; 0: no limit). Without them one key queued 50 cohorts
    # of 100,000 patients (about 12 h of CPU, 5 GB of disk) in 2.5 s. Over one, POST answers 429 with
    # Retry-After. Training jobs and cohorts queued or running: 10 keeps a tenant's work to minutes of
    # queue, not hours, while leaving room for a few trainings and cohorts side by side.
    max_active_jobs_per_tenant: int = Field(default=10, ge=0)
    # Patients of a tenant's queued and running shards: two cohorts of the largest size (about 30 min
    # of one CPU worker at ~115 patients/s). A cohort larger than this is a 422 (it could never run).
    max_queued_patients_per_tenant: int = Field(default=200_000, ge=0)
    # Retry-After of a 429: jobs take minutes, so a client polling faster learns nothing.
    quota_retry_after_seconds: int = Field(default=60, ge=1)

    # Workers (worker/; the API ignores these).
    # Patients a worker generates (and stores) at a time within a shard (None: the worker's default).
    generation_batch_size: int | None = Field(default=None, ge=1)
    # Jobs a Celery pool child runs before it is replaced: 1, a fresh process per job (what a job
    # leaked, GPU memory included, goes back); 0 never replaces it (saves a CUDA start-up per shard).
    worker_max_tasks_per_child: int = Field(default=1, ge=0)
    # Job time limits (seconds, per attempt; worker/execution.py): a job running longer is stopped
    # and marked failed with the reason. Defaults well above the runs we know (the DE-SynPUF small
    # model trained in 32 min on one thread): training 48 h, one generation shard 2 h, an evaluation 2 h.
    train_time_limit_seconds: float = Field(default=48 * 3600, gt=0)
    generate_time_limit_seconds: float = Field(default=2 * 3600, gt=0)
    evaluate_time_limit_seconds: float = Field(default=2 * 3600, gt=0)
    # How long a job that was cancelled or ran out of time may take to stop by itself (it polls
    # between steps) before its row is finished for it: a body stuck in a read must not keep the job
    # "running" with fresh heartbeats. Celery's hard time limit (limit + 3 x this) then ends the child.
    job_stop_grace_seconds: float = Field(default=60.0, gt=0)
    # torch device of the jobs: cpu, cuda, cuda:N or mps; None (unset, empty or "auto"): cuda when
    # torch sees one, else cpu.
    device: str | None = Field(default=None, pattern=r"^(?:cpu|cuda(?::[0-9]+)?|mps)$")
    # The devices a CPU worker offers a training job (`devices` in POST /training-jobs): gloo processes
    # sharing its cores. 1 by default: torch already spreads one process over the cores, so more pays
    # only where one process cannot use them all (many sockets); a GPU worker offers its GPUs.
    cpu_devices: int = Field(default=1, ge=1, le=256)

    _embedded: bool = PrivateAttr(default=False)

    @field_validator("device", mode="before")
    @classmethod
    def _auto_device(cls, value):
        if isinstance(value, str):
            value = value.strip().lower()
            if value in ("", "auto"):
                return None
        return value

    @model_validator(mode="after")
    def _fill_paths(self) -> Settings:
        self.promptehr_home = Path(self.promptehr_home).expanduser()
        if self.data_root is None:
            self.data_root = self.promptehr_home / "data"
        if self.model_root is None:
            self.model_root = self.promptehr_home / "models"
        self.data_root = Path(self.data_root).expanduser()
        self.model_root = Path(self.model_root).expanduser()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.promptehr_home / 'promptehr.sqlite3'}"
            self._embedded = True
        return self

    @property
    def database_is_embedded(self) -> bool:
        """True when no database URL was given: the default SQLite file under PROMPTEHR_HOME."""
        return self._embedded

    @property
    def jobs_run_in_process(self) -> bool:
        return self.celery_broker_url is None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
