"""Datasets: a registered file or folder under the data root, with its statistics."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from service.models import Dataset
from service.store.base import page, start_write


def create_dataset(session: Session, *, name: str, format: str, path: str, stats: dict[str, Any],
                   code_system: str | None = None) -> Dataset:
    """`code_system` (icd9 | icd10, POST /datasets): the system the data set is read in, where its
    sources leave it open. Kept in stats, which it shaped (no column of its own, so no migration);
    absent when not given, so such rows are as before."""
    start_write(session)
    if code_system is not None:
        stats = {**stats, "code_system": code_system}
    dataset = Dataset(name=name, format=format, path=path, stats=stats)
    session.add(dataset)
    session.commit()
    return dataset


def get_dataset(session: Session, dataset_id: str) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def list_datasets(session: Session, *, limit: int, after: tuple[datetime, str] | None = None) -> list[Dataset]:
    return page(session, Dataset, limit=limit, after=after)

