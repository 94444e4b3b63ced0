"""Models: a trained checkpoint (path relative to the model root, manifest sha256), registered once
per training job (models.training_job_id is unique)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from promptehr.service.models import Cohort, Model, TrainingJob
from promptehr.service.store.base import get_owned, page, run_update, start_write
from promptehr.service.store.lifecycle import LIVE_COHORT, InUse


def create_model(
    session: Session,
    *,
    name: str,
    dataset_id: str,
    checkpoint_path: str,
    manifest_sha256: str,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    training_job_id: str | None = None,
    tenant: str | None = None,
) -> Model:
    start_write(session)
    model = Model(
        tenant=tenant,
        name=name,
        dataset_id=dataset_id,
        training_job_id=training_job_id,
        checkpoint_path=checkpoint_path,
        manifest_sha256=manifest_sha256,
        config=config or {},
        metrics=metrics or {},
    )
    session.add(model)
    session.commit()
    return model


def register_trained_model(session: Session, *, training_job_id: str, **fields: Any) -> Model:
    """create_model for a training job; when a concurrent attempt of the same job registered its model
    first (the unique training_job_id refuses a second), that model. The model belongs to the
    training job's tenant."""
    tenant = session.scalar(sa.select(TrainingJob.tenant).where(TrainingJob.id == training_job_id))
    try:
        return create_model(session, training_job_id=training_job_id, tenant=tenant, **fields)
    except IntegrityError:
        session.rollback()
        return get_model_of_training_job(session, training_job_id)


def get_model(session: Session, model_id: str, *, tenant: str | None = None) -> Model | None:
    return get_owned(session, Model, model_id, tenant)


def get_model_of_training_job(session: Session, training_job_id: str) -> Model | None:
    """The model a training job registered (an attempt that died before marking the job succeeded
    may have left one)."""
    return session.scalar(sa.select(Model).where(Model.training_job_id == training_job_id))


def list_models(session: Session, *, limit: int, after: tuple[datetime, str] | None = None,
                tenant: str | None = None) -> list[Model]:
    return page(session, Model, limit=limit, after=after, tenant=tenant)


def delete_model(session: Session, model_id: str) -> str | None:
    """Delete a model row; returns its checkpoint path (removing the files is the caller's: the store
    touches only the database), None when there is no such model. InUse while a cohort was generated
    from it (a finished one too: delete it first; a cohort's report needs its model) or its training
    job is still queued or running (it registers the model, then finishes)."""
    path = session.scalar(sa.select(Model.checkpoint_path).where(Model.id == model_id))
    if path is None:
        return None
    start_write(session)
    free = [~sa.exists().where(Cohort.model_id == Model.id),
            ~sa.exists().where(TrainingJob.id == Model.training_job_id, TrainingJob.status.in_(LIVE_COHORT))]
    try:
        deleted = run_update(session, sa.delete(Model).where(Model.id == model_id, *free))
        session.commit()
    except IntegrityError:  # PostgreSQL: a cohort of it was created meanwhile (its foreign key)
        session.rollback()
        deleted = 0
    if deleted == 1:
        return path
    session.rollback()
    n = session.scalar(sa.select(sa.func.count()).select_from(Cohort).where(Cohort.model_id == model_id))
    if n:
        raise InUse(f"{n} cohort(s) were generated from the model; delete them first (DELETE /cohorts/{{id}}).")
    if session.get(Model, model_id) is None:
        return None
    raise InUse("The model's training job is still running.")
