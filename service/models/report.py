"""The evaluation report of a cohort: a job (the evaluation) and its result, JSON and HTML."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from promptehr.service.models.base import Base, JobMixin, JSONType, TenantMixin, new_id


class Report(TenantMixin, JobMixin, Base):
    __tablename__ = "reports"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    cohort_id: Mapped[str] = mapped_column(sa.ForeignKey("cohorts.id", ondelete="CASCADE"), unique=True)
    content: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    html: Mapped[str | None] = mapped_column(sa.Text)
