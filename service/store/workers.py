"""The workers' presence (models/worker.py): what each process that takes jobs publishes, and what
POST /training-jobs asks of it (the most devices a live worker of a queue offers)."""
from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from promptehr.service.models import Worker
from promptehr.service.models.base import utcnow
from promptehr.service.store.base import start_write

INSERT_BY_DIALECT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def publish_worker(session: Session, worker_id: str, *, hostname: str, queue: str, device_kind: str,
                   device_count: int, now: datetime | None = None) -> None:
    """Insert or refresh worker `worker_id` (at start and every sweep interval): one upsert, so two
    beats of one worker never race into two rows."""
    now = now or utcnow()
    start_write(session)
    insert = INSERT_BY_DIALECT[session.get_bind().dialect.name]
    values = {"hostname": hostname, "queue": queue, "device_kind": device_kind, "device_count": device_count,
              "last_seen": now}
    stmt = insert(Worker.__table__).values(id=worker_id, started_at=now, **values)
    session.execute(stmt.on_conflict_do_update(index_elements=[Worker.__table__.c.id], set_=values))
    session.commit()


def remove_worker(session: Session, worker_id: str) -> None:
    """A worker that stops says so (one that dies goes stale instead)."""
    start_write(session)
    session.execute(sa.delete(Worker).where(Worker.id == worker_id))
    session.commit()


def live_workers(session: Session, queue: str, *, stale_after: timedelta) -> list[Worker]:
    """The workers of `queue` seen within `stale_after` (the same window as a job's heartbeat), most
    devices first."""
    since = utcnow() - stale_after
    stmt = (sa.select(Worker).where(Worker.queue == queue, Worker.last_seen >= since)
            .order_by(Worker.device_count.desc(), Worker.id))
    return list(session.scalars(stmt))


def most_live_devices(session: Session, queue: str, *, stale_after: timedelta) -> int:
    """The most devices one live worker of `queue` offers (0: no live worker)."""
    live = live_workers(session, queue, stale_after=stale_after)
    return live[0].device_count if live else 0


EMBEDDED_QUEUE = "embedded"  # the queue name the runner inside `promptehr serve` publishes under


def jobs_queue(settings) -> str:
    """The queue this process's jobs go to: the Celery queue, or the embedded runner's."""
    return EMBEDDED_QUEUE if settings.jobs_run_in_process else settings.celery_queue
