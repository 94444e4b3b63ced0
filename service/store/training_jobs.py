"""Training jobs (kind "train"): created queued, cancelled on request. What a worker does with one
is the job state machine's (service/store/lifecycle.py)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from promptehr.service.models import TrainingJob
from promptehr.service.models.base import JobStatus, utcnow
from promptehr.service.store.base import get_owned, page, run_update, start_write
from promptehr.service.store.quotas import QuotaLimits, enforce_quota


def create_training_job(
    session: Session,
    *,
    dataset_id: str,
    preset: str,
    mode: str,
    epochs: int,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    tenant: str | None = None,
    quota: QuotaLimits | None = None,
) -> TrainingJob:
    """`tenant`: who owns the job; `quota`: its tenant's limits (QuotaExceeded: nothing written)."""
    start_write(session)
    job = TrainingJob(
        tenant=tenant,
        dataset_id=dataset_id,
        preset=preset,
        mode=mode,
        epochs=epochs,
        seed=seed,
        options=options or {},
        status=JobStatus.queued.value,
        progress={"done": 0, "total": epochs, "unit": "epochs"},
    )
    session.add(job)
    session.flush()
    enforce_quota(session, tenant, quota, jobs=1)
    session.commit()
    return job


def get_training_job(session: Session, job_id: str, *, tenant: str | None = None) -> TrainingJob | None:
    return get_owned(session, TrainingJob, job_id, tenant)


def list_training_jobs(
    session: Session, *, limit: int, after: tuple[datetime, str] | None = None, tenant: str | None = None
) -> list[TrainingJob]:
    return page(session, TrainingJob, limit=limit, after=after, tenant=tenant)


def request_cancel_training_job(session: Session, job_id: str) -> TrainingJob | None:
    """Ask a training job to stop. A queued job is cancelled at once; a running one gets
    cancel_requested and its worker stops at its next check. Finished jobs are left as they are."""
    start_write(session)
    now = utcnow()
    run_update(
        session,
        sa.update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status == JobStatus.queued.value)
        .values(status=JobStatus.cancelled.value, cancel_requested=True, finished_at=now),
    )
    run_update(
        session,
        sa.update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status == JobStatus.running.value)
        .values(cancel_requested=True),
    )
    session.commit()
    return session.get(TrainingJob, job_id)
