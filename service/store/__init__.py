"""Data access shared by the API and the worker. Every function takes a Session; every function that
changes something commits before it returns (so a worker's progress is visible at once) and begins
its transaction with the write on SQLite (base.start_write says why).

    base.py              how a write begins, UPDATE with a row count, keyset pages
    api_keys.py          create_api_key, get_api_key_by_hash (usable keys only), get_api_key, list_api_keys,
                         revoke_api_key
    quotas.py            a tenant's quotas (QuotaLimits, QuotaExceeded), checked by the creating functions
    idempotency_keys.py  reserve / save the answer / release an Idempotency-Key
    datasets.py          create_dataset, get_dataset, list_datasets, delete_dataset
    training_jobs.py     create_training_job, get/list, request_cancel_training_job
    workers.py           publish_worker, remove_worker, live_workers, most_live_devices (who offers what devices)
    models.py            create_model, register_trained_model, get/list, get_model_of_training_job, delete_model
    cohorts.py           create_cohort (and its shards), get/list, get_shard, cohort_progress, delete_cohort;
                         patients: insert_patients, list_patients, iter_patients, stored_prefix, count_patients
    reports.py           get_report, save_report, delete_report
    job_kinds.py         the job kinds: table, Celery task, what a claim and a success write
    lifecycle.py         the job state machine: claim_job, heartbeat, update_progress, is_cancel_requested,
                         mark_succeeded / mark_failed / mark_cancelled, get_job, live_jobs (the sweep's view),
                         request_cancel_cohort, cohort_in_use; InUse (a delete refused: 409)

Callers use `from service import store` and `store.<function>`: everything is re-exported here.
"""
from promptehr.service.store.api_keys import (
    create_api_key,
    get_api_key,
    get_api_key_by_hash,
    list_api_keys,
    revoke_api_key,
)
from promptehr.service.store.cohorts import (
    cohort_progress,
    count_patients,
    create_cohort,
    delete_cohort,
    get_cohort,
    get_shard,
    insert_patients,
    iter_patients,
    list_cohorts,
    list_patients,
    stored_prefix,
)
from promptehr.service.store.datasets import (
    create_dataset,
    delete_dataset,
    get_dataset,
    list_datasets,
)
from promptehr.service.store.idempotency_keys import (
    IN_PROGRESS,
    release_idempotency_key,
    reserve_idempotency_key,
    save_idempotent_response,
)
from promptehr.service.store.job_kinds import (
    JOB_KINDS,
    JobKind,
    UnknownJobKind,
    job_kind,
    kind_of_task,
    task_name,
)
from promptehr.service.store.lifecycle import (
    DEFAULT_STALE_AFTER,
    MAX_ERROR_CHARS,
    InUse,
    LiveJob,
    claim_job,
    cohort_in_use,
    get_job,
    heartbeat,
    is_cancel_requested,
    live_jobs,
    mark_cancelled,
    mark_failed,
    mark_succeeded,
    request_cancel_cohort,
    stopping_jobs,
    update_progress,
)
from promptehr.service.store.models import (
    create_model,
    delete_model,
    get_model,
    get_model_of_training_job,
    list_models,
    register_trained_model,
)
from promptehr.service.store.quotas import (
    QuotaExceeded,
    QuotaLimits,
    active_jobs,
    queued_patients,
)
from promptehr.service.store.reports import delete_report, get_report, save_report
from promptehr.service.store.training_jobs import (
    create_training_job,
    get_training_job,
    list_training_jobs,
    request_cancel_training_job,
)
from promptehr.service.store.workers import (
    EMBEDDED_QUEUE,
    jobs_queue,
    live_workers,
    most_live_devices,
    publish_worker,
    remove_worker,
)

__all__ = [
    "DEFAULT_STALE_AFTER",
    "EMBEDDED_QUEUE",
    "IN_PROGRESS",
    "JOB_KINDS",
    "MAX_ERROR_CHARS",
    "InUse",
    "JobKind",
    "LiveJob",
    "QuotaExceeded",
    "QuotaLimits",
    "UnknownJobKind",
    "active_jobs",
    "claim_job",
    "cohort_in_use",
    "cohort_progress",
    "count_patients",
    "create_api_key",
    "create_cohort",
    "create_dataset",
    "create_model",
    "create_training_job",
    "delete_cohort",
    "delete_dataset",
    "delete_model",
    "delete_report",
    "get_api_key",
    "get_api_key_by_hash",
    "get_cohort",
    "get_dataset",
    "get_job",
    "get_model",
    "get_model_of_training_job",
    "get_report",
    "get_shard",
    "get_training_job",
    "heartbeat",
    "insert_patients",
    "is_cancel_requested",
    "iter_patients",
    "job_kind",
    "jobs_queue",
    "kind_of_task",
    "list_api_keys",
    "list_cohorts",
    "list_datasets",
    "list_models",
    "list_patients",
    "list_training_jobs",
    "live_jobs",
    "live_workers",
    "mark_cancelled",
    "mark_failed",
    "mark_succeeded",
    "most_live_devices",
    "publish_worker",
    "queued_patients",
    "register_trained_model",
    "release_idempotency_key",
    "remove_worker",
    "request_cancel_cohort",
    "request_cancel_training_job",
    "reserve_idempotency_key",
    "revoke_api_key",
    "save_idempotent_response",
    "save_report",
    "stopping_jobs",
    "stored_prefix",
    "task_name",
    "update_progress",
]
