"""Datasets: a registered file or folder under the data root, with its statistics."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from promptehr.service.models import Dataset, Model, TrainingJob
from promptehr.service.models.base import TERMINAL_STATUSES
from promptehr.service.store.base import get_owned, page, run_update, start_write
from promptehr.service.store.lifecycle import LIVE_COHORT, InUse


def create_dataset(session: Session, *, name: str, format: str, path: str, stats: dict[str, Any],
                   code_system: str | None = None, tenant: str | None = None) -> Dataset:
    """`code_system` (icd9 | icd10, POST /datasets): the system the data set is read in, where its
    sources leave it open. Kept in stats, which it shaped (no column of its own, so no migration);
    absent when not given, so such rows are as before."""
    start_write(session)
    if code_system is not None:
        stats = {**stats, "code_system": code_system}
    dataset = Dataset(name=name, format=format, path=path, stats=stats, tenant=tenant)
    session.add(dataset)
    session.commit()
    return dataset


def get_dataset(session: Session, dataset_id: str, *, tenant: str | None = None) -> Dataset | None:
    """`tenant` (here and in every get/list of the store): only that tenant's row; None: any."""
    return get_owned(session, Dataset, dataset_id, tenant)


def list_datasets(session: Session, *, limit: int, after: tuple[datetime, str] | None = None,
                  tenant: str | None = None) -> list[Dataset]:
    return page(session, Dataset, limit=limit, after=after, tenant=tenant)


def delete_dataset(session: Session, dataset_id: str) -> bool:
    """Delete a dataset's registration (never its files: they are the user's) and the finished
    training jobs that used it (their history: no model came of them, or it was deleted). False: no
    such dataset. InUse while a model trained on it exists (its cohorts' reports read the dataset)
    or a training job on it is queued or running."""
    start_write(session)
    free = [~sa.exists().where(Model.dataset_id == Dataset.id),
            ~sa.exists().where(TrainingJob.dataset_id == Dataset.id, TrainingJob.status.in_(LIVE_COHORT))]
    try:
        # The first write takes the row (a no-op UPDATE), and only while nothing uses it.
        taken = run_update(session, sa.update(Dataset).where(Dataset.id == dataset_id, *free).values(name=Dataset.name))
        if taken == 1:
            run_update(session, sa.delete(TrainingJob).where(
                TrainingJob.dataset_id == dataset_id, TrainingJob.status.in_(TERMINAL_STATUSES)))
            run_update(session, sa.delete(Dataset).where(Dataset.id == dataset_id))
            session.commit()
            return True
    except IntegrityError:  # PostgreSQL: a training job on it was created meanwhile (its foreign key)
        pass
    session.rollback()
    if session.get(Dataset, dataset_id) is None:
        return False
    n = session.scalar(sa.select(sa.func.count()).select_from(Model).where(Model.dataset_id == dataset_id))
    if n:
        raise InUse(f"{n} model(s) were trained on the dataset; delete them first (DELETE /models/{{id}}).")
    raise InUse("A training job on the dataset is still queued or running; cancel it first.")
