"""Training jobs: create (queued and enqueued), read, list, cancel."""
from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request

from promptehr.service import jobs, store
from promptehr.service.deps import ApiKeyDep, SessionDep, SettingsDep, TenantDep
from promptehr.service.idempotency import idempotent_create
from promptehr.service.links import link_for
from promptehr.service.models.base import TERMINAL_STATUSES, JobStatus
from promptehr.service.pagination import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_time_cursor,
    effective_limit,
    time_page,
)
from promptehr.service.problems import Problem, field_error, validation_problem
from promptehr.service.quotas import quota_limits
from promptehr.service.schemas.common import problem_responses
from promptehr.service.schemas.training_jobs import TrainingJobCreate, TrainingJobPublic

router = APIRouter(prefix="/training-jobs", tags=["training jobs"])


def to_public(job) -> dict:
    return TrainingJobPublic.model_validate(job).model_dump(mode="json")


def enqueue_or_fail(session, settings, kind: str, job_id: str) -> None:
    """Enqueue; when the broker is down, fail the job and answer 503 (the row says why; a failed shard
    fails its cohort, whose other shards are cancelled: service/store/lifecycle.py)."""
    try:
        jobs.enqueue(kind, job_id, settings)
    except jobs.EnqueueError as e:
        store.mark_failed(session, kind, job_id, str(e))
        raise Problem(503, "The job queue is not reachable; try again later.", type="queue-unavailable") from None


def check_devices(session, settings, devices: int) -> None:
    """422 naming body.devices when no live worker of this API's queue offers `devices` (worker/presence.py)."""
    queue = store.jobs_queue(settings)
    most = store.most_live_devices(session, queue, stale_after=timedelta(seconds=settings.job_stale_after_seconds))
    if most < devices:
        offered = f"the most a live worker offers is {most}" if most else "no worker is live"
        raise validation_problem([field_error(["body", "devices"], f"no live worker of queue {queue!r} has {devices} devices: {offered}")])


@router.post(
    "",
    status_code=202,
    response_model=TrainingJobPublic,
    summary="Start training a model",
    responses=problem_responses(401, 409, 413, 422, 429, 503),
)
def create_training_job(
    request: Request, body: TrainingJobCreate, session: SessionDep, settings: SettingsDep, api_key: ApiKeyDep
):
    if body.epochs > settings.max_epochs:
        raise validation_problem([field_error(["body", "epochs"], f"must be at most {settings.max_epochs}")])
    if body.devices > 1:  # one device is every worker's; more must be on a live worker, or the job would wait forever
        check_devices(session, settings, body.devices)

    def create():
        if store.get_dataset(session, body.dataset_id, tenant=api_key.tenant_filter) is None:
            raise validation_problem([field_error(["body", "dataset_id"], "no such dataset")])
        job = store.create_training_job(
            session, dataset_id=body.dataset_id, preset=body.preset, mode=body.mode, epochs=body.epochs,
            seed=body.seed, options=body.options(), tenant=api_key.tenant, quota=quota_limits(settings),
        )
        enqueue_or_fail(session, settings, "train", job.id)
        job = store.get_training_job(session, job.id)
        return 202, to_public(job), link_for(request, "get_training_job", job_id=job.id)

    return idempotent_create(request, session, settings, api_key, body, create)


@router.get("", response_model=Page[TrainingJobPublic], summary="List training jobs", responses=problem_responses(401, 422))
def list_training_jobs(
    request: Request, session: SessionDep, settings: SettingsDep, tenant: TenantDep,
    limit: LimitQuery = None, cursor: CursorQuery = None,
):
    n = effective_limit(limit, settings)
    rows = store.list_training_jobs(session, limit=n + 1, after=decode_time_cursor(cursor), tenant=tenant)
    return time_page(request, rows, n, to_public)


@router.get("/{job_id}", response_model=TrainingJobPublic, summary="A training job", responses=problem_responses(401, 404))
def get_training_job(job_id: str, session: SessionDep, tenant: TenantDep):
    job = store.get_training_job(session, job_id, tenant=tenant)
    if job is None:
        raise Problem(404, f"No training job {job_id}.", type="not-found")
    return to_public(job)


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=TrainingJobPublic,
    summary="Cancel a training job",
    description="A queued job is cancelled at once; a running one stops at its worker's next check "
    "(status stays `running` with `cancel_requested` true until then). A finished job answers 409.",
    responses=problem_responses(401, 404, 409),
)
def cancel_training_job(job_id: str, session: SessionDep, tenant: TenantDep):
    job = store.get_training_job(session, job_id, tenant=tenant)
    if job is None:
        raise Problem(404, f"No training job {job_id}.", type="not-found")
    if job.status in TERMINAL_STATUSES:  # cancelled too: cancelling twice is a 409, as documented
        raise Problem(409, f"The training job has finished ({job.status}).", type="job-finished")
    job = store.request_cancel_training_job(session, job_id)
    if job.status in (JobStatus.succeeded.value, JobStatus.failed.value):  # it finished meanwhile
        raise Problem(409, f"The training job has finished ({job.status}).", type="job-finished")
    return to_public(job)
