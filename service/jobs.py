"""Enqueueing jobs by task name. The service never imports worker/: it sends ids only.

With a broker (settings.celery_broker_url) a message goes to Celery:
    send_task("promptehr.train" | "promptehr.generate" | "promptehr.evaluate", args=[job_id], queue="gpu")
(the task of each job kind: service/store/job_kinds.py)
Without one (the embedded default), the id goes to the in-process runner registered with
`set_local_runner(runner)`: `runner(task_name, job_id)` must return quickly (run the task on a thread
of its own) and runs the same task code as the Celery worker. `promptehr serve` registers it. With no
runner registered the job stays queued and a warning is logged.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import lru_cache

from promptehr.service.settings import Settings, get_settings
from promptehr.service.store.job_kinds import task_name

log = logging.getLogger(__name__)

LocalRunner = Callable[[str, str], None]
_local_runner: LocalRunner | None = None
_lock = threading.Lock()


class EnqueueError(RuntimeError):
    """The job could not be handed to the broker."""


def set_local_runner(runner: LocalRunner | None) -> None:
    """Register (or, with None, remove) the in-process runner used when no broker is configured."""
    global _local_runner
    with _lock:
        _local_runner = runner


def get_local_runner() -> LocalRunner | None:
    return _local_runner


@lru_cache(maxsize=4)
def celery_app(broker_url: str):
    """A Celery app used only to send messages (built on first use, one per broker URL)."""
    # Imported here, not at the top: `from celery import Celery` costs 70-100 ms, which the embedded
    # default (no broker) never needs.
    from celery import Celery

    app = Celery("promptehr-api", broker=broker_url)
    # Fail fast when the broker is down: the request answers 503 and the client retries.
    app.conf.update(
        broker_connection_retry_on_startup=False,
        task_default_queue="gpu",
        broker_transport_options={"max_retries": 0},
    )
    return app


def enqueue(kind: str, job_id: str, settings: Settings | None = None) -> None:
    """Hand job `job_id` of `kind` ("train", "generate", "evaluate") to whoever runs jobs (the task
    name is the kind's, service/store/job_kinds.py; an unknown kind is a ValueError)."""
    settings = settings or get_settings()
    name = task_name(kind)
    if settings.celery_broker_url:
        try:
            celery_app(settings.celery_broker_url).send_task(
                name, args=[job_id], queue=settings.celery_queue, retry=False
            )
        except Exception as e:  # kombu raises several kinds of connection errors
            raise EnqueueError(f"could not reach the job broker: {type(e).__name__}") from e
        return
    runner = _local_runner
    if runner is None:
        log.warning("no job runner registered: %s %s stays queued", name, job_id)
        return
    runner(name, job_id)


def broker_ping(settings: Settings, timeout: float = 2.0) -> None:
    """Raise when the configured broker does not answer."""
    conn = celery_app(settings.celery_broker_url).connection_for_write()
    try:
        conn.ensure_connection(max_retries=0, timeout=timeout)
    finally:
        conn.release()
