"""A trained model: where its checkpoint is, the digest of its manifest, its config and metrics."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from promptehr.service.models.base import Base, JSONType, TenantMixin, UTCDateTime, new_id, utcnow


class Model(TenantMixin, Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(sa.String(200))
    dataset_id: Mapped[str] = mapped_column(sa.ForeignKey("datasets.id"), index=True)
    training_job_id: Mapped[str | None] = mapped_column(sa.ForeignKey("training_jobs.id"), unique=True)
    checkpoint_path: Mapped[str] = mapped_column(sa.Text)
    # sha256 of the checkpoint's manifest file: a worker refuses a checkpoint that does not match.
    manifest_sha256: Mapped[str] = mapped_column(sa.String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
