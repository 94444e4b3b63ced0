"""A requested synthetic cohort: its spec, seed, status, and the bookkeeping of its shards.

A cohort of `n_patients` is generated in `n_shards` shards of `shard_size` patients (the last one
shorter); each shard is a job of its own (`CohortShard`). `shards_done` counts shards that have
succeeded; it is only ever incremented by the call that flips a shard from running to succeeded, so
exactly one call sees it reach `n_shards` and queues the evaluation (see service/store/job_kinds.py).
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from promptehr.service.models.base import Base, JobMixin, JSONType, TenantMixin, new_id


class Cohort(TenantMixin, JobMixin, Base):
    __tablename__ = "cohorts"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(sa.ForeignKey("models.id"), index=True)
    n_patients: Mapped[int] = mapped_column(sa.Integer)
    seed: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # The request as validated: age, sex, required_codes, sampling.
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    shard_size: Mapped[int] = mapped_column(sa.Integer)
    n_shards: Mapped[int] = mapped_column(sa.Integer)
    shards_done: Mapped[int] = mapped_column(sa.Integer, default=0)
    # Set when the report exists (reports.cohort_id points back here).
    report_id: Mapped[str | None] = mapped_column(sa.String(36))
