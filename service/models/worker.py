"""A worker that takes jobs, as it publishes itself: where it runs, which queue it takes jobs from, and
the devices it offers a training job. POST /training-jobs reads the live ones (seen within
job_stale_after_seconds) to refuse a `devices` that no worker has (worker/presence.py writes them)."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from promptehr.service.models.base import Base, UTCDateTime, utcnow


class Worker(Base):
    __tablename__ = "workers"

    # host:pid:start of the process that takes the jobs (the Celery master, or `promptehr serve`)
    id: Mapped[str] = mapped_column(sa.String(300), primary_key=True)
    hostname: Mapped[str] = mapped_column(sa.String(255))
    # the Celery queue it consumes, or "embedded" for the runner inside `promptehr serve`
    queue: Mapped[str] = mapped_column(sa.String(200), index=True)
    device_kind: Mapped[str] = mapped_column(sa.String(16))  # cpu | cuda | mps
    device_count: Mapped[int] = mapped_column(sa.Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
