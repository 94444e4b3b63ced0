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

    # Limits.
    max_cohort_patients: int = Field(default=100_000, ge=1)
    max_epochs: int = Field(default=200, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    default_page_limit: int = Field(default=100, ge=1)
    max_page_limit: int = Field(default=500, ge=1)
    cohort_shard_size: int = Field(default=1000, ge=1)
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    # A running job whose heartbeat is older than this may be claimed again (the worker died).
    job_stale_after_seconds: int = Field(default=600, ge=1)
    export_chunk_rows: int = Field(default=500, ge=1)

    # Workers (worker/; the API ignores these).
    # Patients a worker generates (and stores) at a time within a shard (None: the worker's default).
    generation_batch_size: int | None = Field(default=None, ge=1)
    # Jobs a Celery pool child runs before it is replaced: 1, a fresh process per job (what a job
    # leaked, GPU memory included, goes back); 0 never replaces it (saves a CUDA start-up per shard).
    worker_max_tasks_per_child: int = Field(default=1, ge=0)
    # torch device of the jobs: cpu, cuda, cuda:N or mps; None (unset, empty or "auto"): cuda when
    # torch sees one, else cpu.
    device: str | None = Field(default=None, pattern=r"^(?:cpu|cuda(?::[0-9]+)?|mps)$")

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
