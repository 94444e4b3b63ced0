"""A generated patient of a cohort, at its index. (cohort_id, index) is the key, so a redelivered shard
cannot add a patient twice."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from promptehr.service.models.base import Base, JSONType


class CohortPatient(Base):
    __tablename__ = "cohort_patients"

    cohort_id: Mapped[str] = mapped_column(sa.ForeignKey("cohorts.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    # Patient.to_dict(): {"patient_id", "age", "sex", "visits": [[code, ...], ...]}
    patient: Mapped[dict[str, Any]] = mapped_column(JSONType)
