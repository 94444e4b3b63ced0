"""Models: a trained checkpoint (path relative to the model root, manifest sha256), registered once
per training job (models.training_job_id is unique)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.models import Model
from service.store.base import page, start_write


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
) -> Model:
    start_write(session)
    model = Model(
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
    first (the unique training_job_id refuses a second), that model."""
    try:
        return create_model(session, training_job_id=training_job_id, **fields)
    except IntegrityError:
        session.rollback()
        return get_model_of_training_job(session, training_job_id)


def get_model(session: Session, model_id: str) -> Model | None:
    return session.get(Model, model_id)


def get_model_of_training_job(session: Session, training_job_id: str) -> Model | None:
    """The model a training job registered (an attempt that died before marking the job succeeded
    may have left one)."""
    return session.scalar(sa.select(Model).where(Model.training_job_id == training_job_id))


def list_models(session: Session, *, limit: int, after: tuple[datetime, str] | None = None) -> list[Model]:
    return page(session, Model, limit=limit, after=after)
