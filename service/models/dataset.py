"""A registered dataset: a folder or file under the data root, its format and its statistics."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from promptehr.service.models.base import Base, JSONType, TenantMixin, UTCDateTime, new_id, utcnow


class Dataset(TenantMixin, Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(sa.String(200))
    format: Mapped[str] = mapped_column(sa.String(16))
    # Relative to the data root (settings.data_root), as registered.
    path: Mapped[str] = mapped_column(sa.Text)
    stats: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
