"""A training job: which dataset, which preset and options; its status; the model it produced."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from promptehr.service.models.base import Base, JobMixin, JSONType, TenantMixin, new_id


class TrainingJob(TenantMixin, JobMixin, Base):
    __tablename__ = "training_jobs"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(sa.ForeignKey("datasets.id"), index=True)
    preset: Mapped[str] = mapped_column(sa.String(16))
    mode: Mapped[str] = mapped_column(sa.String(16))
    epochs: Mapped[int] = mapped_column(sa.Integer)
    seed: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # Further training options as requested (batch_size, learning_rate, ...).
    options: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Set when the job succeeds (models.training_job_id points back here).
    model_id: Mapped[str | None] = mapped_column(sa.String(36))
